"""Migration 011 reverted and applied online on ``seed-demo --scale large`` while writers insert, update and delete
analytics; next to the plain ``CREATE INDEX`` a user would otherwise run, in the same run.

A scratch database on the server under test is upgraded to head and filled by ``agentdb seed-demo --scale large``
(1,000,000 analytics rows over two years of month partitions; ``--analytics-rows`` changes that).  A trigger on
``analytics`` mirrors every committed write into a reference table, so the reference always holds exactly what
analytics should hold.  Three writer threads then insert, update and delete analytics rows the whole time, each
transaction timed.  With them running, one after another:

``downgrade 010``
    011's downgrade: the index dropped online (kind ``drop_index``);
``upgrade 011``
    011: the ``(event_type, created_at)`` index built ``CONCURRENTLY`` partition by partition, then attached;
``plain CREATE INDEX``
    the same index by ``CREATE INDEX`` on the partitioned table (the way without agentdb: PostgreSQL cannot build
    a partitioned table's index ``CONCURRENTLY``), then dropped again, and 011 applied once more.

Printed per step: time, the writers' p50/p99/max latency during it (and before), their failed transactions, and
at the end the rows of analytics and of the reference compared by ``EXCEPT ALL`` both ways (``lost`` and
``extra``), the index valid, no INVALID index, no online change unfinished.  The load average is printed with each
step: the machine is shared, compare within one run.

    .venv/bin/python benchmarks/bench_011.py --database-url URL [--analytics-rows N] [--keep]

Figures only, no assertion; the exit code is 1 when a row was lost or added, or the index is not valid.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from _scratch import drop, scratch
from bench_online import load, stats

ROOT = Path(__file__).resolve().parents[1]
INDEX = "analytics_event_type_created_at_idx"
MIRROR = """
CREATE SCHEMA bench_ref;
CREATE TABLE bench_ref.analytics AS SELECT id, created_at, event_type, properties, user_id FROM public.analytics;
CREATE UNIQUE INDEX ON bench_ref.analytics (id, created_at);
CREATE FUNCTION bench_ref.mirror() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    DELETE FROM bench_ref.analytics WHERE id = OLD.id AND created_at = OLD.created_at;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO bench_ref.analytics VALUES (NEW.id, NEW.created_at, NEW.event_type, NEW.properties, NEW.user_id);
  END IF;
  RETURN NULL;
END$$;
CREATE TRIGGER bench_mirror AFTER INSERT OR UPDATE OR DELETE ON public.analytics
  FOR EACH ROW EXECUTE FUNCTION bench_ref.mirror();
