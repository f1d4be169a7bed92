"""How long `agentdb health` takes on a large database, and what Debian's check_postgres does on the same one.

1. A database at head filled by ``seed-demo --scale large`` (10,000 users, 1,000,000 analytics rows), with
   ``analytics`` partitioned by month (migration 007 when it exists, else ``agentdb.online.start``) and managed
   by partition maintenance: the default run of ``check_health()``, median of ``--runs`` runs, and the wall
   time of the ``agentdb health`` command once.
2. The same database plus ``bench_events``: a managed table with 1,000 monthly partitions, each with an
   index: the same measurements.
3. check_postgres (``apt-get install check-postgres``): every action that can run against one database
   without a data directory, file system or second server, run once each against the same database, timed;
   then the list of its actions with what covers each in agentdb, or why nothing does.

    .venv/bin/python benchmarks/bench_health.py --server postgresql://postgres@/postgres?host=/tmp/pgdev/sock
    .venv/bin/python benchmarks/bench_health.py --server URL --reuse health_large   # skip building

Figures only, no assertion.  The database is dropped at the end unless ``--keep`` (or ``--reuse``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import agentdb  # noqa: E402
from agentdb.health import check_health  # noqa: E402
from agentdb.partitions import managed_tables, naming, register  # noqa: E402

#: check_postgres action -> (extra arguments, the agentdb check ids that cover it, or "" and why not).
ACTIONS: dict[str, tuple[list[str] | None, str, str]] = {
    "backends": ([], "server.connections", ""),
    "txn_idle": (["--warning=60", "--critical=600"], "server.idle_in_transaction", ""),
    "txn_time": (["--warning=300", "--critical=1800"], "server.idle_in_transaction, server.long_running_queries",
                 ""),
    "query_time": (["--warning=300", "--critical=1800"], "server.long_running_queries", ""),
    "locks": ([], "server.blocked_sessions", "agentdb names each waiter and its blocker instead of counting locks"),
    "txn_wraparound": ([], "server.xid_wraparound", ""),
    "autovac_freeze": ([], "server.xid_wraparound, server.multixact_wraparound", ""),
    "hitratio": ([], "server.cache_hit_ratio", ""),
    "bloat": ([], "server.table_bloat, server.index_bloat",
              "agentdb says unknown when the statistics are too stale to trust (check_postgres #40)"),
    "last_vacuum": ([], "server.autovacuum, server.dead_tuples",
                    "judged by dead tuples past autovacuum's trigger point, not by the age alone"),
    "last_autovacuum": ([], "server.autovacuum, server.dead_tuples", "same"),
    "last_analyze": ([], "server.stale_statistics", "judged by rows changed since, not by age"),
    "last_autoanalyze": ([], "server.stale_statistics", "same"),
    "replication_slots": (["--warning=1GB", "--critical=10GB"], "server.replication_slots", ""),
    "hot_standby_delay": (None, "server.replication_lag", "check_postgres needs the standby's address too"),
    "sequence": ([], "server.sequence_exhaustion", "agentdb also knows the column type behind the sequence"),
    "disabled_triggers": ([], "schema.audit_triggers, schema.guard_triggers, schema.updated_at_triggers, "
                          "schema.triggers_drift", "agentdb also finds missing and changed triggers"),
    "same_schema": (None, "schema.tables_drift, schema.functions_drift, schema.grants_drift",
                    "agentdb compares with its declaration; check_postgres with a second database"),
    "connection": ([], "(every run)", "a run that cannot connect exits 3"),
    "settings_checksum": (None, "server.risky_settings",
                          "agentdb judges dangerous values; check_postgres any change (needs a stored checksum)"),
    "prepared_txns": ([], "", "not covered: agentdb never prepares transactions (max_prepared_transactions = 0)"),
    "commitratio": ([], "", "not covered: a rollback ratio describes the application, not the database"),
    "database_size": (["--warning=500GB", "--critical=1TB"], "", "not covered: size limits are capacity "
                      "planning, site-specific"),
    "table_size": (["--warning=50GB", "--critical=100GB"], "", "not covered: capacity planning"),
    "relation_size": (["--warning=50GB", "--critical=100GB"], "", "not covered: capacity planning"),
    "index_size": (["--warning=50GB", "--critical=100GB"], "", "not covered: capacity planning"),
    "indexes_size": (["--warning=50GB", "--critical=100GB"], "", "not covered: capacity planning"),
    "total_relation_size": (["--warning=50GB", "--critical=100GB"], "", "not covered: capacity planning"),
    "timesync": ([], "", "not covered: host clock, not the database"),
    "version": (None, "", "not covered: agentdb supports 14+ and says so at connect"),
    "checkpoint": (None, "", "not covered: needs the data directory (pg_controldata) on the same host"),
    "archive_ready": (None, "", "not covered: needs superuser file access to pg_wal/archive_status"),
    "wal_files": (None, "", "not covered: needs superuser file access to pg_wal"),
    "disk_space": (None, "", "not covered: file-system level, for the host's monitoring"),
    "logfile": (None, "", "not covered: file-system level"),
    "custom_query": (None, "", "not applicable: agentdb's checks are code, with tests"),
    "query_runtime": (None, "", "not applicable: times one named query"),
    "dbstats": (None, "", "not applicable: Cacti output only"),
    "fsm_pages": (None, "", "obsolete: PostgreSQL 8.3 and older"),
    "fsm_relations": (None, "", "obsolete: PostgreSQL 8.3 and older"),
    "cluster_id": (None, "", "not covered: detects a replaced cluster (needs the expected id)"),
    "listener": (None, "", "not applicable: LISTEN channels"),
    "replicate_row": (None, "", "not applicable: needs two servers and a test row"),
    "slony_status": (None, "", "not applicable: Slony"),
    "pgagent_jobs": (None, "", "not applicable: pgAgent"),
    "pgbouncer_*, pgb_pool_* (10)": (None, "", "not applicable: PgBouncer"),
    "new_version_* (6)": (None, "", "not applicable: network look-ups of release numbers"),
}


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _url(server: str, database: str) -> str:
    return sa.make_url(server).set(database=database).render_as_string(hide_password=False)


def _build(server: str, database: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = _url(server, database)
    started = time.perf_counter()
    agentdb.upgrade(database_url=url)
    agentdb.seed_demo("large", database_url=url)
    with psycopg.connect(url) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'public.analytics'::regclass").fetchone()
    if kind != ("p",):
        from agentdb import online

        online.start("analytics", "partition", database_url=url)
    print(f"built {database}: upgrade, seed-demo large, analytics partitioned in {time.perf_counter() - started:.0f} s")


def _ensure_managed(url: str) -> None:
    with psycopg.connect(url) as conn:
        if not any(m.table == "analytics" for m in managed_tables(conn)):
            register(conn, "analytics", "created_at", 4)
        conn.commit()
        conn.execute("ANALYZE")
        conn.commit()


def _thousand_partitions(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('public.bench_events')").fetchone() != (None,):
            return
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        conn.execute("CREATE TABLE bench_events (id bigint NOT NULL, user_id bigint, created_at timestamptz NOT NULL) "
                     "PARTITION BY RANGE (created_at)")
        conn.execute("CREATE INDEX ON bench_events (user_id)")
        first = naming.add_months(now, -995)
        for batch in range(0, 1000, 100):  # 100 partitions per transaction: bounded lock-table use
            with conn.transaction():
                for k in range(batch, batch + 100):
                    start = naming.add_months(first, k)
                    conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF bench_events FOR VALUES FROM ({}) TO ({})")
                                 .format(sql.Identifier(naming.partition_name("bench_events", start)),
                                         sql.Literal(start), sql.Literal(naming.add_months(start, 1))))
        conn.execute("CREATE TABLE bench_events_default PARTITION OF bench_events DEFAULT")
        conn.execute("INSERT INTO bench_events SELECT g, NULL, now() - (g % 3000) * interval '1 day' "
                     "FROM generate_series(1, 100000) g")
        conn.execute("ANALYZE bench_events")
    with psycopg.connect(url) as conn:
        register(conn, "bench_events", "created_at", 4)
        conn.commit()


def _measure(url: str, runs: int, label: str) -> dict[str, Any]:
    check_health(database_url=url)  # warm: imports, the migration scripts
    times, reports = [], []
    for _ in range(runs):
        started = time.perf_counter()
        reports.append(check_health(database_url=url))
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    cli = subprocess.run([str(ROOT / ".venv/bin/agentdb"), "--database-url", url, "health", "--json"],
                         capture_output=True, text=True)
    cli_seconds = time.perf_counter() - started
    report = reports[-1]
    slowest = sorted(report.results, key=lambda r: -r.seconds)[:3]
    print(f"\n{label}: {len(report.results)} checks")
    print(f"  check_health(): median {statistics.median(times):.2f} s, max {max(times):.2f} s over {runs} runs "
          f"(load average {_load()})")
    print(f"  `agentdb health --json` (a new process, imports included): {cli_seconds:.2f} s, exit {cli.returncode}")
    print(f"  status {report.status.label} {report.counts()}; locks held: {', '.join(report.locks)}")
    print("  slowest checks: " + ", ".join(f"{r.id} {r.seconds:.2f} s" for r in slowest))
    print("  not ok: " + "; ".join(f"{r.id}: {r.message[:70]}" for r in report.sorted() if r.status.label != "ok"))
    return {"median": statistics.median(times), "max": max(times), "cli": cli_seconds}


def _check_postgres(url: str) -> list[tuple[str, str, str, float | None, str]]:
    tool = shutil.which("check_postgres") or shutil.which("check_postgres.pl")
    parsed = sa.make_url(url)
    host = parsed.query.get("host") or parsed.host or "localhost"
    base = [f"--dbhost={host}", f"--dbname={parsed.database}", f"--dbuser={parsed.username or 'postgres'}"]
    if parsed.port:
        base.append(f"--dbport={parsed.port}")
    rows = []
    for action, (args, covered, why) in ACTIONS.items():
        seconds: float | None = None
        status = "not run"
        if args is not None and tool is not None:
            started = time.perf_counter()
            done = subprocess.run([tool, f"--action={action}", *base, *args], capture_output=True, text=True,
                                  timeout=300)
            seconds = time.perf_counter() - started
            status = (done.stdout.strip().splitlines() or [done.stderr.strip() or "?"])[0].split(":")[0][:28]
        rows.append((action, covered, why, seconds, status))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="URL of a role that may CREATE DATABASE")
    parser.add_argument("--reuse", help="an existing database built by this script (not dropped)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    options = parser.parse_args()
    database = options.reuse or f"bench_health_{uuid.uuid4().hex[:8]}"
    url = _url(options.server, database)
    with psycopg.connect(options.server) as conn:
        print("server:", conn.execute("SELECT version()").fetchone()[0])  # type: ignore[index]
    print(f"machine: {os.cpu_count()} cores, load average {_load()} (shared with other work: figures vary)")
    try:
        if not options.reuse:
            _build(options.server, database)
        _ensure_managed(url)
        with psycopg.connect(url) as conn:
            partitions = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = "
                                      "'public.analytics'::regclass").fetchone()[0]  # type: ignore[index]
        first = _measure(url, options.runs, f"seed-demo large, analytics partitioned ({partitions} partitions)")
        _thousand_partitions(url)
        second = _measure(url, options.runs, "the same + bench_events with 1,000 partitions (+1,000 indexes)")
        rows = _check_postgres(url)
        ran = [r for r in rows if r[3] is not None]
        covered_time = sum(r[3] or 0.0 for r in ran if r[1])
        tool = shutil.which("check_postgres") or shutil.which("check_postgres.pl") or "check_postgres"
        version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip()
        total = sum(r[3] or 0.0 for r in ran)
        print(f"\n{version}: {len(ran)} actions run once each, {total:.2f} s in all "
              f"({covered_time:.2f} s for those agentdb covers)")
        print(f"agentdb default run: {first['median']:.2f} s (1,000 partitions: {second['median']:.2f} s)")
        print(f"load average at the end: {_load()}\n")
        print("| check_postgres action | time | its status here | agentdb | note |")
        print("| --- | --- | --- | --- | --- |")
        for action, covered, why, seconds, status in rows:
            shown = f"{seconds:.2f} s" if seconds is not None else "not run"
            print(f"| `{action}` | {shown} | {status if seconds is not None else ''} | "
                  f"{covered or 'no'} | {why} |")
    finally:
        if not options.reuse and not options.keep:
            with psycopg.connect(options.server, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


if __name__ == "__main__":
    main()
