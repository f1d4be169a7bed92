"""Lock order and lock waits: maintenance gives way, nobody waits long behind it, and nothing deadlocks."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from _partitions_db import NOW, build, rows, scalar

from agentdb.partitions import maintain_partitions, register

OLD = (*(datetime(2025, m, 1, tzinfo=UTC) for m in range(9, 13)), datetime(2026, 11, 1, tzinfo=UTC))


def _fill_months(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for month in OLD:
            conn.execute("INSERT INTO analytics (user_id, event_type, created_at) "
                          "SELECT 1, 'play', %s + g * interval '1 hour' FROM generate_series(1, 3) g", (month,))


def _register(url: str, **options: Any) -> None:
    with psycopg.connect(url) as conn:
        register(conn, "analytics", **options)


def test_a_long_select_delays_maintenance_but_never_deadlocks_it(database_url: str) -> None:
    """A reader holding ACCESS SHARE on the parent (and every partition) in an open transaction.

    Maintenance needs ACCESS EXCLUSIVE on the DEFAULT partition (attach) and on
    the parent (plain detach): each attempt gives up after ``lock_timeout``
    and releases everything, so the reader, and others, are never stuck behind
    it for longer than that; the reader can even write in its transaction.
    Once the reader ends, maintenance finishes.
    """
    build(database_url, default=True, months=OLD)
    _fill_months(database_url)
    _register(database_url, premake=1, retention="12 months")
    reader = psycopg.connect(database_url, application_name="long-report")
    reader.execute("SELECT count(*) FROM analytics").fetchone()
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(maintain_partitions(database_url=database_url, now=NOW, lock_timeout=0.1,
                                               lock_retries=60, retry_delay=0.1))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        time.sleep(1.5)
        assert thread.is_alive(), "maintenance waits for the reader"
        started = time.monotonic()
        reader.execute("SELECT count(*) FROM analytics").fetchone()
        reader.execute("INSERT INTO analytics (user_id, event_type, created_at) VALUES (1, 'seek', %s)",
                       (datetime(2031, 1, 1, tzinfo=UTC),))  # into the DEFAULT partition, in the same transaction
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute("INSERT INTO analytics (user_id, event_type) VALUES (2, 'play')")
            other.execute("SELECT count(*) FROM analytics").fetchone()
        assert time.monotonic() - started < 2.0, "nobody queues behind maintenance for long"
        assert thread.is_alive()
    finally:
        reader.commit()
        reader.close()
        thread.join(timeout=120)
    assert not thread.is_alive()
    (report,) = outcome
    assert not isinstance(report, Exception), report
    table = report.tables[0]  # type: ignore[attr-defined]
    assert table.created == ["public.analytics_p202612"]
    assert [a["partition"] for a in table.archived] == ["public.analytics_p202509", "public.analytics_p202510"]
    assert report.lock_retries > 0  # type: ignore[attr-defined]
    assert scalar(database_url, "SELECT count(*) FROM analytics WHERE event_type IN ('seek', 'play')") > 0



def test_writers_and_maintenance_take_locks_in_one_order(database_url: str) -> None:
    """No lock cycle with the hot path, even when maintenance would wait longer than ``deadlock_timeout``.

    An INSERT into the parent locks the parent, then its partition, then, in
    its foreign-key check, ``users``.  Maintenance attaching a drained month
    locks the parent, the new table, the DEFAULT partition and, last, ``users``
    (ACCESS EXCLUSIVE, to adopt the new table's foreign key).  In the other
    order every insert into the DEFAULT partition would close a cycle, and with
    a ``lock_timeout`` (3 s) above ``deadlock_timeout`` (1 s) PostgreSQL would
    kill a writer or maintenance with SQLSTATE 40P01.
    """
    build(database_url, default=True)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO analytics (user_id, event_type, created_at) "
                     "SELECT 1 + g % 5, 'play', timestamptz '2026-10-01 00:00+00' + g * interval '1 minute' "
                     "FROM generate_series(1, 2000) g")
    _register(database_url, premake=1)
    stop = threading.Event()
    errors: list[BaseException] = []
    written = [0]

    def writer() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                while not stop.is_set():
                    # Beyond the premake horizon: always into the DEFAULT partition, never refused by a guard.
                    conn.execute("INSERT INTO analytics (user_id, event_type, created_at) VALUES (3, 'seek', %s)",
                                 (datetime(2031, 1, 1, tzinfo=UTC),))
                    written[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        report = maintain_partitions(database_url=database_url, now=NOW, lock_timeout=3.0, lock_retries=3,
                                     batch_rows=400)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert written[0] > 0
    assert report.tables[0].drained == {"public.analytics_p202610": 2000}
    assert report.lock_retries == 0, "with one lock order there is nothing to retry: waits end, they do not cycle"
    assert scalar(database_url, "SELECT count(*) FROM ONLY analytics_default WHERE event_type = 'seek'") == written[0]
    assert rows(database_url, "SELECT count(*) FROM analytics_p202610") == [(2000,)]


def test_when_it_gives_up_it_names_the_blocker_and_leaves_nothing_half_done(database_url: str) -> None:
    from agentdb.errors import PartitionMaintenanceFailed

    build(database_url, default=True)
    _register(database_url, premake=0)
    with psycopg.connect(database_url, application_name="quarterly-report") as reader:
        reader.execute("SELECT count(*) FROM analytics").fetchone()
        try:
            maintain_partitions(database_url=database_url, now=NOW, lock_timeout=0.15, lock_retries=3,
                                retry_delay=0.05)
        except PartitionMaintenanceFailed as exc:
            failure = exc
        else:  # pragma: no cover - the assertion below says what went wrong
            raise AssertionError("maintenance did not give up")
        pid = reader.info.backend_pid
    assert f"pid {pid} (quarterly-report)" in str(failure)
    assert "could not take its locks after 3 attempts" in str(failure)
    assert scalar(database_url, "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'agentdb_drain_%'") == 0
    # The month's table is left standalone (empty, marked): the next run, unblocked, attaches it.
    report = maintain_partitions(database_url=database_url, now=NOW)
    assert report.tables[0].created == ["public.analytics_p202611"]
    assert report.plan[0].resume
