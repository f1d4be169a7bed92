"""Ctrl-C says that the command was interrupted and what state the database is in, and that state is true."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from conftest import BIN, ROOT, fixture_migration

import agentdb


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("DATABASE_URL", None)
    # As in a terminal: a job started in the background by a script (CI runs its two test runs that way)
    # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    return subprocess.Popen([str(BIN / "agentdb"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=full_env, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_query(url: str, needle: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    """Wait until another session of this database runs a query containing ``needle``."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            found = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
                "AND pid <> pg_backend_pid() AND query ILIKE %s", (f"%{needle}%",),
            ).fetchone()
            if found and found[0]:
                return
            time.sleep(0.05)
    raise AssertionError(f"no session ran {needle!r} within {timeout} s")


def _interrupt(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=60)
    return process.returncode, err


def test_ctrl_c_during_seed_demo_says_nothing_was_written_and_nothing_was(migrated_url: str) -> None:
    process = _start("--database-url", migrated_url, "seed-demo", "--scale", "medium")
    _wait_for_query(migrated_url, "analytics", process)
    code, err = _interrupt(process)
    assert code == 130
    assert "interrupted: nothing was written" in err, err
    with psycopg.connect(migrated_url) as conn:
        for table in ("users", "tracks", "analytics", "audit_log"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


def test_ctrl_c_during_a_migration_names_the_revision_the_database_is_at(
    database_url: str, script_location, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    slow = fixture_migration("002", "001", 'op.execute("CREATE TABLE slow_step (id int)")\n'
                                           'op.execute("SELECT pg_sleep(60)")', 'op.drop_table("slow_step")')
    location = script_location({"002_slow_step.py": slow}, upto="001")
    process = _start("--database-url", database_url, "upgrade",
                     env={"AGENTDB_SCRIPT_LOCATION": str(location)})
    _wait_for_query(database_url, "pg_sleep", process)
    code, err = _interrupt(process)
    assert code == 130
    assert "interrupted: the migration that was running was rolled back; the database is at 001" in err, err
    assert agentdb.current(database_url=database_url).revisions == ("001",)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.slow_step')").fetchone() == (None,)


def test_ctrl_c_while_seed_demo_makes_month_partitions_is_an_interrupt(migrated_url: str) -> None:
    """seed-demo first makes analytics' month partitions (partition maintenance, its own connections)."""
    with psycopg.connect(migrated_url) as blocker:
        blocker.execute("LOCK TABLE analytics IN ACCESS EXCLUSIVE MODE")
        process = _start("--database-url", migrated_url, "seed-demo", "--scale", "small")
        deadline = time.monotonic() + 60
        with psycopg.connect(migrated_url, autocommit=True) as watch:
            while not watch.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND wait_event_type = 'Lock'").fetchone() != (0,):
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()
                time.sleep(0.05)
        code, err = _interrupt(process)
    assert code == 130, err
    assert "interrupted: nothing was written" in err, err
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT count(*) FROM analytics").fetchone() == (0,)
        # the maintenance lock went with the interrupted session: the next run is not kept waiting
        assert conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = current_database()").fetchone() == (0,)


def test_an_error_raised_while_cleaning_up_after_ctrl_c_still_ends_as_an_interrupt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Ctrl-C can leave a connection mid-query, and the rollback in a ``finally`` then fails: still exit 130."""
    from agentdb import cli, demo

    def interrupted_then_failed(*_args: object, **_kwargs: object) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise psycopg.OperationalError("sending query failed: another command is already in progress")  # noqa: B904

    monkeypatch.setattr(demo, "seed_demo", interrupted_then_failed)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--database-url", "postgresql://nobody@/nowhere", "seed-demo", "--json"])
    assert exit_.value.code == 130
    assert "interrupted: nothing was written" in capsys.readouterr().err
