"""Partitioning analytics while writers write: agentdb's online conversion against the naive one and its floor.

On ``analytics`` filled by seed-demo (2,000,000 rows; ``--large``: 10,000,000),
with writer threads inserting and updating analytics the whole time (each
transaction timed), for each method on a fresh copy of the same database:

``online``
    migration 007 as a user runs it (``agentdb upgrade 007`` in a process of
    its own): the online-change engine's batches, capture trigger,
    verification and short cut-over.
``naive``
    one transaction: lock analytics, create the partitioned table and its
    partitions, ``INSERT ... SELECT`` every row, add the foreign keys, swap the
    names, move the identity on.  Writers wait for all of it.
``partman`` (``--partman``, needs the pg_partman extension, PostgreSQL 15 in CI)
    pg_partman 4's documented online method: in one transaction rename the
    table and attach it as the DEFAULT partition of a new parent, then
    ``partman.partition_data_proc`` moves the rows out of the default into
    monthly children in batches.  With writers inserting rows of the current
    month, that month's rows cannot leave the default (creating its child
    while the default holds its rows fails, and new rows keep arriving), so
    the months before it are moved and the rows left in the default are
    printed.

Printed per method: conversion time; copy rows/s next to ``INSERT INTO ...
SELECT`` of the same rows into the same partitioned table on the same server
(the floor, measured once); writers' p50/p99/max latency before and during;
the longest ACCESS EXCLUSIVE hold on analytics (as the method measures it, and as
seen by polling ``pg_locks`` every 10 ms); acknowledged writes missing
afterwards (every acknowledged insert must be there, every acknowledged
update's last value must be).

    .venv/bin/python benchmarks/bench_partition.py [--rows N | --large] [--writers 4] [--database-url URL]

Without ``--database-url`` the embedded server is used.  Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa
from _scratch import drop, scratch
from psycopg import sql

import agentdb
from agentdb import online
from agentdb.connection import resolve
from agentdb.online._sql import execute


@dataclass
class Latencies:
    before: list[float] = field(default_factory=list)
    during: list[float] = field(default_factory=list)


class Writers:
    """Threads that insert and update analytics rows and remember what was acknowledged."""

    def __init__(self, url: str, count: int, pause: float) -> None:
        self.url = url
        self.pause = pause
        self.stop = threading.Event()
        self.phase = "before"
        self.latencies = Latencies()
        self.lock = threading.Lock()
        self.inserted: set[int] = set()
        #: id -> the last acknowledged value of properties.v, per writer (each writer updates its own rows)
        self.updated: dict[int, int] = {}
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(count)]

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _run(self, number: int) -> None:
        mine: list[int] = []
        counter = 0
        with psycopg.connect(_psycopg(self.url), application_name=f"bench-writer-{number}", autocommit=True) as conn:
            while not self.stop.is_set():
                counter += 1
                started = time.perf_counter()
                try:
                    if counter % 2 or not mine:
                        row = conn.execute(
                            "INSERT INTO analytics (event_type, properties, country, created_at) "
                            "VALUES ('play', jsonb_build_object('v', 0), 'DE', now()) RETURNING id").fetchone()
                        assert row is not None
                        mine.append(row[0])
                        acknowledged: tuple[str, int, int] = ("insert", row[0], 0)
                    else:
                        key = mine[counter % len(mine)]
                        conn.execute("UPDATE analytics SET properties = jsonb_build_object('v', %s::int) "
                                     "WHERE id = %s", (counter, key))
                        acknowledged = ("update", key, counter)
                except psycopg.Error as exc:
                    with self.lock:
                        self.errors.append(str(exc).splitlines()[0])
                    continue
                elapsed = time.perf_counter() - started
                with self.lock:
                    (self.latencies.before if self.phase == "before" else self.latencies.during).append(elapsed)
                    if acknowledged[0] == "insert":
                        self.inserted.add(acknowledged[1])
                    else:
                        self.updated[acknowledged[1]] = acknowledged[2]
                time.sleep(self.pause)

    def missing(self) -> int:
        """Acknowledged writes not in the table now."""
        with psycopg.connect(_psycopg(self.url)) as conn:
            present = {r[0]: r[1] for r in conn.execute(
                "SELECT id, (properties ->> 'v')::int FROM analytics WHERE id = ANY(%s)", (list(self.inserted),))}
        lost = sum(1 for key in self.inserted if key not in present)
        lost += sum(1 for key, value in self.updated.items() if present.get(key) != value)
        return lost


class LockWatch:
    """Polls pg_locks every few ms: the longest time any backend held ACCESS EXCLUSIVE on analytics (whatever
    table has that name at the time) or one of its partitions -- what writers would wait for."""

    QUERY = (
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' "
        "AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND (l.relation = to_regclass('public.analytics') OR l.relation IN "
        "(SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass('public.analytics')))"
    )

    def __init__(self, url: str, interval: float = 0.01) -> None:
        self.url = url
        self.interval = interval
        self.longest = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        since: dict[int, float] = {}
        with psycopg.connect(_psycopg(self.url), autocommit=True) as conn:
            while not self.stop.wait(self.interval):
                now = time.perf_counter()
                holders = {r[0] for r in conn.execute(self.QUERY)}
                for pid in holders:
                    since.setdefault(pid, now)
                for pid in list(since):
                    if pid not in holders:
                        self.longest = max(self.longest, now - since.pop(pid))
            now = time.perf_counter()
            for start in since.values():
                self.longest = max(self.longest, now - start)


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{statistics.median(ordered) * 1000:.1f} / {p99 * 1000:.1f} / {ordered[-1] * 1000:.0f}"


def _clone(server: str, template: str) -> tuple[str, str]:
    """A copy of the seeded template database (a file copy, much faster than seeding again)."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(resolve(server).conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return name, sa.make_url(server).set(database=name).render_as_string(hide_password=False)


