"""Dry runs on a real database: reported locks and rewrites, nothing persists, autocommit refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from _fixture_migrations import migrations_copy, write_migration
from conftest import fixture_migration, run_cli, schema_dump

import agentdb
from agentdb.errors import ChecksumMismatch, NotTransactional
from agentdb.runtime.dryrun import DryRunReport


def _versions(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('agentdb.alembic_version') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return []
        return [r[0] for r in conn.execute("SELECT version_num FROM agentdb.alembic_version")]


def _history_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('agentdb.migration_runs') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return -1
        row = conn.execute("SELECT count(*) FROM agentdb.migration_runs").fetchone()
        return int(row[0]) if row else 0


@pytest.fixture
def altering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """001, then 002 that rewrites an existing table, then 003 that indexes one without rewriting."""
    location = migrations_copy(tmp_path)
    write_migration(
        location, "002_widen_popularity.py", revision="002", down_revision="001",
        upgrade="op.execute('ALTER TABLE artists ALTER COLUMN popularity TYPE integer')",
        downgrade="op.execute('ALTER TABLE artists ALTER COLUMN popularity TYPE smallint')",
    )
    write_migration(
        location, "003_index_country.py", revision="003", down_revision="002",
        upgrade="op.create_index('users_country_idx', 'users', ['country'])",
        downgrade="op.drop_index('users_country_idx', table_name='users')",
    )
    monkeypatch.setenv("AGENTDB_SCRIPT_LOCATION", str(location))
    return location


def test_dry_run_of_upgrade_leaves_schema_version_and_history_unchanged(database_url: str) -> None:
    agentdb.upgrade("001", database_url=database_url)
    dump_before, history_before = schema_dump(database_url), _history_rows(database_url)

    report = agentdb.dry_run("head", database_url=database_url)

    assert report.rolled_back
    assert report.revisions_before == ("001",)
    assert [s.plan.revision for s in report.steps] == list(agentdb.current(database_url=database_url).pending)
    assert all(s.observed.statements for s in report.steps)
    assert schema_dump(database_url) == dump_before
    assert _versions(database_url) == ["001"]
    assert _history_rows(database_url) == history_before


def test_dry_run_on_an_empty_database_leaves_no_trace_not_even_agentdb_schema(database_url: str) -> None:
    report = agentdb.dry_run("001", database_url=database_url)

    assert [s.plan.revision for s in report.steps] == ["001"]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'agentdb'").fetchone()
        assert row is not None and row[0] == 0
        row = conn.execute("SELECT to_regclass('public.users')").fetchone()
        assert row is not None and row[0] is None


def test_dry_run_reports_access_exclusive_locks_on_the_tables_001_creates(database_url: str) -> None:
    report = agentdb.dry_run("001", database_url=database_url)

    (step,) = report.steps
    tables = {(lock.relation, lock.mode) for lock in step.observed.locks if lock.kind == "table"}
    assert ("public.users", "AccessExclusiveLock") in tables
    assert ("public.artists", "AccessExclusiveLock") in tables
    assert all(lock.created for lock in step.observed.locks if lock.relation in {"public.users", "public.artists"})
    assert step.observed.rewritten == ()
    assert any(s.startswith("CREATE TABLE users") for s in step.observed.statements)


def test_dry_run_reports_lock_mode_and_rewrite_of_an_existing_table(database_url: str, altering: Path) -> None:
    agentdb.upgrade("001", database_url=database_url)
    dump_before = schema_dump(database_url)

    report = agentdb.dry_run("head", database_url=database_url)

    rewrite, index = report.steps
    assert rewrite.plan.revision == "002"
    assert ("public.artists", "AccessExclusiveLock", False) in {
        (lock.relation, lock.mode, lock.created) for lock in rewrite.observed.locks
    }
    assert rewrite.observed.rewritten == ("public.artists",)
    assert index.plan.revision == "003"
    assert ("public.users", "ShareLock") in {(lock.relation, lock.mode) for lock in index.observed.locks}
    assert "AccessExclusiveLock" not in {lk.mode for lk in index.observed.locks if lk.relation == "public.users"}
    assert index.observed.rewritten == ()
    assert schema_dump(database_url) == dump_before
    assert _versions(database_url) == ["001"]


def test_dry_run_of_downgrade_reports_drops_and_changes_nothing(database_url: str, altering: Path) -> None:
    agentdb.upgrade("head", database_url=database_url)
    dump_before, history_before = schema_dump(database_url), _history_rows(database_url)

    report = agentdb.dry_run("001", direction="downgrade", database_url=database_url)

    assert [(s.plan.revision, s.plan.direction) for s in report.steps] == [("003", "downgrade"), ("002", "downgrade")]
    dropped = {lock.relation for lock in report.steps[0].observed.locks if lock.dropped}
    assert "public.users_country_idx" in dropped
    assert report.steps[1].observed.rewritten == ("public.artists",)
    assert schema_dump(database_url) == dump_before
    assert _versions(database_url) == ["003"]
    assert _history_rows(database_url) == history_before


def _autocommit_fixture(location: Path, *, hidden: bool) -> None:
    concurrently = (
        "op.create_index('users_country_idx', 'users', ['country'], postgresql_concurrently=True)"
    )
    if hidden:  # reached through a helper: the source scan of upgrade() cannot see it
        upgrade = f"""
            op.execute('CREATE TABLE dry_marker (id bigint)')
            with _outside_transaction():
                {concurrently}
        """
        extra = "\n\ndef _outside_transaction():\n    return op.get_context().autocommit_block()\n"
    else:
        upgrade = f"""
            op.execute('CREATE TABLE dry_marker (id bigint)')
            with op.get_context().autocommit_block():
                {concurrently}
        """
        extra = ""
    write_migration(location, "002_index_concurrently.py", revision="002", down_revision="001",
                    upgrade=upgrade, downgrade="op.drop_index('users_country_idx', table_name='users')", extra=extra)


# A sequence survives a rollback: nextval() in a migration the dry run runs stays visible after it.
PROBE = "dry_run_probe"
ADVANCE_PROBE = f"op.execute(\"SELECT nextval('{PROBE}')\")"


def _create_probe(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE SEQUENCE {PROBE}")


def _probe_untouched(url: str) -> bool:
    """True while no nextval() has been called on the probe sequence, even by a transaction rolled back since."""
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT is_called FROM {PROBE}").fetchone()
    assert row is not None
    return not row[0]


def test_the_probe_sees_a_rolled_back_nextval(database_url: str) -> None:
    """The probe the tests below rely on: a rolled back nextval() still shows."""
    _create_probe(database_url)
    assert _probe_untouched(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute(f"SELECT nextval('{PROBE}')")
        conn.rollback()
    assert not _probe_untouched(database_url)


def test_dry_run_refuses_autocommit_block_migration_before_running_anything(
    database_url: str, script_location: Callable[..., Path]
) -> None:
    script_location({
        "002_advance_probe.py": fixture_migration("002", "001", ADVANCE_PROBE),
        "003_index_concurrently.py": fixture_migration("003", "002", f"""
{ADVANCE_PROBE}
with op.get_context().autocommit_block():
    op.create_index('users_country_idx', 'users', ['country'], postgresql_concurrently=True)
