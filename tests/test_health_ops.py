"""Data-operations checks of agentdb health: the ledgers of the other capabilities, each made to fire.

Where a capability's ledger does not exist, its check says "not in use" and is ok.  At head every ledger
exists (migrations 006-010 create them); the conditions are written into the real ledgers, through their
own modules where they offer a way.
"""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

from agentdb.bulk.ledger import lock_key
from agentdb.health import CheckResult, Status, check_health
from agentdb.online import state
from agentdb.partitions import naming, register
from agentdb.privacy import overdue_privacy_requests
from agentdb.privacy.ledger import open_request
from agentdb.runtime.archive import REGISTRY_DDL

OPS = ["ops.partitions_premake", "ops.default_partition_empty", "ops.partition_retention",
       "ops.online_changes_stalled", "ops.online_changes_abandoned", "ops.imports_unfinished",
       "ops.archive_retention", "ops.erasure_deadlines"]


def run(url: str, check_id: str, **thresholds: Any) -> CheckResult:
    report = check_health(database_url=url, only=[check_id],
                          thresholds={f"{check_id}.{k}": v for k, v in thresholds.items()})
    return report.results[0]


def sql_(url: str, *statements: str | sql.Composable, params: Any = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement, params)  # type: ignore[arg-type]


def test_every_ledger_check_is_ok_at_head_and_not_in_use_without_its_ledger(migrated_url: str) -> None:
    report = check_health(database_url=migrated_url, only=OPS)
    assert [(r.id, r.status) for r in report.results] == [(i, Status.OK) for i in sorted(OPS)]
    sql_(migrated_url, "DROP TABLE agentdb.imports, agentdb.privacy_requests, agentdb.online_changes")
    gone = check_health(database_url=migrated_url, only=["ops.imports_unfinished", "ops.erasure_deadlines",
                                                          "ops.online_changes_stalled"])
    assert all(r.status == Status.OK and r.message.startswith("not in use") for r in gone.results), gone.results


def _partitioned(url: str, *, months: list[int], retention: str | None = None) -> None:
    """t_metrics, RANGE on created_at with a DEFAULT partition and the given months (offsets from now)."""
    with psycopg.connect(url, autocommit=True) as conn:
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        conn.execute("CREATE TABLE t_metrics (id bigint, created_at timestamptz NOT NULL) "
                     "PARTITION BY RANGE (created_at)")
        conn.execute("CREATE TABLE t_metrics_default PARTITION OF t_metrics DEFAULT")
        for offset in months:
            start = naming.add_months(now, offset)
            conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF t_metrics FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(naming.partition_name("t_metrics", start)), sql.Literal(start),
                sql.Literal(naming.add_months(start, 1))))
    with psycopg.connect(url) as conn:
        register(conn, "t_metrics", "created_at", 2, retention=retention)
        conn.commit()


def test_partitions_ahead_default_and_retention(migrated_url: str) -> None:
    _partitioned(migrated_url, months=[-24, 0, 1, 2], retention="12 months")
    report = check_health(database_url=migrated_url, only=OPS[:3])
    assert {r.id: r.status for r in report.results} == {
        "ops.partitions_premake": Status.OK, "ops.default_partition_empty": Status.OK,
        "ops.partition_retention": Status.WARNING}
    old = report.result("ops.partition_retention").evidence
    assert [e["partition"][:11] for e in old] == ["t_metrics_p"] and len(old) == 1

    sql_(migrated_url, "INSERT INTO t_metrics VALUES (1, now() - interval '10 years')")
    default = run(migrated_url, "ops.default_partition_empty")
    assert default.status == Status.WARNING
    assert default.evidence == [{"table": "public.t_metrics", "partition": "t_metrics_default", "rows": 1}]