def _psycopg(url: str) -> str:
    return resolve(url).conninfo()


def _floor(url: str) -> float:
    """Seconds of INSERT INTO <the online plan's partitioned table> SELECT * FROM analytics, rolled back."""
    plan = online.plan("analytics", database_url=url)
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            for statement in plan.phase("start").steps[0].statements:
                execute(conn, statement)
            started = time.perf_counter()
            execute(conn, sql.SQL("INSERT INTO {} OVERRIDING SYSTEM VALUE SELECT * FROM public.analytics").format(
                sql.Identifier("public", plan.design["new_table"])))
            seconds = time.perf_counter() - started
            conn.rollback()
    finally:
        engine.dispose()
    return seconds


def _online(url: str) -> dict[str, Any]:
    """``agentdb upgrade 007`` in a process of its own, as it runs in production (the writer threads here do not
    share its GIL); the engine's figures from ``agentdb.online_changes``."""
    subprocess.run([sys.executable, "-m", "agentdb", "--database-url", url, "upgrade", "007"], capture_output=True,
                   text=True, check=True)
    with psycopg.connect(_psycopg(url)) as conn:
        row = conn.execute("SELECT rows_done, timings, lock_hold_ms FROM agentdb.online_changes "
                           "WHERE kind = 'partition' ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None
    copy = (row[1].get("copy") or {}).get("seconds") or 0.0
    return {"copy_rows_per_s": row[0] / copy if copy else None, "hold_ms": row[2]}


def _naive(url: str) -> dict[str, Any]:
    """The one-transaction conversion: everything under ACCESS EXCLUSIVE."""
    plan = online.plan("analytics", database_url=url)
    design = plan.design
    new = sql.Identifier("public", design["new_table"])
    started = time.perf_counter()
    with psycopg.connect(_psycopg(url)) as conn:
        conn.execute("LOCK TABLE analytics IN ACCESS EXCLUSIVE MODE")
        locked = time.perf_counter()
        for statement in plan.phase("start").steps[0].statements:
            conn.execute(statement)
        copy_started = time.perf_counter()
        conn.execute(sql.SQL("INSERT INTO {} OVERRIDING SYSTEM VALUE SELECT * FROM public.analytics").format(new))
        copy = time.perf_counter() - copy_started
        for fk in ("analytics_user_id_fkey", "analytics_track_id_fkey"):
            definition = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s "
                                      "AND conrelid = 'analytics'::regclass", (fk,)).fetchone()
            assert definition is not None
            conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                new, sql.Identifier(fk), sql.SQL(definition[0])))
        cutover = plan.phase("cutover").cutover
        assert cutover is not None
        for statement in cutover.swap.statements:  # its capture-trigger drops are IF EXISTS: no-ops here
            conn.execute(statement)
        conn.commit()
        hold = (time.perf_counter() - locked) * 1000
    rows = plan.rows_estimated
    return {"copy_rows_per_s": rows / copy, "hold_ms": hold, "seconds": time.perf_counter() - started}


