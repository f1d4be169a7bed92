"""`agentdb rollback`: plan first, confirmation, archive instead of loss, --purge, --dry-run, bad targets."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import time

import psycopg
import pytest
from conftest import BIN, run_cli, schema_dump
from psycopg import sql

import agentdb
from agentdb.runtime.locks import RUN_LOCK_KEY


def _fill(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO users (email, display_name) VALUES ('ann@example.org', 'Ann'), "
                     "('bob@example.org', 'Bob')")
        conn.execute("INSERT INTO artists (user_id, name) SELECT id, display_name FROM users")


def _at(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version_num FROM agentdb.alembic_version").fetchone()
        return row[0] if row else None


def _head() -> str:
    heads = agentdb.heads()
    return str(heads[0]["revision"])


def _state(url: str) -> tuple[str | None, dict[str, list[tuple[object, ...]]]]:
    """The revision and every row of every table (application, agentdb's own, archive): what a refusal must keep."""
    with psycopg.connect(url) as conn:
        tables = [(str(r[0]), str(r[1])) for r in conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('public', 'agentdb', 'agentdb_archive') AND c.relkind IN ('r', 'p') ORDER BY 1, 2")]
        rows = {
            f"{schema}.{table}": conn.execute(
                sql.SQL("SELECT t.* FROM {} AS t ORDER BY t::text").format(sql.Identifier(schema, table))
            ).fetchall()
            for schema, table in tables
        }
    return _at(url), rows


def test_rollback_to_base_with_yes_archives_and_upgrade_brings_every_row_back(migrated_url: str) -> None:
    _fill(migrated_url)
    with psycopg.connect(migrated_url) as conn:
        users = conn.execute("SELECT * FROM users ORDER BY id").fetchall()
        artists = conn.execute("SELECT * FROM artists ORDER BY id").fetchall()
    result = run_cli("--database-url", migrated_url, "rollback", "base", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["applied"] is True
    archived = {e["archived"]: e["rows"] for step in data["plan"]["steps"] for e in step["archive"]
                if "archived" in e}
    assert archived["public.users"] == 2 and archived["public.artists"] == 2
    assert _at(migrated_url) is None

    assert run_cli("--database-url", migrated_url, "upgrade").returncode == 0
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT * FROM users ORDER BY id").fetchall() == users
        assert conn.execute("SELECT * FROM artists ORDER BY id").fetchall() == artists


def test_rollback_without_a_terminal_or_yes_refuses_and_changes_nothing(migrated_url: str) -> None:
    _fill(migrated_url)
    before, state = schema_dump(migrated_url), _state(migrated_url)
    result = run_cli("--database-url", migrated_url, "rollback")
    assert result.returncode == 1
    assert "rollback needs confirmation" in result.stderr and "--yes" in result.stderr
    assert "rollback plan" in result.stdout
    assert _state(migrated_url) == state and state[0] == _head()
    assert schema_dump(migrated_url) == before


def test_rollback_asks_and_a_no_changes_nothing_a_yes_rolls_back(migrated_url: str) -> None:
    def answer(text: str) -> tuple[int, str]:
        leader, follower = pty.openpty()
        proc = subprocess.Popen([str(BIN / "agentdb"), "--database-url", migrated_url, "rollback"],
                                stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.close(follower)
        time.sleep(0.2)
        os.write(leader, text.encode())
        out, errors = proc.communicate(timeout=120)
        os.close(leader)
        return proc.returncode, out + errors

    code, output = answer("n\n")
    assert code == 1 and "nothing changed" in output
    assert _at(migrated_url) == _head()
    code, output = answer("y\n")
    assert code == 0, output
    assert _at(migrated_url) != _head()


def test_rollback_dry_run_shows_the_plan_and_keeps_everything(migrated_url: str) -> None:
    _fill(migrated_url)
    before = schema_dump(migrated_url)
    one_too_many = len(agentdb.list_migrations(database_url=migrated_url)) + 1  # the database is at head
    result = run_cli("--database-url", migrated_url, "rollback", "--steps", str(one_too_many), "--dry-run")
    assert result.returncode == 2, result.stdout + result.stderr  # past the first revision
    result = run_cli("--database-url", migrated_url, "rollback", "base", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["applied"] is False and data["plan"]["rolled_back"] is True
    assert schema_dump(migrated_url) == before
    assert _at(migrated_url) == _head()
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM agentdb.archived_tables").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'agentdb_archive'").fetchone() == (0,)


def test_rollback_with_purge_deletes_rows_for_real(migrated_url: str) -> None:
    _fill(migrated_url)
    result = run_cli("--database-url", migrated_url, "rollback", "base", "--purge", "--yes")
    assert result.returncode == 0, result.stderr
    assert "purge 2 rows of public.users" in result.stdout
    assert run_cli("--database-url", migrated_url, "upgrade").returncode == 0
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_rollback_past_the_first_revision_or_to_an_unknown_one_is_refused(migrated_url: str) -> None:
    _fill(migrated_url)
    state = _state(migrated_url)
    assert state[0] == _head() and state[1]["public.users"]
    one_too_many = len(agentdb.list_migrations(database_url=migrated_url)) + 1
    too_far = run_cli("--database-url", migrated_url, "rollback", "--steps", str(one_too_many), "--yes")
    assert too_far.returncode == 2
    assert "the database is at" in too_far.stderr and "was not changed" in too_far.stderr
    assert _state(migrated_url) == state
    unknown = run_cli("--database-url", migrated_url, "rollback", "xyz", "--yes")
    assert unknown.returncode == 2 and "unknown revision 'xyz'" in unknown.stderr
    assert _state(migrated_url) == state
    both = run_cli("--database-url", migrated_url, "rollback", "001", "--steps", "1", "--yes")
    assert both.returncode == 1 and "not both" in both.stderr
    assert _state(migrated_url) == state


def test_rollback_while_another_run_holds_the_lock_is_refused(migrated_url: str) -> None:
    _fill(migrated_url)
    state = _state(migrated_url)
    with psycopg.connect(migrated_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (RUN_LOCK_KEY,))
        result = run_cli("--database-url", migrated_url, "rollback", "--yes", "--run-lock-timeout", "1s")
    assert result.returncode == 4
    assert "another migration run holds the agentdb run lock" in result.stderr
    assert _state(migrated_url) == state and state[0] == _head()


def test_rollback_refuses_when_the_database_moved_after_the_plan(migrated_url: str) -> None:
    _fill(migrated_url)
    plan = agentdb.plan_rollback(database_url=migrated_url)
    agentdb.downgrade("-1", database_url=migrated_url)
    moved = _state(migrated_url)
    assert moved[0] not in (None, _head()) and moved[1]["public.users"]

    with pytest.raises(agentdb.AgentdbError, match="moved since the rollback was planned"):
        agentdb.rollback(database_url=migrated_url, expect_at=plan.revisions_before)

    assert _state(migrated_url) == moved, "the refused rollback changed the database"


def _layer_rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    tables = ("users", "consent", "analytics", "audit_log", "event_logs")
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}


def test_006_as_a_script_rolls_the_analytics_audit_security_layer_back_and_loses_nothing(migrated_url: str) -> None:
    from pathlib import Path

    import agentdb

    script = Path(agentdb.__file__).parent / "migrations" / "versions" / "006_rollback.py"
    _fill(migrated_url)
    with psycopg.connect(migrated_url) as conn:
        conn.execute("INSERT INTO consent (user_id, purpose, granted, policy_version, source) "
                     "SELECT id, 'analytics', false, '2026-01', 'settings' FROM users")
        conn.execute("INSERT INTO analytics (user_id, event_type) SELECT id, 'track.play' FROM users")
        conn.execute("INSERT INTO event_logs (source, event_type) VALUES ('api', 'app.start')")
    before = _layer_rows(migrated_url)
    assert before["audit_log"], "the audit triggers wrote rows"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "python"), str(script), "--database-url", migrated_url, *args],
                              capture_output=True, text=True, timeout=300)

    dry = run("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "archive 2 rows of public.consent" in dry.stdout and _at(migrated_url) == _head()
    refused = run()
    assert refused.returncode == 1 and "--yes" in refused.stderr and _at(migrated_url) == _head()

    done = run("--yes")
    assert done.returncode == 0, done.stderr
    assert _at(migrated_url) == "004"
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT to_regclass('public.consent')").fetchone() == (None,)
    again = run("--yes")
    assert again.returncode == 0 and "nothing to roll back" in again.stdout

    applied = run("--apply")
    assert applied.returncode == 0, applied.stderr
    assert _at(migrated_url) == "006"
    assert run_cli("--database-url", migrated_url, "upgrade").returncode == 0
    assert _layer_rows(migrated_url) == before, "every row of the layer came back, and no audit row was added"
    with psycopg.connect(migrated_url) as conn:
        kept = conn.execute("SELECT table_name, row_count, restored_rows FROM public.rollback_archive "
                            "WHERE table_name = 'public.consent'").fetchall()
    assert kept == [("public.consent", 2, 2)]


def _all_rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1")]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables}


def test_rolling_005_back_and_forward_on_seed_demo_data_keeps_every_row(migrated_url: str) -> None:
    from agentdb import seed_demo

    seed_demo("small", database_url=migrated_url)
    before = _all_rows(migrated_url)
    assert sum(len(rows) for rows in before.values()) > 5000
    assert all(before[t] for t in ("analytics", "audit_log", "consent", "event_logs", "users"))

    report = agentdb.rollback("004", database_url=migrated_url)
    assert [s.revision for s in report.steps][-1] == "005"
    assert "analytics" not in _all_rows(migrated_url)
    agentdb.upgrade("head", database_url=migrated_url)
    after = _all_rows(migrated_url)
    assert after.keys() == before.keys()
    for table, rows in before.items():
        assert after[table] == rows, f"{table} changed across the rollback"
