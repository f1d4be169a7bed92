"""agentdb health as a whole: healthy database, read-only run, monitoring role, CLI outputs and exit codes, deep."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from agentdb.cli import main
from agentdb.cli._common import out
from agentdb.errors import HealthOptionInvalid
from agentdb.health import CHECKS, Status, check_health
from agentdb.health.registry import parse_value


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


def test_a_healthy_database_at_head_is_ok_and_read_only(migrated_url: str) -> None:
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
    """pg_monitor + agentdb_readonly: what migrations 009 and 010 grant that role (the migration history, the
    recorded runs, the ledgers of the ops checks; of the erasure ledger only the columns the check reads, never
    user_id) is enough for every check."""
    report = check_health(database_url=monitor)
    unknown = {r.id: r.message for r in report.results if r.status == Status.UNKNOWN}
    assert unknown == {}
    for check_id in ("ops.erasure_deadlines", "schema.orphan_rows", "schema.tables_drift", "schema.grants_drift",
                     "schema.migrations_changed",
                     "server.sequence_exhaustion", "ops.consent_contradictions", "ops.imports_unfinished",
                     "ops.default_partition_empty", "ops.online_changes_abandoned"):
        assert report.result(check_id).status == Status.OK, report.result(check_id).message
    # A row in analytics' DEFAULT partition, which the role cannot read directly: the statistics tell.
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("INSERT INTO analytics (event_type, created_at) VALUES ('play', now() - interval '30 years')")
        conn.execute("SELECT pg_stat_force_next_flush()")
    after = check_health(database_url=monitor)
    assert {r.id: r.status for r in after.results if r.status != Status.OK} == {
        "ops.default_partition_empty": Status.WARNING,
        **({} if _fsync_on(migrated_url) else {"server.risky_settings": Status.CRITICAL})}
    assert after.result("ops.default_partition_empty").evidence == [
        {"table": "public.analytics", "partition": "analytics_default", "rows_estimate": 1}]


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


@dataclass
class _Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli_run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., _Run]:
    """``agentdb --database-url URL health ARGS`` in this process (the installed entry point's ``main``): a new
    process per call costs seconds on a loaded CI machine; test_health_migration runs one for the exit code."""
    monkeypatch.setattr(out, "_width", 100)  # a 100-column terminal, as COLUMNS=100 gives the installed command

    def run(url: str, *args: str) -> _Run:
        capsys.readouterr()
        try:
            main(["--database-url", url, "health", *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return _Run(code, captured.out, captured.err)
    return run


def test_cli_exit_codes_follow_nagios(migrated_url: str, cli_run: Callable[..., _Run]) -> None:
    ok = cli_run(migrated_url, "--skip", "server.risky_settings")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert all(len(line) <= 100 for line in ok.stdout.splitlines())
    table = ok.stdout.split("─" * 10, 1)[1].split("\n", 1)[1].split("\n\n", 1)[0].splitlines()
    rows = [line for line in table if line.split(" ", 1)[0] in ("ok", "warning", "critical")]
    assert len(rows) == sum(1 for c in CHECKS.values() if not c.deep) - 1  # a check per line, the finding too
    finding = rows[0].index(rows[0].split()[2])  # where the finding column starts
    assert all(line in rows or line.startswith(" " * (finding + 2)) for line in table)  # else a continuation
    out._width = 72  # a narrower terminal (the fixture restores the width)
    narrow = cli_run(migrated_url, "--only", "schema")
    table = narrow.stdout.split("─" * 10, 1)[1].split("\n", 1)[1].split("\n\n", 1)[0].splitlines()
    rows = [line for line in table if line.split(" ", 1)[0] in ("ok", "warning", "critical")]
    assert len(rows) == sum(1 for c in CHECKS.values() if c.group == "schema") < len(table)
    assert all(len(line) <= 72 for line in table)
    assert all(line in rows or line.startswith(" " * (finding + 2)) for line in table)
    sql_(migrated_url, "CREATE TABLE t_ref3 (id int, user_id bigint REFERENCES users)")
    warning = cli_run(migrated_url, "--only", "schema.fk_index_coverage,server.connections")
    assert warning.returncode == 1 and "t_ref3" in warning.stdout
    assert "CREATE INDEX CONCURRENTLY" in warning.stdout and "SHARE UPDATE EXCLUSIVE" in warning.stdout
    sql_(migrated_url, "ALTER TABLE users DISABLE TRIGGER users_audit")
    critical = cli_run(migrated_url, "--only", "schema")
    assert critical.returncode == 2 and "users_audit" in critical.stdout
    assert all(len(line) <= 100 for line in critical.stdout.splitlines())
    unknown = cli_run(migrated_url, "--only", "deep.btree_indexes")  # amcheck is not installed here
    assert unknown.returncode == 3 and "CREATE EXTENSION amcheck" in " ".join(unknown.stdout.split())
    usage = cli_run(migrated_url, "--only", "nope")
    assert usage.returncode == 3 and "no check or group named 'nope'" in usage.stderr


def test_cli_list_prints_each_threshold_as_an_override_takes_it(migrated_url: str,
                                                               cli_run: Callable[..., _Run]) -> None:
    listing = cli_run(migrated_url, "--list")
    assert listing.returncode == 0 and all(len(line) <= 100 for line in listing.stdout.splitlines())
    printed: dict[str, str] = {}
    check_id = ""
    for line in listing.stdout.splitlines()[1:]:
        if line.startswith("    "):
            printed.update({f"{check_id}.{k}": v for k, v in (p.split("=") for p in line.strip().split(", "))})
        else:
            check_id = line.split()[0]
    assert set(printed) == {f"{c.id}.{name}" for c in CHECKS.values() for name in c.params}
    for key, text in printed.items():
        check_id, _, name = key.rpartition(".")
        param = CHECKS[check_id].params[name]
        assert parse_value(text, param.unit, key) == pytest.approx(param.default), key


def test_cli_json_prometheus_and_html(migrated_url: str, tmp_path: Path, cli_run: Callable[..., _Run]) -> None:
    sql_(migrated_url, "GRANT SELECT (email) ON public.users TO agentdb_analyst")
    result = cli_run(migrated_url, "--json", "--only", "schema", "-t", "schema.orphan_rows.scan_max_rows=10",
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

    metrics = cli_run(migrated_url, "--format", "prometheus", "--only", "schema,server.connections")
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
