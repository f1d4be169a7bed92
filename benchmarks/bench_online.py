"""Zero-downtime changes of a big table while writers write: agentdb's online kinds against the plain ALTER TABLE
and pg_repack.

A plain table shaped like ``analytics`` (bigint identity key, user, event type, JSON properties, time, and an
``integer`` column ``ms``) is filled with ``--rows`` rows (2,000,000; ``--large``: 10,000,000) on the server
under test.  Two writer threads insert and update it the whole time, each transaction timed; every
acknowledged insert and update is remembered.  Then, one after another on the same table:

``capture``
    insert latency with the capture trigger installed (a type change started and held before its copy by a
    throttle) against the same inserts without it;
``type online``
    ``alter_column_type`` of ``ms`` integer -> bigint (every row rewritten): capture, batched copy, verify,
    short cut-over; and back (bigint -> integer) for the next method;
``type plain``
    ``ALTER TABLE ... ALTER COLUMN ms TYPE bigint``: one rewrite under ACCESS EXCLUSIVE;
``pg_repack`` (PostgreSQL 15 with Debian's ``postgresql-15-repack``)
    ``pg_repack --table``: the same rewrite by the usual tool (a full copy, log table, swap);
``column online``
    ``add_column`` with a backfill expression and NOT NULL: batched backfill, validated check, SET NOT NULL;
``column plain``
    ``ALTER TABLE ADD COLUMN``, one ``UPDATE`` of every row, ``SET NOT NULL``, in one transaction.

Printed per method: time; rows/s over the whole change; for the online kinds also the rows/s of the batched
phase alone (``copy`` or ``backfill``, from the change's recorded phase timings); writers' p50/p99/max latency
during (next to before), and for the online kinds the writers' worst wait while the batches ran (the cut-over's
lock attempts, up to ``lock_timeout`` each, are outside it); the longest ACCESS EXCLUSIVE hold (agentdb's
measured cut-over hold; for the others the writers' max stall is the figure); acknowledged writes missing
afterwards.  ``--scales`` also prints the online kinds' rows/s at each size (no writers).  The load average
(``os.getloadavg``) is printed at the start and the end, with the server's version and ``fsync``; ``--json
FILE`` writes every figure for a script that takes medians over runs.

    .venv/bin/python benchmarks/bench_online.py --database-url URL [--rows N | --large] [--scales 100000,2000000]

Figures only, no assertion.  The machine is shared and loaded by other work: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from _scratch import drop, scratch

from agentdb import online
from agentdb.online import OnlineSettings

TABLE = "bench_events"
REPACK = "/usr/lib/postgresql/15/bin/pg_repack"


@dataclass
class Writers:
    url: str
    count: int = 2
    stop: threading.Event = field(default_factory=threading.Event)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (start, wall clock; seconds)
    inserted: set[int] = field(default_factory=set)
    updated: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(self.count)]
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _run(self, n: int) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="bench-writer") as conn:
            step = 0
            while not self.stop.is_set():
                step += 1
                began, clock = time.monotonic(), time.time()
                try:
                    if step % 2:
                        row = conn.execute("INSERT INTO bench_events (user_id, event_type, properties, ms) "
                                           "VALUES (%s, 'play', '{\"ms_played\": 1}', 1) RETURNING id",
                                           (n,)).fetchone()
                        assert row is not None
                        with self.lock:
                            self.inserted.add(int(row[0]))
                    else:
                        key = 1 + (step * 7919 + n) % 100_000
                        conn.execute("UPDATE bench_events SET user_id = %s WHERE id = %s", (step, key))
                        with self.lock:
                            self.updated[key] = step
                except psycopg.Error as exc:
                    self.errors.append(str(exc).splitlines()[0])
                with self.lock:
                    self.latencies.append((clock, time.monotonic() - began))
                time.sleep(0.002)

    def window(self, start: float, end: float) -> list[float]:
        with self.lock:
            return [s for began, s in self.latencies if start <= began < end]

    def lost(self) -> int:
        with psycopg.connect(self.url) as conn:
            present = {r[0] for r in conn.execute("SELECT id FROM bench_events WHERE id = ANY(%s)",
                                                  (sorted(self.inserted),))}
            wrong = sum(1 for key, value in self.updated.items() if conn.execute(
                "SELECT user_id FROM bench_events WHERE id = %s", (key,)).fetchone() not in ((value,), None))
        return len(self.inserted - present) + wrong


def stats(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"{statistics.median(values) * 1000:.1f}/{p99 * 1000:.1f}/{values[-1] * 1000:.0f} ms"


def fill(url: str, rows: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_events")
        conn.execute("CREATE TABLE bench_events (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                     "user_id bigint, event_type text NOT NULL, properties jsonb NOT NULL DEFAULT '{}', "
                     "created_at timestamptz NOT NULL DEFAULT now(), ms integer)")
        conn.execute("INSERT INTO bench_events (user_id, event_type, properties, created_at, ms) "
                     "SELECT g %% 10000, (ARRAY['play','skip','search'])[1 + g %% 3], "
                     "jsonb_build_object('ms_played', g %% 300000), now() - make_interval(secs => g), g %% 300000 "
                     "FROM generate_series(1, %s) g", (rows,))
        conn.execute("CREATE INDEX bench_events_user_id_idx ON bench_events (user_id)")
        conn.execute("ANALYZE bench_events")


def timed(label: str, writers: Writers, work: Any, rows: int, results: list[dict[str, Any]]) -> Any:
    before = time.time()
    time.sleep(1.0)
    start = time.time()
    outcome = work()
    end = time.time()
    time.sleep(0.5)
    batched = phase_seconds(outcome)
    window = phase_window(outcome)
    results.append({"method": label, "seconds": end - start, "rows_per_s": rows / (end - start),
                    "phase_rows_per_s": rows / batched if batched else None,
                    "before": stats(writers.window(before, start)), "during": stats(writers.window(start, end)),
                    "max_ms": max(writers.window(start, end) or [0.0]) * 1000,
                    # the writers' worst wait while batches ran (the cut-over's lock waits are not in it)
                    "batched_max_ms": max(writers.window(*window) or [0.0]) * 1000 if window else None,
                    "hold_ms": getattr(outcome, "lock_hold_ms", None), "load": load()})
    print(f"  {label}: {end - start:.1f} s" + (f" (batched phase {batched:.1f} s)" if batched else "")
          + f"; load {load()}", flush=True)
    return outcome


def phase_seconds(outcome: Any) -> float | None:
    """Seconds of an online change's batched phase (copy or backfill), from its recorded timings."""
    timings = getattr(outcome, "timings", None) or {}
    for phase in ("copy", "backfill"):
        seconds = (timings.get(phase) or {}).get("seconds")
        if seconds:
            return float(seconds)
    return None