""", "op.drop_index('users_country_idx', table_name='users')"),
    }, upto="001")
    agentdb.upgrade("001", database_url=database_url)
    _create_probe(database_url)
    dump_before = schema_dump(database_url)

    with pytest.raises(NotTransactional) as caught:
        agentdb.dry_run("head", database_url=database_url)

    assert caught.value.revision == "003"
    assert "autocommit_block" in str(caught.value)
    assert _probe_untouched(database_url), "a migration ran before the refusal (002, or 003 up to its block)"
    assert schema_dump(database_url) == dump_before
    assert _versions(database_url) == ["001"]


def test_dry_run_validates_checksums_of_applied_migrations_like_a_real_upgrade(
    database_url: str, script_location: Callable[..., Path]
) -> None:
    location = script_location({
        "002_marker.py": fixture_migration("002", "001", "op.execute('CREATE TABLE checksum_marker (id bigint)')",
                                           "op.execute('DROP TABLE checksum_marker')"),
        "003_advance_probe.py": fixture_migration("003", "002", ADVANCE_PROBE),
    }, upto="001")
    agentdb.upgrade("002", database_url=database_url)
    _create_probe(database_url)
    applied = location / "versions" / "002_marker.py"
    applied.write_text(applied.read_text().replace("CREATE TABLE checksum_marker (id bigint)",
                                                   "CREATE TABLE checksum_marker (id integer)"))
    dump_before, history_before = schema_dump(database_url), _history_rows(database_url)

    with pytest.raises(ChecksumMismatch) as dry:
        agentdb.dry_run("head", database_url=database_url)
    with pytest.raises(ChecksumMismatch) as real:
        agentdb.upgrade("head", database_url=database_url)

    assert dry.value.problems == real.value.problems
    assert len(dry.value.problems) == 1 and dry.value.problems[0].startswith("002 changed since it was applied")
    assert _probe_untouched(database_url), "003 ran although an applied migration had changed"
    assert schema_dump(database_url) == dump_before
    assert _versions(database_url) == ["002"]
    assert _history_rows(database_url) == history_before

    refused = run_cli("--database-url", database_url, "upgrade", "--dry-run")
    assert refused.returncode == 5, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: validation failed: 002 changed since it was applied")
    assert _probe_untouched(database_url) and _versions(database_url) == ["002"]


def test_dry_run_refuses_autocommit_block_reached_through_a_helper_and_rolls_back(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = migrations_copy(tmp_path)
    _autocommit_fixture(location, hidden=True)
    monkeypatch.setenv("AGENTDB_SCRIPT_LOCATION", str(location))
    agentdb.upgrade("001", database_url=database_url)
    dump_before = schema_dump(database_url)

    with pytest.raises(NotTransactional) as caught:
        agentdb.dry_run("head", database_url=database_url)

    assert caught.value.revision == "002"
    assert schema_dump(database_url) == dump_before  # dry_marker, created before the block, is gone
    assert "dry_marker" not in dump_before
    assert _versions(database_url) == ["001"]


def test_cli_dry_run_json_and_refusal_exit_code(database_url: str, tmp_path: Path) -> None:
    result = run_cli("--database-url", database_url, "upgrade", "001", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["rolled_back"] is True
    assert data["steps"][0]["revision"] == "001"
    assert data["steps"][0]["statement_count"] == len(data["steps"][0]["statements"]) > 0
    assert _versions(database_url) == []

    location = migrations_copy(tmp_path)
    _autocommit_fixture(location, hidden=False)
    refused = run_cli("--database-url", database_url, "upgrade", "--dry-run",
                      env={"AGENTDB_SCRIPT_LOCATION": str(location)})
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot dry-run upgrade 002")


def test_cli_dry_run_table_says_rolled_back(database_url: str) -> None:
    result = run_cli("--database-url", database_url, "upgrade", "001", "--dry-run", env={"COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    assert "no lock on an existing table" in result.stdout  # 001 only creates: its locks are summarised
    assert "more on new tables, indexes and sequences" in result.stdout
    assert "rolled back" in result.stdout


def test_downgrade_past_the_first_revision_is_a_clear_error_naming_where_the_database_is(database_url: str) -> None:
    agentdb.upgrade("001", database_url=database_url)
    dump_before = schema_dump(database_url)

    result = run_cli("--database-url", database_url, "downgrade", "-5")

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "database is at 001" in lines[0] and "-5" in lines[0] and "didn't produce" not in lines[0]
    assert schema_dump(database_url) == dump_before
    assert _versions(database_url) == ["001"]


def test_downgrade_to_an_unknown_revision_is_a_clear_error(database_url: str) -> None:
    agentdb.upgrade("001", database_url=database_url)

    result = run_cli("--database-url", database_url, "downgrade", "999")

    assert result.returncode == 2
    assert "unknown revision '999'" in result.stderr
    assert _versions(database_url) == ["001"]


def test_dry_run_report_is_a_plain_object_separate_from_the_run() -> None:
    report = DryRunReport(direction="upgrade", target="head")
    assert report.as_dict()["steps"] == [] and report.as_dict()["rolled_back"] is False


def test_a_migration_that_fails_in_a_dry_run_is_one_line_saying_it_would_fail_and_nothing_changed(
    database_url: str, tmp_path: Path
) -> None:
    location = migrations_copy(tmp_path)
    write_migration(location, "002_breaks.py", revision="002", down_revision="001",
                    upgrade="op.execute(\"CREATE TABLE users (id int)\")")  # users exists: 42P07
    assert run_cli("--database-url", database_url, "upgrade", "001",
                   env={"AGENTDB_SCRIPT_LOCATION": str(location)}).returncode == 0
    before = schema_dump(database_url)

    result = run_cli("--database-url", database_url, "upgrade", "--dry-run",
                     env={"AGENTDB_SCRIPT_LOCATION": str(location)})

    assert result.returncode == 6, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: dry run: upgrade of 002 would fail [SQLSTATE 42P07]"), lines[0]
    assert "nothing was changed" in lines[0] and "unexpected" not in lines[0]
    assert _versions(database_url) == ["001"] and schema_dump(database_url) == before
