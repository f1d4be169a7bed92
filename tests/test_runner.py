"""The safe runner: atomic migrations, run lock, lock timeouts, run history, checksums."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from conftest import BIN, fixture_migration, run_cli, schema_dump

import agentdb
from agentdb.errors import ChecksumMismatch, LockTimeout, MigrationFailed, RunLockTimeout
from agentdb.runtime.config import make_config
from agentdb.runtime.locks import RUN_LOCK_KEY


def _scalar(url: str, query: str, params: tuple[object, ...] = ()) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


def _runs(url: str) -> list[tuple[str, str, bool, str | None, str | None]]:
    with psycopg.connect(url) as conn:
        return [
            tuple(r)  # type: ignore[misc]
            for r in conn.execute(
                "SELECT revision, direction, success, sqlstate, error FROM agentdb.migration_runs ORDER BY id"
            )
        ]


def _revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(make_config())
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def _internal_dump(url: str) -> str:
    """The ``agentdb`` schema's tables that migrations create (008's import ledger...), without the version table
    and the run history the runner itself makes on the first run, nor the archive's registry (made when a
    downgrade first archives rows; tests/test_archive.py)."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regnamespace('agentdb') IS NULL").fetchone() == (True,):
            return ""
    dump = schema_dump(url, "--schema=agentdb", "--exclude-table=agentdb.alembic_version",
                       "--exclude-table=agentdb.migration_runs", "--exclude-table=agentdb.archived_tables",
                       internal=True)
    # Only the definitions: pg_dump's preamble is there even when the schema holds nothing of a migration.
    return "\n".join(line for line in dump.splitlines()
                     if line and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config")))


def _dumps(url: str) -> tuple[str, str]:
    return schema_dump(url), _internal_dump(url)


def test_stairway_each_revision_downgrades_to_the_same_schema_and_upgrades_again(database_url: str) -> None:
    """For every revision: upgrade, downgrade one, upgrade again; pg_dump --schema-only must match each time
    (the application schemas, and what migrations create in agentdb's own)."""
    for revision in _revisions():
        before = _dumps(database_url)
        agentdb.upgrade(revision, database_url=database_url)
        after = _dumps(database_url)
        assert after != before, f"{revision} changed nothing"
        agentdb.downgrade("-1", database_url=database_url)
        assert _dumps(database_url) == before, f"downgrade of {revision} did not restore the schema"
        agentdb.upgrade(revision, database_url=database_url)
        assert _dumps(database_url) == after, f"re-upgrade of {revision} differs from its first upgrade"


def test_ten_concurrent_upgrades_apply_each_revision_exactly_once(database_url: str) -> None:
    procs = [
        subprocess.Popen(
            [str(BIN / "agentdb"), "--database-url", database_url, "upgrade"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(10)
    ]
    results = [(p.wait(timeout=300), p.stdout.read() if p.stdout else "", p.stderr.read() if p.stderr else "")
               for p in procs]
    assert [code for code, _, _ in results] == [0] * 10, results
    applied = [(rev, direction) for rev, direction, ok, _, _ in _runs(database_url) if ok]
    assert applied == [(rev, "upgrade") for rev in _revisions()]
    assert _scalar(database_url, "SELECT version_num FROM agentdb.alembic_version") == _revisions()[-1]
    assert sum("nothing to upgrade" in out for _, out, _ in results) == 9


def test_failing_migration_leaves_no_trace_and_earlier_ones_stay(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(
        {
            "002_good.py": fixture_migration("002", "001", "op.create_table('good_t', sa.Column('id', sa.Integer))",
                                             "op.drop_table('good_t')"),
            "003_bad.py": fixture_migration(
                "003", "002",
                "op.create_table('half_t', sa.Column('id', sa.Integer))\n"
                "op.execute(\"INSERT INTO users (email, display_name) VALUES ('ann@example.org', 'Ann')\")\n"
                "op.execute(\"INSERT INTO users (email, display_name) VALUES ('ann@example.org', 'Ann 2')\")",
            ),
        },
        upto="001",
    )
    with pytest.raises(MigrationFailed) as caught:
        agentdb.upgrade("head", database_url=database_url)
    error = caught.value
    assert (error.revision, error.sqlstate) == ("003", "23505")
    assert "ann@example.org" not in str(error), "row data must not leak into errors"
    assert _scalar(database_url, "SELECT version_num FROM agentdb.alembic_version") == "002"
    assert _scalar(database_url, "SELECT to_regclass('public.good_t') IS NOT NULL") is True
    assert _scalar(database_url, "SELECT to_regclass('public.half_t') IS NULL") is True
    assert _scalar(database_url, "SELECT count(*) FROM users") == 0
    runs = _runs(database_url)
    assert runs[-1][:4] == ("003", "upgrade", False, "23505")
    assert runs[-1][4] is not None and "ann@example.org" not in runs[-1][4]
    assert [(r[0], r[2]) for r in runs[:-1]] == [("001", True), ("002", True)]


def test_changed_migration_file_fails_validation_and_blocks_upgrade(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    location: Path = script_location(
        {"002_t.py": fixture_migration("002", "001", "op.create_table('t2', sa.Column('id', sa.Integer))",
                                       "op.drop_table('t2')")},
        upto="001",
    )
    agentdb.upgrade("001", database_url=database_url)
    assert agentdb.validate(database_url=database_url) == []

    first = location / "versions" / "001_initial_schema.py"
    first.write_text(first.read_text() + "\n# edited after it was applied\n")
    issues = agentdb.validate(database_url=database_url)
    assert [(i.revision, i.kind) for i in issues] == [("001", "changed")]
    with pytest.raises(ChecksumMismatch):
        agentdb.upgrade("head", database_url=database_url)
    assert _scalar(database_url, "SELECT version_num FROM agentdb.alembic_version") == "001"

    result = run_cli("--database-url", database_url, "validate", env={"AGENTDB_SCRIPT_LOCATION": str(location)})
    assert result.returncode == 5
    assert "001 changed since it was applied" in result.stderr

    agentdb.upgrade("head", database_url=database_url, ignore_checksums=True)
    assert _scalar(database_url, "SELECT version_num FROM agentdb.alembic_version") == "002"
    assert agentdb.repair(database_url=database_url) == ["001"]
    assert agentdb.validate(database_url=database_url) == []


def test_missing_migration_file_of_an_applied_revision_fails_validation(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    location: Path = script_location(
        {"002_t.py": fixture_migration("002", "001", "op.create_table('t2', sa.Column('id', sa.Integer))",
                                       "op.drop_table('t2')")},
        upto="001",
    )
    agentdb.upgrade("head", database_url=database_url)
    (location / "versions" / "002_t.py").unlink()
    issues = agentdb.validate(database_url=database_url)
    assert ("002", "missing") in [(i.revision, i.kind) for i in issues]
    assert all(i.fatal for i in issues if i.kind == "missing")


def _hold_lock(url: str, statement: str, ready: threading.Event, release: threading.Event) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("SET application_name = 'blocker-test'")
        conn.execute(statement)
        ready.set()
        release.wait(60)
        conn.rollback()


def test_lock_timeout_retries_then_names_the_blocking_backend(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(
        {"002_alter.py": fixture_migration("002", "001", "op.add_column('users', sa.Column('nick', sa.Text))",
                                           "op.drop_column('users', 'nick')")},
        upto="001",
    )
    agentdb.upgrade("001", database_url=database_url)
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(
        target=_hold_lock,
        args=(database_url, "SELECT * FROM users WHERE email = 'secret@example.org' FOR UPDATE", ready, release),
    )
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockTimeout) as caught:
            agentdb.upgrade("head", database_url=database_url, lock_timeout=0.3, lock_retries=3)
    finally:
        release.set()
        holder.join()
    error = caught.value
    assert error.attempts == 3
    assert error.revision == "upgrade 002"
    assert [b.application_name for b in error.blockers] == ["blocker-test"]
    assert "FOR UPDATE" in error.blockers[0].query
    assert "secret@example.org" not in str(error), "literals of the blocker's query are masked"
    assert _scalar(database_url, "SELECT version_num FROM agentdb.alembic_version") == "001"
    assert _runs(database_url)[-1][:4] == ("002", "upgrade", False, "55P03")


def test_lock_timeout_retry_succeeds_once_the_blocker_goes(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(
        {"002_alter.py": fixture_migration("002", "001", "op.add_column('users', sa.Column('nick', sa.Text))",
                                           "op.drop_column('users', 'nick')")},
        upto="001",
    )
    agentdb.upgrade("001", database_url=database_url)
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(database_url, "LOCK TABLE users IN SHARE MODE", ready, release))
    holder.start()
    assert ready.wait(10)
    threading.Timer(1.0, release.set).start()
    try:
        report = agentdb.upgrade("head", database_url=database_url, lock_timeout=0.2, lock_retries=10)
    finally:
        release.set()
        holder.join()
    assert [s.revision for s in report.steps] == ["002"]
    assert _scalar(database_url, "SELECT version_num FROM agentdb.alembic_version") == "002"


def test_run_lock_held_by_another_session_times_out_naming_its_pid(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SET application_name = 'other-run'")
        other.execute("SELECT pg_advisory_lock(%s)", (RUN_LOCK_KEY,))
        pid = other.info.backend_pid
        started = time.monotonic()
        with pytest.raises(RunLockTimeout) as caught:
            agentdb.upgrade("head", database_url=database_url, run_lock_timeout=1.0)
        assert time.monotonic() - started < 30
    assert caught.value.blocker is not None
    assert caught.value.blocker.pid == pid
    assert f"pid {pid} (other-run)" in str(caught.value)
    assert _scalar(database_url, "SELECT to_regclass('agentdb.alembic_version') IS NULL") is True


def test_history_row_records_who_where_and_the_file_checksum(database_url: str) -> None:
    from agentdb.runtime.history import file_checksum

    agentdb.upgrade("001", database_url=database_url)
    row = agentdb.history(database_url=database_url)[0]
    path = Path(make_config().get_main_option("script_location") or "")
    assert row["revision"] == "001" and row["direction"] == "upgrade" and row["success"] is True
    assert row["filename"] == "001_initial_schema.py"
    assert row["finished_at"] >= row["started_at"] and row["duration_ms"] >= 0
    assert row["db_user"] and row["os_user"] and row["host"] and row["agentdb_version"]
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(make_config()).get_revision("001")
    assert script is not None
    assert row["checksum"] == file_checksum(script.path)
    del path


def test_migration_failure_in_the_middle_of_a_run_is_recorded_and_reported(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location({"002_boom.py": fixture_migration("002", "001", "raise RuntimeError('boom')")}, upto="001")
    result = run_cli("--database-url", database_url, "upgrade", env={"AGENTDB_SCRIPT_LOCATION": str(
        Path(__import__("os").environ["AGENTDB_SCRIPT_LOCATION"]))})
    assert result.returncode == 6
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "upgrade of 002 failed and was rolled back" in lines[0] and "boom" in lines[0]
    assert "Traceback" not in result.stderr
    assert _scalar(database_url, "SELECT version_num FROM agentdb.alembic_version") == "001"


def test_guard_refusal_inside_a_migration_is_recorded_in_event_logs(migrated_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    head = agentdb.heads()[0]["revision"]
    script_location({f"{int(head) + 1:03d}_purge_users.py": fixture_migration(
        f"{int(head) + 1:03d}", head, "op.execute('DELETE FROM users')")})
    with psycopg.connect(migrated_url) as conn:
        conn.execute("INSERT INTO users (email, display_name) "
                     "SELECT 'u' || g || '@example.org', 'User ' || g FROM generate_series(1, 150) g")
    with pytest.raises(MigrationFailed) as caught:
        agentdb.upgrade("head", database_url=migrated_url)
    assert caught.value.sqlstate == "YB001"
    assert _scalar(migrated_url, "SELECT count(*) FROM users") == 150
    assert _scalar(migrated_url, "SELECT count(*) FROM event_logs WHERE event_type = 'bulk_change.refused' "
                                 "AND source = 'agentdb.migration'") == 1


def test_statement_timeout_stops_a_slow_migration_and_rolls_it_back(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location({"002_slow.py": fixture_migration(
        "002", "001", "op.create_table('slow_t', sa.Column('id', sa.Integer))\nop.execute('SELECT pg_sleep(5)')")},
        upto="001")
    started = time.monotonic()
    with pytest.raises(MigrationFailed) as caught:
        agentdb.upgrade("head", database_url=database_url, statement_timeout=0.5)
    assert time.monotonic() - started < 4.5
    assert caught.value.sqlstate == "57014"
    assert _scalar(database_url, "SELECT version_num FROM agentdb.alembic_version") == "001"
    assert _scalar(database_url, "SELECT to_regclass('public.slow_t') IS NULL") is True


def test_updated_at_is_maintained_by_the_database_only_when_a_row_changes(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (email, display_name, created_at, updated_at) "
                     "VALUES ('ann@example.org', 'Ann', now() - interval '1 day', now() - interval '1 day')")
        stale = conn.execute("SELECT updated_at FROM users").fetchone()
        conn.execute("UPDATE users SET display_name = display_name")
        assert conn.execute("SELECT updated_at FROM users").fetchone() == stale, "no change, no new timestamp"
        conn.execute("UPDATE users SET display_name = 'Ann B.'")
        fresh = conn.execute("SELECT updated_at > now() - interval '1 minute' FROM users").fetchone()
    assert fresh == (True,)
