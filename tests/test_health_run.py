"""agentdb health as a whole: healthy database, read-only run, monitoring role, CLI outputs and exit codes, deep."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from conftest import run_cli
from psycopg import sql

from agentdb.errors import HealthOptionInvalid
from agentdb.health import CHECKS, Status, check_health, ensure_health_ledger


def sql_(url: str, *statements: str | sql.Composable) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def _fsync_on(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SHOW fsync").fetchone() == ("on",)


def test_there_are_at_least_forty_checks_with_stable_ids() -> None:
    assert len(CHECKS) >= 40
    assert all(c.id.split(".")[0] in ("server", "schema", "ops", "deep") for c in CHECKS.values())


def test_a_healthy_database_at_head_is_ok_read_only_and_fast_enough(migrated_url: str) -> None:
    report = check_health(database_url=migrated_url)
    problems = {r.id: r.message for r in report.results if r.status != Status.OK}
    if not _fsync_on(migrated_url):  # this throwaway test server runs with fsync = off
        assert problems.pop("server.risky_settings") == "fsync = off"
    assert problems == {}
    assert report.locks == ["AccessShareLock"]
    assert not any(r.id.startswith("deep.") for r in report.results)


def test_every_query_runs_read_only_under_timeouts(migrated_url: str) -> None:
    """A check that waits for a lock gives up after lock_timeout and is unknown; the run goes on."""
    with psycopg.connect(migrated_url) as holder:
        holder.execute("LOCK TABLE consent IN ACCESS EXCLUSIVE MODE")
        report = check_health(database_url=migrated_url, only=["ops.consent_contradictions", "server.connections"],
                              lock_timeout=0.2)
    blocked = report.result("ops.consent_contradictions")
    assert blocked.status == Status.UNKNOWN and "lock_timeout" in blocked.message
    assert report.result("server.connections").status == Status.OK


@pytest.fixture
def monitor(migrated_url: str) -> Iterator[str]:
    """A real login role that is only pg_monitor + agentdb_readonly, as a monitoring system would use."""
    role = f"t_monitor_{uuid.uuid4().hex[:8]}"
    sql_(migrated_url, sql.SQL("CREATE ROLE {} LOGIN IN ROLE pg_monitor, agentdb_readonly").format(
        sql.Identifier(role)))
    try:
        yield sa.make_url(migrated_url).set(username=role).render_as_string(hide_password=False)
    finally:
        sql_(migrated_url, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)),
             sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_pg_monitor_role_runs_every_check_or_says_what_it_needs(migrated_url: str, monitor: str) -> None:
    report = check_health(database_url=monitor)
    unknown = {r.id: r.message for r in report.results if r.status == Status.UNKNOWN}
    assert unknown == {
        "schema.migrations_pending": "unknown: needs SELECT on agentdb.alembic_version",
        "schema.migrations_failed": "unknown: needs SELECT on agentdb.migration_runs",
        "schema.migrations_changed": "unknown: needs SELECT on agentdb.migration_runs",
        "ops.archive_retention": "unknown: needs SELECT on agentdb.archived_tables",
    }
    # The orphans, drift, grants, sequences and consent checks ran with its privileges.
    for check_id in ("schema.orphan_rows", "schema.tables_drift", "schema.grants_drift", "server.sequence_exhaustion",
                     "ops.consent_contradictions", "server.idle_in_transaction"):
        assert report.result(check_id).status == Status.OK, report.result(check_id).message
    # What migration 009 grants the read-only role makes the migration checks work.
    engine = sa.create_engine(sa.make_url(migrated_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.begin() as conn:
            ensure_health_ledger(conn)
    finally:
        engine.dispose()
    after = check_health(database_url=monitor, only=["schema"])
    assert {r.status for r in after.results} == {Status.OK}


def test_options_name_real_checks_and_thresholds(migrated_url: str) -> None:
    with pytest.raises(HealthOptionInvalid, match=r"no check or group named 'server\.nope'"):
        check_health(database_url=migrated_url, only=["server.nope"])
    with pytest.raises(HealthOptionInvalid, match="no threshold"):
        check_health(database_url=migrated_url, thresholds={"server.connections.nope": 1})
    with pytest.raises(HealthOptionInvalid, match="not a valid seconds value"):
        check_health(database_url=migrated_url, thresholds={"server.idle_in_transaction.warning": "soon"})
    skipped = check_health(database_url=migrated_url, only=["server"], skip=["server.risky_settings"])
    assert all(r.group == "server" for r in skipped.results) and "server.risky_settings" not in {
        r.id for r in skipped.results}


def _cli(url: str, *args: str) -> Any:
    return run_cli("--database-url", url, "health", *args, env={"COLUMNS": "100", "TERM": "dumb"})


def test_cli_exit_codes_follow_nagios(migrated_url: str) -> None:
    ok = _cli(migrated_url, "--skip", "server.risky_settings")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert all(len(line) <= 100 for line in ok.stdout.splitlines())
    sql_(migrated_url, "CREATE TABLE t_ref3 (id int, user_id bigint REFERENCES users)")
    warning = _cli(migrated_url, "--only", "schema.fk_index_coverage,server.connections")
    assert warning.returncode == 1 and "t_ref3" in warning.stdout
    assert "CREATE INDEX CONCURRENTLY" in warning.stdout and "SHARE UPDATE EXCLUSIVE" in warning.stdout
    sql_(migrated_url, "ALTER TABLE users DISABLE TRIGGER users_audit")
    critical = _cli(migrated_url, "--only", "schema")
    assert critical.returncode == 2 and "users_audit" in critical.stdout
    assert all(len(line) <= 100 for line in critical.stdout.splitlines())
    unknown = _cli(migrated_url, "--only", "deep.btree_indexes")  # amcheck is not installed here
    assert unknown.returncode == 3 and "CREATE EXTENSION amcheck" in " ".join(unknown.stdout.split())
    usage = _cli(migrated_url, "--only", "nope")
    assert usage.returncode == 3 and "no check or group named 'nope'" in usage.stderr


def test_cli_json_prometheus_and_html(migrated_url: str, tmp_path: Path) -> None:
    sql_(migrated_url, "GRANT SELECT (email) ON public.users TO agentdb_analyst")
    result = _cli(migrated_url, "--json", "--only", "schema", "-t", "schema.orphan_rows.scan_max_rows=10",
                  "--html", str(tmp_path / "report.html"))
    assert result.returncode == 2
    data = json.loads(result.stdout)
    assert data["status"] == "critical" and data["exit_code"] == 2 and data["locks"] == ["AccessShareLock"]
    first = data["results"][0]
    assert first["id"] == "schema.analyst_personal_columns" and first["status"] == "critical"
    assert first["evidence"] == [{"table": "public.users", "column": "email", "role": "agentdb_analyst"}]
    assert first["lock"] and first["remediation"].startswith("REVOKE")
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "schema.analyst_personal_columns" in page
    assert "<script" not in page and "http" not in page.replace(migrated_url, "")

    metrics = _cli(migrated_url, "--format", "prometheus", "--only", "schema,server.connections")
    assert metrics.returncode == 2
    lines = metrics.stdout.splitlines()
    assert 'agentdb_health_check_status{check="schema.analyst_personal_columns",group="schema"} 2.0' in lines
    assert "agentdb_health_status 2.0" in lines
    assert any(line.startswith('agentdb_health_check_value{check="server.connections",unit="ratio"}')
               for line in lines)
    labels = {part.split("=")[0] for line in lines if "{" in line
              for part in line.split("{", 1)[1].split("}")[0].split(",")}
    assert labels <= {"check", "group", "unit", "level", "status"}  # bounded: never a table or a pid


def test_recorded_runs_say_what_changed(migrated_url: str) -> None:
    first = check_health(database_url=migrated_url, only=["schema.audit_triggers"], record=True)
    assert first.recorded and first.previous_run_at is None
    sql_(migrated_url, "ALTER TABLE users DISABLE TRIGGER users_audit")
    second = check_health(database_url=migrated_url, only=["schema.audit_triggers"])
    assert second.previous_run_at is not None
    assert [(r.id, r.previous, r.status) for r in second.changed] == [
        ("schema.audit_triggers", Status.OK, Status.CRITICAL)]
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute("SELECT status, results FROM agentdb.health_runs").fetchall()
    assert rows == [("ok", {"schema.audit_triggers": {"status": "ok", "value": 0.0}})]


def test_deep_checks_find_real_index_and_heap_corruption(migrated_url: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'").fetchone():
            pytest.skip("amcheck is not available on this server")
    sql_(migrated_url, "CREATE EXTENSION amcheck")
    report = check_health(database_url=migrated_url, deep=True, only=["deep"])
    assert {r.id: r.status for r in report.results} == {"deep.btree_indexes": Status.OK,
                                                        "deep.heap_tables": Status.OK}
    assert report.locks == ["AccessShareLock"]
    # An index on a function declared IMMUTABLE that then changes: the index no longer matches the heap.
    sql_(migrated_url, "CREATE FUNCTION t_key(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT $1'",
         "CREATE TABLE t_heap (v int)", "INSERT INTO t_heap SELECT generate_series(1, 1000)",
         "CREATE INDEX t_heap_key ON t_heap (t_key(v))",
         "CREATE OR REPLACE FUNCTION t_key(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT -$1'")
    index = check_health(database_url=migrated_url, only=["deep.btree_indexes"]).results[0]
    assert index.status == Status.CRITICAL
    assert [e["index"] for e in index.evidence] == ["public.t_heap_key"]
    # A heap whose recorded freeze horizon is newer than its tuples' xmin.
    sql_(migrated_url, "CREATE TABLE t_frozen AS SELECT generate_series(1, 10) AS v",
         "SELECT txid_current()", "SELECT txid_current()",
         "UPDATE pg_class SET relfrozenxid = (txid_current() % (2^32)::bigint)::text::xid "
         "WHERE oid = 't_frozen'::regclass")
    heap = check_health(database_url=migrated_url, only=["deep.heap_tables"]).results[0]
    assert heap.status == Status.CRITICAL
    assert any(e["table"] == "public.t_frozen" and "freeze" in e["problem"] for e in heap.evidence), heap.evidence