def phase_window(outcome: Any) -> tuple[float, float] | None:
    """Start and end (wall clock) of an online change's batched phase, from its recorded timings."""
    timings = getattr(outcome, "timings", None) or {}
    for phase in ("copy", "backfill"):
        found = timings.get(phase) or {}
        if found.get("started_at") and found.get("finished_at"):
            return (datetime.fromisoformat(found["started_at"]).timestamp(),
                    datetime.fromisoformat(found["finished_at"]).timestamp())
    return None


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def capture_cost(url: str, rows: int) -> tuple[str, str]:
    """Insert latency (p50/p99/max) without, then with, the capture trigger (change held before its copy)."""
    def inserts() -> list[float]:
        out = []
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(1500):
                began = time.monotonic()
                conn.execute("INSERT INTO bench_events (event_type, ms) VALUES ('play', 1)")
                out.append(time.monotonic() - began)
        return out

    without = inserts()
    held = OnlineSettings(throttle_sql="true", throttle_poll=0.2)
    thread = threading.Thread(target=lambda: _quiet(lambda: online.start(
        TABLE, "alter_column_type", database_url=url, settings=held, column="ms", type="bigint")), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not any(s.phase == "copy" for s in online.status(database_url=url)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with_capture = inserts()
    online.abort(TABLE, database_url=url)
    thread.join(timeout=60)
    return stats(without), stats(with_capture)


def _quiet(work: Any) -> None:
    try:
        work()
    except Exception:  # the abort ends it
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="server to create scratch databases on")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--large", action="store_true", help="10,000,000 rows")
    parser.add_argument("--scales", default="", help="comma-separated sizes for backfill rows/s (e.g. 100000,2000000)")
    parser.add_argument("--no-repack", action="store_true")
    parser.add_argument("--batch-seconds", type=float, default=OnlineSettings().batch_seconds,
                        help="the online kinds' target batch time: a writer touching a row of the batch in flight "
                             "waits up to this long (default: the engine's)")
    parser.add_argument("--batch-synchronous-commit", default=OnlineSettings().batch_synchronous_commit,
                        help="synchronous_commit of the online kinds' batches (default: the engine's)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args()
    report: dict[str, Any] = {"load_start": load()}
    rows = 10_000_000 if args.large else args.rows
    name, url = scratch(args.database_url)
    try:
        with psycopg.connect(url) as conn:
            version = conn.execute("SELECT current_setting('server_version'), current_setting('fsync')").fetchone()
        assert version is not None
        report.update(server=version[0], fsync=version[1], rows=rows, batch_seconds=args.batch_seconds)
        print(f"PostgreSQL {version[0]} (fsync {version[1]}); {rows:,} rows; 2 writers; load average "
              f"{report['load_start']} (machine shared)")
        fill(url, rows)
        without, with_capture = capture_cost(url, rows)
        print(f"insert p50/p99/max without capture {without}; with the capture trigger {with_capture}")
        report.update(insert_without_capture=without, insert_with_capture=with_capture)
        writers = Writers(url)
        writers.start()
        results: list[dict[str, Any]] = []
        settings = OnlineSettings(batch_seconds=args.batch_seconds,
                                  batch_synchronous_commit=args.batch_synchronous_commit)
        report["batch_synchronous_commit"] = args.batch_synchronous_commit
        print(f"online batch time target {args.batch_seconds:g} s, synchronous_commit {args.batch_synchronous_commit}")
        timed("type online (int->bigint)", writers, lambda: online.start(
            TABLE, "alter_column_type", database_url=url, settings=settings, column="ms", type="bigint"),
            rows, results)
        with psycopg.connect(url) as conn:  # back, plainly, for the next method (not timed)
            conn.execute("ALTER TABLE bench_events ALTER COLUMN ms TYPE integer")

        def plain_type() -> None:
            with psycopg.connect(url) as conn:
                conn.execute("ALTER TABLE bench_events ALTER COLUMN ms TYPE bigint")

        timed("type plain ALTER TABLE", writers, plain_type, rows, results)
        repack = shutil.which("pg_repack") or (REPACK if os.path.exists(REPACK) else None)
        if repack and not args.no_repack:
            try:
                with psycopg.connect(url) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_repack")
                parsed = sa.make_url(url)
                host = parsed.query.get("host") or parsed.host or ""

                def run_repack() -> None:
                    done = subprocess.run([repack, "--no-order", "-t", TABLE, "-d", str(parsed.database), "-h",
                                           str(host), "-U", str(parsed.username or "postgres")],
                                          capture_output=True, text=True)
                    if done.returncode != 0:
                        print("  pg_repack failed:", done.stderr.strip()[:300])

                timed("pg_repack (same rewrite)", writers, run_repack, rows, results)
            except psycopg.Error as exc:
                print("pg_repack not available here:", str(exc).splitlines()[0])
        timed("column online (backfill, NOT NULL)", writers, lambda: online.start(
            TABLE, "add_column", database_url=url, settings=settings, column="played", type="integer",
            backfill="(properties->>'ms_played')::int", server_default="0", nullable=False), rows, results)

        def plain_column() -> None:
            with psycopg.connect(url) as conn:
                conn.execute("ALTER TABLE bench_events ADD COLUMN played2 integer DEFAULT 0")
                conn.execute("UPDATE bench_events SET played2 = coalesce((properties->>'ms_played')::int, 0)")
                conn.execute("ALTER TABLE bench_events ALTER COLUMN played2 SET NOT NULL")

        timed("column plain (ADD, UPDATE, SET NOT NULL)", writers, plain_column, rows, results)
        writers.finish()
        lost = writers.lost()
        print()
        print(f"{'method':<42} {'time':>8} {'rows/s':>10} {'batched':>10}  {'writers p50/p99/max before':>28}  "
              f"{'during':>24}  {'max in batches':>14}  {'AEL hold':>9}")
        for r in results:
            hold = f"{r['hold_ms']:.0f} ms" if r["hold_ms"] is not None else "-"
            phase = f"{r['phase_rows_per_s']:,.0f}" if r["phase_rows_per_s"] else "-"
            in_batches = f"{r['batched_max_ms']:.0f} ms" if r["batched_max_ms"] is not None else "-"
            print(f"{r['method']:<42} {r['seconds']:>7.1f}s {r['rows_per_s']:>10,.0f} {phase:>10}  "
                  f"{r['before']:>28}  {r['during']:>24}  {in_batches:>14}  {hold:>9}")
        print(f"acknowledged writes: {len(writers.inserted):,} inserts, {len(writers.updated):,} rows updated; "
              f"missing or stale afterwards: {lost}; writer errors: {len(writers.errors)}")
        report.update(results=results, inserts=len(writers.inserted), updates=len(writers.updated), lost=lost,
                      writer_errors=len(writers.errors))
        scales = report.setdefault("scales", [])
        for size in [int(s) for s in args.scales.split(",") if s]:
            for kind, options in (("alter_column_type", {"column": "ms", "type": "bigint"}),
                                  ("add_column", {"column": "played", "type": "integer",
                                                  "backfill": "(properties->>'ms_played')::int"})):
                fill(url, size)
                started = time.monotonic()
                outcome = online.start(TABLE, kind, database_url=url, settings=settings, **options)
                seconds = time.monotonic() - started
                batched = phase_seconds(outcome)
                scales.append({"kind": kind, "rows": size, "seconds": seconds, "rows_per_s": size / seconds,
                               "phase_rows_per_s": size / batched if batched else None, "load": load()})
                print(f"{kind} at {size:,} rows: {seconds:.1f} s, {size / seconds:,.0f} rows/s; batched phase "
                      f"{size / batched if batched else 0:,.0f} rows/s (no writers; load {load()})", flush=True)
    finally:
        drop(args.database_url, name)
        report["load_end"] = load()
        print(f"load average at the end {report['load_end']}")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