def test_missing_future_partition_warns_and_missing_current_is_critical(migrated_url: str) -> None:
    _partitioned(migrated_url, months=[0, 1])
    ahead = run(migrated_url, "ops.partitions_premake")
    assert ahead.status == Status.WARNING and len(ahead.evidence[0]["months_missing"]) == 1
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(naming.partition_name("t_metrics", now))))
    assert run(migrated_url, "ops.partitions_premake").status == Status.CRITICAL


def _online_change(url: str, *, status: str = "running", idle: str = "2 hours") -> None:
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            state.ensure_table(conn)
    finally:
        engine.dispose()
    sql_(url, "INSERT INTO agentdb.online_changes (token, kind, table_schema, table_name, status, phase, design, "
              "settings, updated_at) VALUES ('0123abcd', 'partition', 'public', 'analytics', %s, 'copy', '{}', '{}', "
              "now() - %s::interval)", params=[status, idle])


def test_online_change_left_behind_by_a_crash(migrated_url: str) -> None:
    _online_change(migrated_url)  # its row says running, no process holds its lock
    left = run(migrated_url, "ops.online_changes_abandoned")
    assert left.status == Status.WARNING
    assert left.evidence[0]["table"] == "public.analytics" and left.evidence[0]["driver_pid"] is None
    assert run(migrated_url, "ops.online_changes_stalled").status == Status.OK


def test_online_change_stalled_while_driven(migrated_url: str) -> None:
    _online_change(migrated_url, idle="20 minutes")
    k1, k2 = state.table_lock_key("public", "analytics")
    with psycopg.connect(migrated_url, autocommit=True) as driver:
        driver.execute("SELECT pg_advisory_lock(%s, %s)", [k1, k2])
        stalled = run(migrated_url, "ops.online_changes_stalled")
        assert stalled.status == Status.WARNING
        assert stalled.evidence[0]["driver_pid"] == driver.info.backend_pid
        assert run(migrated_url, "ops.online_changes_abandoned").status == Status.OK


_IMPORT = ("INSERT INTO agentdb.imports (table_name, file_sha256, file_name, file_bytes, format, status, "
           "started_at, updated_at, finished_at, agentdb_version) VALUES (%s, %s, 'f.csv', 10, 'csv', %s, "
           "now() - %s::interval, now() - %s::interval, CASE WHEN %s = 'running' THEN NULL ELSE now() END, 'test') "
           "RETURNING id")


def test_unfinished_import_failed_killed_or_stalled(migrated_url: str) -> None:
    """In the real ledger: killed (running, nobody holds its lock), stalled (held, no batch for an hour),
    failed; neither a recent import nor a finished one counts."""
    assert run(migrated_url, "ops.imports_unfinished").status == Status.OK
    ids = {}
    with psycopg.connect(migrated_url, autocommit=True) as conn, \
            psycopg.connect(migrated_url, autocommit=True) as driver:
        for name, table, status, idle in (("killed", "public.users", "running", "3 hours"),
                                          ("stalled", "public.tracks", "running", "2 hours"),
                                          ("recent", "public.albums", "running", "5 minutes"),
                                          ("failed", "public.artists", "failed", "90 minutes"),
                                          ("done", "public.consent", "done", "3 days")):
            sha = name.ljust(64, "0").encode().hex()[:64]
            row = conn.execute(_IMPORT, [table, sha, status, idle, idle, status]).fetchone()
            assert row is not None
            ids[name] = row[0]
            if name == "stalled":
                key = lock_key(table, sha)
                driver.execute("SELECT pg_advisory_lock(%s)", [key])  # what agentdb.bulk holds while importing
        result = run(migrated_url, "ops.imports_unfinished")
        assert result.status == Status.WARNING, result
        found = {e["import"]: (e["state"], e["driver_pid"]) for e in result.evidence}
        assert found == {ids["killed"]: ("killed", None), ids["stalled"]: ("stalled", driver.info.backend_pid),
                         ids["failed"]: ("failed", None)}
        assert result.value is not None and abs(result.value - 3 * 3600) < 120  # the longest idle, in seconds
        assert run(migrated_url, "ops.imports_unfinished", critical="2h").status == Status.CRITICAL


