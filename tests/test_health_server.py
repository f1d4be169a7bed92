"""Server checks of agentdb health: each fires on a real database where the test creates its condition.

Sessions (idle in transaction, blocked, long queries) are real extra connections.  Conditions that take
days or billions of transactions to arise (wraparound, cache misses, exhausted identities) are created for
real at a small scale and judged against a lowered threshold: the measurement is the production one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import server_version_num

from agentdb._pgtools import find_tool
from agentdb.health import CheckResult, Status, check_health


def run(url: str, check_id: str, **thresholds: Any) -> CheckResult:
    report = check_health(database_url=url, only=[check_id],
                          thresholds={f"{check_id}.{k}": v for k, v in thresholds.items()})
    assert [r.id for r in report.results] == [check_id]
    return report.results[0]


def sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


@pytest.fixture
def sessions(migrated_url: str) -> Iterator[list[psycopg.Connection[Any]]]:
    """Extra connections to the test database, closed (and their queries cancelled) afterwards."""
    opened: list[psycopg.Connection[Any]] = []
    yield opened
    for conn in opened:
        try:
            conn.cancel()
        except psycopg.Error:
            pass
        conn.close()


def connect(url: str, opened: list[psycopg.Connection[Any]], **kwargs: Any) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, **kwargs)
    opened.append(conn)
    return conn


def test_connections_counts_sessions_per_database(migrated_url: str, sessions: list[Any]) -> None:
    assert run(migrated_url, "server.connections").status == Status.OK
    for _ in range(4):
        connect(migrated_url, sessions, autocommit=True).execute("SELECT 1")
    result = run(migrated_url, "server.connections", warning="0.0001")
    assert result.status == Status.WARNING
    database = psycopg.conninfo.conninfo_to_dict(migrated_url)["dbname"]
    assert {"database": database, "connections": 5} in result.evidence  # 4 and the check's own


def test_long_running_query_is_reported_with_its_literals_masked(migrated_url: str, sessions: list[Any]) -> None:
    conn = connect(migrated_url, sessions, autocommit=True)
    conn.pgconn.send_query(b"SELECT pg_sleep(30), 'secret@example.org'")
    time.sleep(1.2)
    assert run(migrated_url, "server.long_running_queries").status == Status.OK
    result = run(migrated_url, "server.long_running_queries", warning="1s", critical="1h")
    assert result.status == Status.WARNING
    assert result.evidence[0]["pid"] == conn.info.backend_pid
    assert "secret@example.org" not in str(result.evidence)
    assert "pg_cancel_backend" in result.remediation


def test_idle_in_transaction_names_the_session(migrated_url: str, sessions: list[Any]) -> None:
    conn = connect(migrated_url, sessions)
    conn.execute("SELECT 1")  # psycopg opened a transaction: now idle in it
    time.sleep(0.6)
    assert run(migrated_url, "server.idle_in_transaction").status == Status.OK
    result = run(migrated_url, "server.idle_in_transaction", warning="0.3s", critical="0.4s")
    assert result.status == Status.CRITICAL
    assert [e["pid"] for e in result.evidence] == [conn.info.backend_pid]


def test_blocked_session_names_its_blocker(migrated_url: str, sessions: list[Any]) -> None:
    sql(migrated_url, "CREATE TABLE t_lock (id int PRIMARY KEY)", "INSERT INTO t_lock VALUES (1)")
    blocker = connect(migrated_url, sessions)
    blocker.execute("UPDATE t_lock SET id = 1 WHERE id = 1")
    waiter = connect(migrated_url, sessions, autocommit=True)
    waiter.pgconn.send_query(b"UPDATE t_lock SET id = 2 WHERE id = 1")
    time.sleep(0.8)
    result = run(migrated_url, "server.blocked_sessions", warning="0.5s")
    assert result.status == Status.WARNING
    assert result.evidence[0]["pid"] == waiter.info.backend_pid
    assert [b["pid"] for b in result.evidence[0]["blocked_by"]] == [blocker.info.backend_pid]
    assert str(blocker.info.backend_pid) in result.message
    blocker.rollback()
    time.sleep(0.2)
    assert run(migrated_url, "server.blocked_sessions", warning="0.5s").status == Status.OK


def test_wraparound_ages_are_measured(migrated_url: str, sessions: list[Any]) -> None:
    """Billions of transactions cannot be made in a test: the real ages, against a threshold they pass."""
    assert run(migrated_url, "server.xid_wraparound").status == Status.OK
    result = run(migrated_url, "server.xid_wraparound", warning=1, critical=2**31)
    assert result.status == Status.WARNING and result.value and result.value > 1
    # A multixact: two sessions share a row lock.
    sql(migrated_url, "CREATE TABLE t_mx (id int PRIMARY KEY)", "INSERT INTO t_mx VALUES (1)")
    for _ in range(2):
        connect(migrated_url, sessions).execute("SELECT * FROM t_mx FOR SHARE")
    assert run(migrated_url, "server.multixact_wraparound").status == Status.OK
    assert run(migrated_url, "server.multixact_wraparound", warning=1).status == Status.WARNING


@pytest.fixture
def slot(migrated_url: str) -> Iterator[str]:
    name = f"t_health_{uuid.uuid4().hex[:8]}"
    sql(migrated_url, f"SELECT pg_create_physical_replication_slot('{name}', true)")
    try:
        yield name
    finally:
        sql(migrated_url, f"SELECT pg_drop_replication_slot('{name}')")


def test_replication_slot_holding_wal(migrated_url: str, slot: str) -> None:
    sql(migrated_url, "CREATE TABLE t_wal AS SELECT g FROM generate_series(1, 20000) g")
    result = run(migrated_url, "server.replication_slots", warning="16kB")
    assert result.status == Status.WARNING
    mine = [e for e in result.evidence if e["slot"] == slot]
    assert mine and mine[0]["active"] is False and mine[0]["retained_bytes"] >= 16 * 1024


@pytest.fixture
def receiver(migrated_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """pg_receivewal streaming from the test server: a real standby connection, stopped with SIGSTOP later."""
    try:
        tool = find_tool("pg_receivewal", server_version_num() // 10000)
    except Exception:
        pytest.skip("pg_receivewal is not installed for this server version")
    directory = Path(tempfile.mkdtemp(prefix="health-wal-"))
    info = psycopg.conninfo.conninfo_to_dict(migrated_url)
    info.pop("dbname", None)
    name = f"t_recv_{uuid.uuid4().hex[:8]}"
    sql(migrated_url, f"SELECT pg_create_physical_replication_slot('{name}', true)")
    process = subprocess.Popen([str(tool), "-D", str(directory), "-d", psycopg.conninfo.make_conninfo(**info),
                                "--no-loop", "--status-interval=1", f"--slot={name}"], stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(10)
        sql(migrated_url, f"SELECT pg_drop_replication_slot('{name}')")
        shutil.rmtree(directory, ignore_errors=True)


def test_replication_lag_of_a_stopped_standby(migrated_url: str, receiver: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        result = run(migrated_url, "server.replication_lag")
        if result.evidence:
            break
        time.sleep(0.2)
    assert result.evidence, "pg_receivewal never showed up in pg_stat_replication"
    os.kill(receiver.pid, signal.SIGSTOP)  # the standby stops confirming
    sql(migrated_url, "CREATE TABLE t_lag AS SELECT g, repeat('x', 200) FROM generate_series(1, 30000) g")
    result = run(migrated_url, "server.replication_lag", warning="1MB")
    assert result.status == Status.WARNING
    assert max(e["lag_bytes"] for e in result.evidence) >= 1024 * 1024


def test_cache_hit_ratio_below_the_threshold(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        # ~50 MB: written through the 16 MB bulk-write ring and scanned through the bulk-read ring (more than a
        # quarter of the default shared_buffers), so most pages come from outside shared buffers: real reads.
        conn.execute("CREATE TABLE t_read AS SELECT g FROM generate_series(1, 1500000) g")
        conn.execute("SELECT count(*) FROM t_read")
    assert run(migrated_url, "server.cache_hit_ratio").status == Status.OK  # too little I/O to judge
    result = run(migrated_url, "server.cache_hit_ratio", warning="99.99999%", critical="0%", min_blocks=1)
    assert result.status == Status.WARNING and result.value is not None and result.value < 1


def test_dead_tuples_and_stale_statistics(migrated_url: str) -> None:
    sql(migrated_url, "CREATE TABLE t_dead (id int, v int) WITH (autovacuum_enabled = false)",
        "INSERT INTO t_dead SELECT g, 0 FROM generate_series(1, 3000) g", "UPDATE t_dead SET v = 1")
    time.sleep(0.3)  # the writer's statistics are flushed when it disconnects
    assert run(migrated_url, "server.dead_tuples").status == Status.OK
    dead = run(migrated_url, "server.dead_tuples", min_rows=1000)
    assert dead.status == Status.CRITICAL
    assert dead.evidence[0]["table"] == "public.t_dead" and dead.evidence[0]["dead_tuples"] == 3000
    stale = run(migrated_url, "server.stale_statistics")
    assert stale.status == Status.WARNING and "public.t_dead" in [e["table"] for e in stale.evidence]
    off = run(migrated_url, "server.autovacuum")
    assert off.status == Status.WARNING
    assert off.evidence == [{"table": "public.t_dead", "problem": "autovacuum_enabled = false"}]
    with psycopg.connect(migrated_url, autocommit=True) as holder:
        holder.execute("ALTER TABLE t_dead RESET (autovacuum_enabled)")
        # Autovacuum skips a table it cannot lock: it must not clean t_dead while the check looks.
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE t_dead IN SHARE UPDATE EXCLUSIVE MODE")
        behind = run(migrated_url, "server.autovacuum", max_age="0s")  # past its trigger point, never vacuumed
        holder.execute("ROLLBACK")
    assert [(e["table"], e["dead_tuples"]) for e in behind.evidence] == [("public.t_dead", 3000)]
    sql(migrated_url, "VACUUM ANALYZE t_dead")
    time.sleep(0.3)
    assert run(migrated_url, "server.dead_tuples", min_rows=1000).status == Status.OK
    assert run(migrated_url, "server.autovacuum", max_age="0s").status == Status.OK
    assert "public.t_dead" not in [e["table"] for e in run(migrated_url, "server.stale_statistics").evidence]


def test_bloat_is_estimated_and_unknown_on_stale_statistics(migrated_url: str) -> None:
    sql(migrated_url, "CREATE TABLE t_bloat (id int PRIMARY KEY, pad text) WITH (autovacuum_enabled = false)",
        "INSERT INTO t_bloat SELECT g, repeat('x', 100) FROM generate_series(1, 40000) g")
    unknown = run(migrated_url, "server.table_bloat", min_size="1MB")
    assert unknown.status == Status.UNKNOWN  # never analysed: no estimate is trustworthy
    assert unknown.evidence[0]["table"] == "public.t_bloat" and "never analysed" in unknown.evidence[0]["unknown"]
    sql(migrated_url, "ANALYZE t_bloat")
    assert run(migrated_url, "server.table_bloat", min_size="1MB").status == Status.OK
    assert run(migrated_url, "server.index_bloat", min_size="512kB").status == Status.OK
    sql(migrated_url, "DELETE FROM t_bloat WHERE id % 10 <> 0")  # its statistics reach pgstat at disconnect
    time.sleep(0.3)
    sql(migrated_url, "VACUUM ANALYZE t_bloat")
    table = run(migrated_url, "server.table_bloat", min_size="1MB")
    assert table.status == Status.CRITICAL and table.evidence[0]["table"] == "public.t_bloat"
    assert table.evidence[0]["bloat_ratio"] > 0.8
    index = run(migrated_url, "server.index_bloat", min_size="512kB")
    assert index.status in (Status.WARNING, Status.CRITICAL) and index.evidence[0]["index"] == "public.t_bloat_pkey"


def test_unused_index_is_judged_only_on_old_enough_statistics(migrated_url: str) -> None:
    sql(migrated_url, "CREATE TABLE t_unused (id int, v int)",
        "INSERT INTO t_unused SELECT g, g FROM generate_series(1, 60000) g", "CREATE INDEX t_unused_v ON t_unused (v)")
    young = run(migrated_url, "server.unused_indexes")
    assert young.status == Status.UNKNOWN and young.evidence[0]["index"] == "public.t_unused_v"
    result = run(migrated_url, "server.unused_indexes", min_age=0)
    assert result.status == Status.WARNING and [e["index"] for e in result.evidence] == ["public.t_unused_v"]


def test_fk_covering_index_is_never_called_unused(migrated_url: str) -> None:
    """pghero #104: the index behind a foreign key is scanned only when a parent is deleted."""
    sql(migrated_url, "CREATE TABLE t_parent (id int PRIMARY KEY)",
        "CREATE TABLE t_child (id int, parent_id int REFERENCES t_parent)",
        "INSERT INTO t_parent SELECT generate_series(1, 60000)",
        "INSERT INTO t_child SELECT g, g FROM generate_series(1, 60000) g",
        "CREATE INDEX t_child_parent ON t_child (parent_id)")
    assert run(migrated_url, "server.unused_indexes", min_age=0).status == Status.OK


