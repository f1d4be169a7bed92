"""Erasing one person (agentdb.erase_user) and a queue of erasure requests, next to the plain-PostgreSQL way.

On a ``seed-demo`` database at head, whose ``analytics`` migration 007 has
partitioned by month (seed-demo writes past months, which land in the DEFAULT
partition: partition maintenance drains them into monthly partitions first,
untimed), with the rollback archive empty:

1. ``erase_user`` of 100 users, one at a time, the proof run separately:
   median and p99 of the erasure transaction (what the 200 ms goal is about)
   and of the whole call (connection, plan read from the catalogue, ledger);
2. the plain way a user would otherwise erase: ``DELETE FROM users WHERE id =
   ...`` and let ``ON DELETE`` do the rest, for 100 other users: its median
   and p99, and what its proof scan still finds afterwards (the e-mail in the
   audit log, for one);
3. the proof scan (every text column of every table in every schema) for one
   person, next to ``pg_dump --data-only | grep -F -i -c`` of the same values;
4. a queue of 1,000 erasure requests (pending in the ledger), processed by
   ``erase_users()``: one transaction each, one proof scan for the queue:
   users per second with and without the scan.

    .venv/bin/python benchmarks/bench_erasure.py [--scale large] [--analytics-rows N] [--full]
        [--users 100] [--queue 1000] [--database-url URL]

The default (``--scale large``: 10,000 users and 1,000,000 analytics rows)
runs in a few minutes; ``--full`` is the issue's scale, 10,000,000 analytics
rows.  Without ``--database-url`` the embedded server is used; a scratch
database is created and dropped.  Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from _scratch import drop, scratch

import agentdb
from agentdb import demo
from agentdb._pgtools import find_tool
from agentdb.connection import connect, create_engine, resolve
from agentdb.partitions import maintain_partitions
from agentdb.privacy import erase_user, erase_users
from agentdb.privacy import ledger as privacy_ledger
from agentdb.privacy.erase import _collect, _params, _session
from agentdb.privacy.plan import build_plan
from agentdb.privacy.proof import ProofValue, capture, scan
from agentdb.runtime.settings import RunSettings


def _partition(url: str) -> tuple[int, float]:
    """Drain analytics' DEFAULT partition into monthly partitions, as ``agentdb partitions maintain`` does (setup).

    Returns (partitions, seconds).
    """
    started = time.perf_counter()
    maintain_partitions(database_url=url, table="analytics")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        row = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'analytics'::regclass").fetchone()
    return int(row[0]) if row else 0, time.perf_counter() - started


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]
    return f"median {statistics.median(ordered) * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms"


def _values(url: str, user_id: int) -> list[ProofValue]:
    """The person's identifying values, as erasure captures them (in memory)."""
    target = resolve(url)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            plan = build_plan(connection)
            params = _params(privacy_ledger.pseudonym_key(connection), user_id)
            _session(connection, RunSettings())
            _collect(connection, plan, params)
            found = capture(connection, plan, params)
            connection.rollback()
            return found
    finally:
        engine.dispose()


def _scan(url: str, values: list[ProofValue]) -> tuple[float, int, int, int, dict[str, int]]:
    target = resolve(url)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            started = time.perf_counter()
            report = scan(connection, {0: values})[0]
            return time.perf_counter() - started, report.rows, report.bytes, report.hits, report.locations
    finally:
        engine.dispose()


