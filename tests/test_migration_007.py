"""Migration 007: analytics partitioned online by the runner -- run, dry run, SQL, history, crash and resume.

The engine's own guarantees (capture races, kill -9 at every phase with writers running, abort) are tested in
tests/test_online_*.py; these tests are about the migration: what ``agentdb upgrade`` does with an online change
in a migration, and that the seed documents' query and a one-month query work on the result.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _online_helpers import differences, fill_analytics, snapshot
from conftest import ROOT

import agentdb
from agentdb import migrate, online
from agentdb.errors import AgentdbError

ROWS = 12_000  # three batches of the engine's default 5,000


def _scalar(url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


def _relkind(url: str) -> str:
    return str(_scalar(url, "SELECT relkind::text FROM pg_class WHERE oid = 'public.analytics'::regclass"))


@pytest.fixture
def at_006(database_url: str) -> str:
    """A database at 006 whose analytics holds ROWS rows over seven months, and a copy of them."""
    agentdb.upgrade("006", database_url=database_url)
    fill_analytics(database_url, ROWS)
    snapshot(database_url)
    return database_url


def test_upgrade_converts_analytics_online_records_it_and_the_downgrade_brings_every_row_back(at_006: str) -> None:
    seen: list[online.Progress] = []
    report = agentdb.upgrade("007", database_url=at_006, progress=seen.append)

    (step,) = report.steps
    (change,) = step.online
    assert (change["kind"], change["table"], change["rows"]) == ("partition", "public.analytics", ROWS)
    assert change["lock_hold_ms"] is not None and change["lock_hold_ms"] < 5000
    assert {p.phase for p in seen} >= {"copy", "cutover"}, "the progress callback sees the phases"
    assert max(p.rows_done for p in seen) == ROWS
    assert _relkind(at_006) == "p"
    assert differences(at_006, "online_test.before", "public.analytics") == (0, 0)
    # The run history row of 007 says what the online change did.
    details = _scalar(at_006, "SELECT details FROM agentdb.migration_runs WHERE revision = '007' AND success "
                              "ORDER BY id DESC LIMIT 1")
    assert details["online"][0]["id"] == change["id"] and details["online"][0]["rows"] == ROWS
    assert _scalar(at_006, "SELECT premake FROM agentdb.partitioned_tables WHERE table_name = 'analytics'") == 4

    # The seed documents' query runs as written, and one month's query scans one partition.
    with psycopg.connect(at_006, autocommit=True) as conn:
        months = conn.execute(
            "SELECT date_trunc('month', created_at) AS month, COUNT(*) FROM analytics GROUP BY month").fetchall()
        assert sum(n for _, n in months) == ROWS
        start, end = conn.execute("SELECT date_trunc('month', now()), date_trunc('month', now()) + "
                                  "interval '1 month'").fetchone()  # type: ignore[misc]
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT count(*) FROM analytics WHERE created_at >= %s AND created_at < %s", (start, end)))
    scanned = {word for word in plan.split() if word.startswith(("analytics_p", "analytics_default"))}
    assert scanned == {f"analytics_p{start:%Y%m}"}, plan

    report = agentdb.downgrade("006", database_url=at_006)
    assert report.steps[0].online[0]["kind"] == "unpartition"
    assert _relkind(at_006) == "r"
    assert differences(at_006, "online_test.before", "public.analytics") == (0, 0)
    assert _scalar(at_006, "SELECT to_regclass('agentdb.partitioned_tables')") is None


def test_a_dry_run_plans_the_change_on_its_own_transaction_and_changes_nothing(at_006: str) -> None:
    report = migrate.dry_run("007", database_url=at_006)

    (step,) = report.steps
    (planned,) = step.observed.online
    phases = [phase["name"] for phase in planned["plan"]["phases"]]
    assert phases[:2] == ["start", "copy"] and "cutover" in phases
    assert planned["plan"]["rows_estimated"] > 0
    assert _relkind(at_006) == "r"
    assert _scalar(at_006, "SELECT to_regclass('agentdb.online_changes')") is None, "nothing persisted"
    assert _scalar(at_006, "SELECT count(*) FROM pg_class WHERE relname LIKE 'analytics\\_\\_online%'") == 0


def test_a_dry_run_from_base_plans_the_change_on_the_tables_the_same_run_creates(database_url: str) -> None:
    report = migrate.dry_run("007", database_url=database_url)

    assert [s.plan.revision for s in report.steps][-1] == "007"
    assert report.steps[-1].observed.online[0]["plan"]["table"] == "public.analytics"
    assert _scalar(database_url, "SELECT to_regclass('public.analytics')") is None


def test_sql_shows_every_phase_commented_out_and_stops_psql(at_006: str) -> None:
    with_database = migrate.sql("006:007", database_url=at_006)
    assert "-- -- === phase copy" in with_database and "-- -- === phase cutover" in with_database
    assert "RAISE EXCEPTION" in with_database
    assert "UPDATE agentdb.alembic_version SET version_num='007'" in with_database

    without = migrate.sql("006:007")
    assert "no database was named" in without and "RAISE EXCEPTION" in without
    # The script really stops psql before the version is recorded.
    run = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", at_006], input=without, text=True,
                         capture_output=True, timeout=60)
    assert run.returncode != 0 and "must be run by agentdb upgrade" in run.stderr
    assert _scalar(at_006, "SELECT version_num FROM agentdb.alembic_version") == "006"


def _upgrade_killed_at(url: str, point: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {}), "AGENTDB_ONLINE_KILL_AT": point}
    full.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "agentdb", "--database-url", url, "upgrade", "007"], env=full,
                          capture_output=True, text=True, timeout=180, cwd=ROOT)


@pytest.mark.parametrize("point", ["copy:batch:1", "verify:before", "cutover:locked"])
def test_kill_9_during_007_then_agentdb_upgrade_carries_on_from_the_checkpoint(at_006: str, point: str) -> None:
    killed = _upgrade_killed_at(at_006, point)
    assert killed.returncode == -9, killed.stderr
    assert _scalar(at_006, "SELECT version_num FROM agentdb.alembic_version") == "006"
    status = online.status(database_url=at_006)
    assert [c.interrupted for c in status] == [True], "agentdb online status names the leftover"

    report = agentdb.upgrade(database_url=at_006)
    assert report.steps[0].revision == "007"
    resumed = report.steps[0].online[0]
    assert resumed["id"] == status[0].id, "the same change, resumed"
    assert _relkind(at_006) == "p"
    assert differences(at_006, "online_test.before", "public.analytics") == (0, 0)
    assert _scalar(at_006, "SELECT version_num FROM agentdb.alembic_version") == report.steps[-1].revision
    applied = _scalar(at_006, "SELECT count(*) FROM agentdb.migration_runs WHERE revision = '007' AND success")
    assert applied == 1


def test_a_changed_007_file_refuses_to_resume_its_change(at_006: str, script_location: Any) -> None:
    location = script_location()
    killed = _upgrade_killed_at(at_006, "copy:batch:1", {"AGENTDB_SCRIPT_LOCATION": str(location)})
    assert killed.returncode == -9, killed.stderr
    version_file = Path(location) / "versions" / "007_partitioning.py"
    original = version_file.read_text()
    version_file.write_text(original + "\n# edited while its change was half done\n")

    with pytest.raises(AgentdbError, match="changed since the change started"):
        agentdb.upgrade("007", database_url=at_006)
    assert _relkind(at_006) == "r", "nothing swapped"

    version_file.write_text(original)
    agentdb.upgrade("007", database_url=at_006)
    assert differences(at_006, "online_test.before", "public.analytics") == (0, 0)