def test_duplicate_and_invalid_indexes(migrated_url: str) -> None:
    assert run(migrated_url, "server.duplicate_indexes").status == Status.OK
    sql(migrated_url, "CREATE INDEX t_dup ON public.tracks (album_id)",
        "CREATE INDEX t_prefix ON public.playlists (owner_user_id)",
        "CREATE INDEX t_longer ON public.playlists (owner_user_id, created_at)")
    found = {(e["index"], e["kind"]) for e in run(migrated_url, "server.duplicate_indexes").evidence}
    assert ("public.t_dup", "duplicate") in found
    assert ("public.t_prefix", "duplicate") in found  # of the foreign key's index
    assert ("public.t_prefix", "prefix") in found  # of t_longer
    assert all(not index.endswith("_pkey") for index, _ in found)

    assert run(migrated_url, "server.invalid_indexes").status == Status.OK
    sql(migrated_url, "CREATE TABLE t_inv (v int)", "INSERT INTO t_inv VALUES (1), (1)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        sql(migrated_url, "CREATE UNIQUE INDEX CONCURRENTLY t_inv_v ON t_inv (v)")
    result = run(migrated_url, "server.invalid_indexes")
    assert result.status == Status.WARNING and result.evidence[0]["index"] == "public.t_inv_v"


def test_identity_column_running_out(migrated_url: str) -> None:
    assert run(migrated_url, "server.sequence_exhaustion").status == Status.OK
    sql(migrated_url, "CREATE TABLE t_small (id smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int)",
        "ALTER TABLE t_small ALTER COLUMN id RESTART WITH 31000", "INSERT INTO t_small (v) VALUES (1)")
    result = run(migrated_url, "server.sequence_exhaustion")
    assert result.status == Status.CRITICAL
    assert result.evidence[0]["column"] == "public.t_small.id" and result.evidence[0]["limit"] == 32767
    locks = check_health(database_url=migrated_url, only=["server.sequence_exhaustion"]).locks
    assert locks == ["AccessShareLock"]


def test_risky_settings(migrated_url: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        fsync = conn.execute("SHOW fsync").fetchone()
    before = run(migrated_url, "server.risky_settings")
    assert (before.status == Status.CRITICAL) == (fsync == ("off",))
    database = psycopg.conninfo.conninfo_to_dict(migrated_url)["dbname"]
    sql(migrated_url, f'ALTER DATABASE "{database}" SET zero_damaged_pages = on')
    result = run(migrated_url, "server.risky_settings")
    assert result.status == Status.CRITICAL
    assert {"zero_damaged_pages"} <= {e["setting"] for e in result.evidence}