def _grep(url: str, values: list[ProofValue], version: int) -> tuple[float, int]:
    """``pg_dump --data-only | grep -F -i -c -f patterns``: the plain way to search a database for values."""
    pg_dump = find_tool("pg_dump", version // 10000)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as patterns:
        patterns.write("\n".join(v.value for v in values) + "\n")
    started = time.perf_counter()
    dumped = subprocess.Popen([str(pg_dump), "--data-only", "--dbname", url], stdout=subprocess.PIPE)
    grep = subprocess.run(["grep", "-F", "-i", "-c", "-f", patterns.name], stdin=dumped.stdout,
                          capture_output=True, text=True)
    dumped.wait()
    elapsed = time.perf_counter() - started
    Path(patterns.name).unlink()
    return elapsed, int(grep.stdout.strip() or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", default="large", choices=sorted(demo.SCALES))
    parser.add_argument("--analytics-rows", type=int, default=None)
    parser.add_argument("--full", action="store_true", help="the issue's scale: 10,000,000 analytics rows")
    parser.add_argument("--users", type=int, default=100, help="users erased one at a time (and naively)")
    parser.add_argument("--queue", type=int, default=1000, help="erasure requests in the queue")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="a server URL whose role may CREATE DATABASE")
    args = parser.parse_args()
    rows = 10_000_000 if args.full else args.analytics_rows

    # A URL (not a conninfo string): the scratch database's URL is derived from it.
    server = resolve(args.database_url).url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(server) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int, version()").fetchone()
        assert row is not None
        version, banner = int(row[0]), str(row[1])
    print(f"server: {banner.split(',')[0]}")
    name, url = scratch(server)
    try:
        agentdb.upgrade(database_url=url)
        seeded = demo.seed_demo(args.scale, database_url=url, analytics_rows=rows, seed=args.seed)
        partitions, setup = _partition(url)
        print(f"database: seed-demo --scale {args.scale}: {seeded.users:,} users, {seeded.total_rows:,} rows "
              f"({seeded.analytics_rows:,} analytics rows) in {seeded.seconds:.0f} s; analytics in {partitions} "
              f"monthly partitions ({setup:.0f} s, setup, not timed)")
        with psycopg.connect(url) as conn:
            users = [int(r[0]) for r in conn.execute(
                "SELECT id FROM users u WHERE EXISTS (SELECT FROM analytics a WHERE a.user_id = u.id) ORDER BY id")]
        random.Random(args.seed).shuffle(users)
        count = min(args.users, len(users) // 4)
        queue = min(args.queue, len(users) - 2 * count - 1)
        single, naive, queued = users[:count], users[count:2 * count], users[2 * count:2 * count + queue]

        plan = erase_user(single[0], database_url=url, dry_run=True)
        print(f"\ndry run, user {single[0]}: {plan.rows:,} rows in {len(plan.changes)} tables; sequential scans: "
              f"{'; '.join(plan.seq_scans) or 'none'}")

        transaction, call, touched = [], [], []
        for user in single:
            started = time.perf_counter()
            report = erase_user(user, database_url=url, proof=False)
            call.append(time.perf_counter() - started)
            transaction.append(report.seconds)
            touched.append(report.rows)
        print(f"\nerase_user, {count} users one at a time (proof run separately, below):")
        print(f"  erasure transaction   {_ms(transaction)}   ({statistics.median(touched):.0f} rows per user)")
        print(f"  whole call            {_ms(call)}   (connect, plan from the catalogue, ledger, commit)")

        leftover = _values(url, naive[0])
        plain = []
        with psycopg.connect(url, autocommit=True) as conn:
            for user in naive:
                started = time.perf_counter()
                with conn.transaction():
                    conn.execute("DELETE FROM users WHERE id = %s", (user,))
                plain.append(time.perf_counter() - started)
        seconds, scanned, size, hits, where = _scan(url, leftover)
        print(f"plain DELETE FROM users WHERE id = ..., {count} other users (ON DELETE does the rest):")  # noqa: S608
        print(f"  one transaction each  {_ms(plain)}")
        print(f"  left behind for one of them: {hits} cell(s) with their identifying values "
              f"({', '.join(f'{k}: {v}' for k, v in where.items()) or 'none'})")

        values = _values(url, queued[0])
        seconds, scanned, size, hits, _ = _scan(url, values)
        grep_seconds, _ = _grep(url, values, version)
        print(f"\nproof scan of one person ({len(values)} values): {seconds:.2f} s for {scanned:,} rows, "
              f"{size / 1e6:,.0f} MB of text")
        print(f"  pg_dump --data-only | grep -F -i -c -f values: {grep_seconds:.2f} s")

        target = resolve(url)
        engine = create_engine(target)
        try:
            with connect(engine, target) as connection:
                for user in queued:
                    privacy_ledger.open_request(connection, "erasure", user)
                connection.commit()
        finally:
            engine.dispose()
        started = time.perf_counter()
        reports = erase_users(database_url=url)
        wall = time.perf_counter() - started
        proof = next((r.proof.seconds for r in reports if r.proof), 0.0)
        done = sum(r.status == "done" for r in reports)
        print(f"\nqueue of {len(reports):,} erasure requests (erase_users: one transaction each, one proof scan): "
              f"{wall:.1f} s, {done:,} done")
        print(f"  {len(reports) / wall:,.1f} users/s with the proof scan ({proof:.1f} s); "
              f"{len(reports) / max(wall - proof, 1e-9):,.1f} users/s without it")
        print(f"  per erasure transaction: {_ms([r.seconds for r in reports])}")
        for report in reports:
            if report.status != "done":  # where, never what
                where = report.proof.locations if report.proof else {}
                print(f"  not done: user {report.user_id}: {report.status} "
                      f"{', '.join(f'{k}: {v}' for k, v in where.items()) or report.error or ''}")
    finally:
        drop(server, name)


if __name__ == "__main__":
    main()