def _partman(url: str) -> dict[str, Any]:
    """pg_partman 4's online method, as its how-to (pg_partman_howto_native.md, "Online Partitioning") gives it."""
    started = time.perf_counter()
    with psycopg.connect(_psycopg(url), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS partman")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman")
        conn.execute("CREATE TABLE public.analytics_new (LIKE public.analytics INCLUDING ALL) "
                     "PARTITION BY RANGE (created_at)")
        for row in conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                "WHERE conrelid = 'public.analytics'::regclass AND contype = 'f'").fetchall():
            conn.execute(sql.SQL("ALTER TABLE public.analytics_new ADD CONSTRAINT {} {}").format(
                sql.Identifier(row[0]), sql.SQL(row[1])))
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON public.analytics_new TO agentdb_app")
        # Children only ahead of the data; the old table becomes the DEFAULT partition.
        conn.execute("SELECT partman.create_parent('public.analytics_new', 'created_at', 'native', 'monthly', "
                     "p_premake := 1, p_start_partition := (date_trunc('month', now()) + interval '1 month')::text)")
        # Every month before the current one; the current month's rows stay in the default (see the docstring).
        months = conn.execute("SELECT count(DISTINCT date_trunc('month', created_at)) FROM public.analytics "
                              "WHERE created_at < date_trunc('month', now())").fetchone()
        assert months is not None
        conn.execute("DROP TABLE public.analytics_new_default")
        conn.execute("UPDATE partman.part_config SET parent_table = 'public.analytics', premake = 4 "
                     "WHERE parent_table = 'public.analytics_new'")
        children = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'public.analytics_new'::regclass")]
        swap_started = time.perf_counter()
        with conn.transaction():
            conn.execute("LOCK TABLE public.analytics IN ACCESS EXCLUSIVE MODE")
            conn.execute("LOCK TABLE public.analytics_new IN ACCESS EXCLUSIVE MODE")
            last = conn.execute("SELECT max(id) FROM public.analytics").fetchone()
            assert last is not None
            conn.execute("ALTER TABLE public.analytics RENAME TO analytics_default")
            conn.execute("ALTER TABLE public.analytics_default ALTER id DROP IDENTITY")
            conn.execute("ALTER TABLE public.analytics_new RENAME TO analytics")
            for child in children:
                conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    sql.Identifier("public", child), sql.Identifier(child.replace("analytics_new", "analytics"))))
            conn.execute("ALTER SEQUENCE public.analytics_new_id_seq RENAME TO analytics_id_seq")
            conn.execute(sql.SQL("ALTER TABLE public.analytics ALTER id RESTART WITH {}").format(
                sql.Literal(int(last[0] or 0) + 1)))
            # Checks every row of the old table against the children, under the lock.
            conn.execute("ALTER TABLE public.analytics ATTACH PARTITION public.analytics_default DEFAULT")
        swap = (time.perf_counter() - swap_started) * 1000
        copy_started = time.perf_counter()
        conn.execute(sql.SQL("CALL partman.partition_data_proc('public.analytics', p_batch := {}, "
                             "p_wait := 0)").format(sql.Literal(int(months[0]))))
        copy = time.perf_counter() - copy_started
        moved = conn.execute("SELECT count(*) FROM public.analytics").fetchone()
        left = conn.execute("SELECT count(*) FROM public.analytics_default").fetchone()
    assert moved is not None and left is not None
    return {"copy_rows_per_s": (moved[0] - left[0]) / copy, "hold_ms": swap,
            "seconds": time.perf_counter() - started, "default_left": left[0]}