"""


class Writers:
    """Threads inserting, updating and deleting analytics rows, every transaction timed."""

    def __init__(self, url: str, count: int = 3) -> None:
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latencies: list[tuple[float, float]] = []
        self.failures: list[str] = []
        self.commits = 0
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(count)]

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _run(self, n: int) -> None:
        rng = random.Random(n)
        with psycopg.connect(self.url, autocommit=True, application_name="bench-011-writer") as conn:
            top = int(conn.execute("SELECT max(id) FROM analytics").fetchone()[0] or 1)  # type: ignore[index]
            while not self.stop.is_set():
                began = time.monotonic()
                action = rng.random()
                try:
                    if action < 0.6:
                        conn.execute("INSERT INTO analytics (user_id, event_type, properties, device) VALUES "
                                     "(NULL, 'play', jsonb_build_object('ms_played', %s::int), 'mobile')",
                                     (rng.randrange(300_000),))
                    elif action < 0.9:
                        conn.execute("UPDATE analytics SET properties = properties || jsonb_build_object('n', %s::int) "
                                     "WHERE id = %s", (rng.randrange(1000), rng.randrange(1, top)))
                    else:
                        conn.execute("DELETE FROM analytics WHERE id = %s", (rng.randrange(1, top),))
                    with self.lock:
                        self.commits += 1
                except psycopg.Error as exc:
                    with self.lock:
                        self.failures.append(type(exc).__name__)
                with self.lock:
                    self.latencies.append((began, time.monotonic() - began))
                time.sleep(0.002)

    def window(self, start: float, end: float) -> list[float]:
        with self.lock:
            return [seconds for began, seconds in self.latencies if start <= began < end]


def scalar(url: str, query: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


def agentdb(url: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "agentdb", "--database-url", url, *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def step(label: str, writers: Writers, work: Callable[[], object], rows: list[list[str]]) -> None:
    before = time.monotonic()
    time.sleep(1.0)
    start = time.monotonic()
    failed = len(writers.failures)
    work()
    end = time.monotonic()
    time.sleep(0.5)
    rows.append([label, f"{end - start:.1f} s", stats(writers.window(start, end)),
                 stats(writers.window(before, start)), str(len(writers.failures) - failed), load()])
    print(f"  {label}: {end - start:.1f} s; load {load()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="server to create the scratch database on")
    parser.add_argument("--analytics-rows", type=int, default=None, help="analytics rows (large: 1,000,000)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    name, url = scratch(args.database_url)
    print(f"server {scalar(url, 'SHOW server_version')}, scratch database {name}; load {load()}", flush=True)
    try:
        started = time.monotonic()
        agentdb(url, "upgrade")
        extra = ["--analytics-rows", str(args.analytics_rows)] if args.analytics_rows is not None else []
        agentdb(url, "seed-demo", "--scale", "large", *extra)
        with psycopg.connect(url) as conn:
            conn.execute(MIRROR)
            conn.execute("ANALYZE")
        rows = int(scalar(url, "SELECT count(*) FROM analytics"))
        parts = int(scalar(url, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'analytics'::regclass"))
        print(f"seed-demo --scale large: {rows:,} analytics rows in {parts} partitions, "
              f"{time.monotonic() - started:.0f} s with the upgrade", flush=True)

        import agentdb as api

        table: list[list[str]] = []
        with Writers(url) as writers:
            step("011 downgrade (drop_index online)", writers,
                 lambda: api.migrate.downgrade("010", database_url=url), table)
            step("011 upgrade (create_index online)", writers, lambda: api.upgrade("011", database_url=url), table)
            step("011 downgrade again", writers, lambda: api.migrate.downgrade("010", database_url=url), table)

            def plain() -> None:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"CREATE INDEX {INDEX} ON analytics (event_type, created_at)")

            step("plain CREATE INDEX on analytics", writers, plain, table)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP INDEX {INDEX}")
            step("011 upgrade again", writers, lambda: api.upgrade("011", database_url=url), table)
        print(f"\nwriters: {writers.commits:,} commits, {len(writers.failures)} failed transactions"
              + (f" ({', '.join(sorted(set(writers.failures)))})" if writers.failures else ""))
        print("\n| step | time | writers p50/p99/max during | before | failed | load |")
        print("| --- | --- | --- | --- | --- | --- |")
        for row in table:
            print("| " + " | ".join(row) + " |")
        lost = scalar(url, "SELECT count(*) FROM (SELECT id, created_at, event_type, properties, user_id "
                           "FROM bench_ref.analytics EXCEPT ALL SELECT id, created_at, event_type, properties, "
                           "user_id FROM public.analytics) x")
        added = scalar(url, "SELECT count(*) FROM (SELECT id, created_at, event_type, properties, user_id "
                            "FROM public.analytics EXCEPT ALL SELECT id, created_at, event_type, properties, "
                            "user_id FROM bench_ref.analytics) x")
        valid = scalar(url, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass("
                            "'analytics_event_type_created_at_idx')")
        invalid = scalar(url, "SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        unfinished = scalar(url, "SELECT count(*) FROM agentdb.online_changes "
                                 "WHERE status NOT IN ('completed', 'aborted')")
        final = scalar(url, "SELECT count(*) FROM analytics")
        print(f"\nanalytics {final:,} rows; against the mirrored reference: lost {lost}, extra {added}; "
              f"index valid {valid}; INVALID indexes {invalid}; unfinished online changes {unfinished}")
        if lost or added or valid is not True or invalid:
            raise SystemExit(1)
    finally:
        if args.keep:
            print(f"kept {url}")
        else:
            drop(args.database_url, name)


if __name__ == "__main__":
    main()