def test_archive_kept_past_retention(migrated_url: str) -> None:
    sql_(migrated_url, *REGISTRY_DDL,
         "CREATE TABLE agentdb_archive.playlists_005_1 AS SELECT 1 AS id",
         "INSERT INTO agentdb.archived_tables (table_schema, table_name, archive_table, revision, row_count, "
         "archived_at) VALUES ('public', 'playlists', 'agentdb_archive.playlists_005_1', '005', 1, "
         "now() - interval '100 days')")
    result = run(migrated_url, "ops.archive_retention")
    assert result.status == Status.WARNING and result.evidence[0]["rows"] == 1
    assert run(migrated_url, "ops.archive_retention", retention="8760h").status == Status.OK


def test_consent_row_contradicting_itself(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO users (email, display_name) VALUES ('c@example.org', 'C') "
                           "RETURNING id").fetchone()
        assert row is not None
        conn.execute("INSERT INTO consent (user_id, purpose, granted, policy_version, source) "
                     "VALUES (%s, 'marketing', true, '2026-05', 'signup')", [row[0]])
        assert run(migrated_url, "ops.consent_contradictions").status == Status.OK
        conn.execute("ALTER TABLE consent DISABLE TRIGGER consent_track_times")
        conn.execute("UPDATE consent SET granted = false WHERE user_id = %s", [row[0]])
    result = run(migrated_url, "ops.consent_contradictions")
    assert result.status == Status.CRITICAL
    assert result.evidence == [{"contradiction": "withdrawn without a revocation time", "rows": 1}]


def _request(url: str, kind: str, status: str, received: str) -> int:
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.begin() as conn:
            received_at = conn.execute(sa.text("SELECT now() - CAST(:r AS interval)"), {"r": received}).scalar()
            return open_request(conn, kind, 4242, status=status, received_at=received_at)
    finally:
        engine.dispose()


def test_erasure_request_past_its_deadline(migrated_url: str) -> None:
    """Through the privacy ledger: open requests (OPEN_STATUSES) past received + 30 days; the same ones
    agentdb.privacy itself calls overdue."""
    _request(migrated_url, "erasure", "pending", "2 days")
    _request(migrated_url, "erasure", "done", "40 days")
    _request(migrated_url, "hold", "active", "90 days")
    assert run(migrated_url, "ops.erasure_deadlines").status == Status.OK
    late = [_request(migrated_url, "erasure", "pending", "31 days"),
            _request(migrated_url, "export", "failed", "45 days")]
    result = run(migrated_url, "ops.erasure_deadlines")
    assert result.status == Status.CRITICAL
    assert sorted(e["request"] for e in result.evidence) == sorted(late)
    assert sorted(r.id for r in overdue_privacy_requests(database_url=migrated_url)) == sorted(late)
    assert all("user" not in key for e in result.evidence for key in e)  # the ledger's only link to a person


def test_a_ledger_the_role_cannot_read_is_unknown_and_a_column_grant_is_enough(migrated_url: str) -> None:
    sql_(migrated_url, "CREATE ROLE t_health_nobody LOGIN", "GRANT USAGE ON SCHEMA agentdb TO t_health_nobody")
    try:
        url = sa.make_url(migrated_url).set(username="t_health_nobody").render_as_string(hide_password=False)
        result = run(url, "ops.erasure_deadlines")
        assert result.status == Status.UNKNOWN
        assert result.message == "unknown: needs SELECT (id, kind, status, deadline) on agentdb.privacy_requests"
        sql_(migrated_url, "GRANT SELECT (id, kind, status, deadline) ON agentdb.privacy_requests TO t_health_nobody")
        assert run(url, "ops.erasure_deadlines").status == Status.OK
    finally:
        sql_(migrated_url, "DROP OWNED BY t_health_nobody", "DROP ROLE t_health_nobody")