METHODS: dict[str, Callable[[str], dict[str, Any]]] = {"online": _online, "naive": _naive, "partman": _partman}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--large", action="store_true", help="10,000,000 rows")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--writer-pause", type=float, default=0.005, help="seconds between a writer's transactions")
    parser.add_argument("--before", type=float, default=5.0, help="seconds of writes measured before converting")
    parser.add_argument("--partman", action="store_true", help="also pg_partman's online method")
    parser.add_argument("--database-url", default=None, help="a server URL whose role may CREATE DATABASE")
    args = parser.parse_args()
    rows = 10_000_000 if args.large else args.rows

    target = resolve(args.database_url)
    server = target.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(target.conninfo()) as conn:
        banner = conn.execute("SELECT version()").fetchone()
    print(f"server: {str(banner[0]).split(',')[0] if banner else '?'}")
    template, template_url = scratch(server)
    try:
        agentdb.upgrade(database_url=template_url)
        seeded = time.perf_counter()
        agentdb.seed_demo("large", database_url=template_url, analytics_rows=rows)
        print(f"seed-demo: {rows:,} analytics rows in {time.perf_counter() - seeded:.0f} s")
        # At head analytics is partitioned (007): back to one plain table, online, as 007's downgrade does it.
        undone = time.perf_counter()
        agentdb.downgrade("006", database_url=template_url)
        with psycopg.connect(_psycopg(template_url), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE analytics")
        print(f"template at 006 (007's online downgrade): {time.perf_counter() - undone:.0f} s")
        name, url = _clone(server, template)
        try:
            floor = _floor(url)
        finally:
            drop(server, name)
        print(f"floor (INSERT INTO the partitioned table SELECT every row): {floor:.1f} s, {rows / floor:,.0f} rows/s")
        methods = ["online", "naive"] + (["partman"] if args.partman else [])
        results = []
        for method in methods:
            name, url = _clone(server, template)
            try:
                with Writers(url, args.writers, args.writer_pause) as writers:
                    time.sleep(args.before)
                    writers.phase = "during"
                    started = time.perf_counter()
                    with LockWatch(url) as watch:
                        try:
                            outcome = METHODS[method](url)
                        except Exception as exc:  # a figure, not a failure
                            outcome = {"error": str(exc).splitlines()[0]}
                    seconds = time.perf_counter() - started
                    outcome["observed_hold_ms"] = watch.longest * 1000
                    time.sleep(1.0)
                missing = writers.missing() if "error" not in outcome else None
                results.append((method, seconds, outcome, writers, missing))
            finally:
                drop(server, name)
        print(f"\n{rows:,} rows, {args.writers} writers (insert/update, {args.writer_pause * 1000:.0f} ms apart)")
        print(f"{'method':<9}{'total s':>9}{'copy rows/s':>13}{'vs floor':>10}  {'writers p50/p99/max ms before':<30}"
              f"{'during':<22}{'AccessExcl ms':>14}{'(seen)':>9}{'lost':>6}")
        for method, seconds, outcome, writers, missing in results:
            if "error" in outcome:
                print(f"{method:<9} failed: {outcome['error']}")
                continue
            rate = outcome.get("copy_rows_per_s")
            ratio = f"{rate / (rows / floor):.2f}" if rate else "-"
            print(f"{method:<9}{seconds:>9.1f}{(rate or 0):>13,.0f}{ratio:>10}  {_ms(writers.latencies.before):<30}"
                  f"{_ms(writers.latencies.during):<22}{outcome['hold_ms']:>14.1f}"
                  f"{outcome['observed_hold_ms']:>9.0f}{missing:>6}"
                  + (f"   ({len(writers.errors)} writer errors)" if writers.errors else "")
                  + (f"   ({outcome['default_left']:,} rows left in the default)" if outcome.get("default_left")
                     else ""))
    finally:
        drop(server, template)


if __name__ == "__main__":
    main()
