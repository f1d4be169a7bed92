"""Partition maintenance on a real database: premake, idempotence, run history, dry run, the maintenance lock."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from _partitions_db import NOW, build, partition_names, rows, scalar

from agentdb.errors import PartitionMaintenanceLocked, PartitionTableInvalid
from agentdb.partitions import maintain_partitions, register
from agentdb.partitions.maintenance import MAINTENANCE_LOCK_KEY


def _register(url: str, **options: object) -> None:
    with psycopg.connect(url) as conn:
        register(conn, "analytics", **options)  # type: ignore[arg-type]


def test_premake_creates_the_current_and_next_months_once(database_url: str) -> None:
    build(database_url, default=False)
    _register(database_url, premake=4)

    first = maintain_partitions(database_url=database_url, now=NOW)
    assert partition_names(database_url) == [
        "analytics_p202611", "analytics_p202612", "analytics_p202701", "analytics_p202702", "analytics_p202703"]
    assert first.changed and first.recorded
    assert first.tables[0].created == [f"public.analytics_p2026{m}" for m in ("11", "12")] + [
        f"public.analytics_p2027{m}" for m in ("01", "02", "03")]

    second = maintain_partitions(database_url=database_url, now=NOW)
    assert not second.changed and not second.recorded
    assert second.summary().startswith("nothing to do")
    assert partition_names(database_url) == partition_names(database_url)

    # A month later, one more month is made, and a write for every premade month lands in its partition.
    later = maintain_partitions(database_url=database_url, now=NOW.replace(month=12))
    assert later.tables[0].created == ["public.analytics_p202704"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO analytics (event_type, created_at) "
                     "SELECT 'play', timestamptz '2026-11-03 00:00+00' + g * interval '1 month' "
                     "FROM generate_series(0, 5) g")
    placed = rows(database_url, "SELECT tableoid::regclass::text, count(*) FROM analytics GROUP BY 1 ORDER BY 1")
    assert placed == [(f"analytics_p{m}", 1) for m in ("202611", "202612", "202701", "202702", "202703", "202704")]


def test_new_partitions_match_the_parent(database_url: str) -> None:
    build(database_url, default=False)
    _register(database_url, premake=0)
    maintain_partitions(database_url=database_url, now=NOW)
    indexes = rows(database_url, "SELECT indexrelid::regclass::text FROM pg_index "
                   "WHERE indrelid = 'analytics_p202611'::regclass ORDER BY 1")
    assert len(indexes) == 3, "primary key, user_id and brin(created_at), attached to the parent's indexes"
    assert scalar(database_url, "SELECT count(*) FROM pg_inherits WHERE inhrelid IN "
                  "(SELECT indexrelid FROM pg_index WHERE indrelid = 'analytics_p202611'::regclass)") == 3
    constraints = rows(database_url, "SELECT contype::text, conparentid <> 0 FROM pg_constraint "
                       "WHERE conrelid = 'analytics_p202611'::regclass ORDER BY 1")
    assert ("f", True) in constraints, "the foreign key is the parent's"
    assert not any(c[0] == "c" and "bounds" in str(c) for c in constraints)
    assert scalar(database_url, "SELECT count(*) FROM pg_constraint WHERE conrelid = "
                  "'analytics_p202611'::regclass AND conname = 'agentdb_partition_bounds'") == 0, \
        "the bounds CHECK that spared ATTACH its scan is dropped once attached"


def test_each_run_that_changes_something_is_in_the_run_history(database_url: str) -> None:
    build(database_url, default=False)
    _register(database_url, premake=1)
    report = maintain_partitions(database_url=database_url, now=NOW)
    maintain_partitions(database_url=database_url, now=NOW)  # nothing to do: not recorded
    maintain_partitions(database_url=database_url, now=NOW, record_noop=True)
    history = rows(database_url, "SELECT run_id::text, revision, direction, success, details->'tables'->0->'created' "
                   "FROM agentdb.migration_runs ORDER BY id")
    assert [(h[1], h[2], h[3]) for h in history] == [("partitions", "maintain", True)] * 2
    assert history[0][0] == str(report.run_id)
    assert history[0][4] == ["public.analytics_p202611", "public.analytics_p202612"]
    assert history[1][4] == []


def test_dry_run_plans_and_changes_nothing(database_url: str) -> None:
    build(database_url, default=True)
    _register(database_url, premake=2)
    before = partition_names(database_url)
    report = maintain_partitions(database_url=database_url, now=NOW, dry_run=True)
    assert partition_names(database_url) == before == ["analytics_default"]
    assert [s.partition for s in report.plan] == [
        "public.analytics_p202611", "public.analytics_p202612", "public.analytics_p202701"]
    assert all("ACCESS EXCLUSIVE on public.analytics_default (no scan" in " ".join(s.locks) for s in report.plan)
    assert not report.recorded
    assert scalar(database_url, "SELECT to_regclass('agentdb.migration_runs')") is None


def test_a_second_maintenance_refuses_naming_the_holder(database_url: str) -> None:
    build(database_url, default=False)
    _register(database_url, premake=0)
    with psycopg.connect(database_url, autocommit=True, application_name="other-maintenance") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MAINTENANCE_LOCK_KEY,))
        pid = holder.info.backend_pid
        started = time.monotonic()
        with pytest.raises(PartitionMaintenanceLocked) as caught:
            maintain_partitions(database_url=database_url, now=NOW, lock_wait=0.5)
        assert 0.5 <= time.monotonic() - started < 5
    assert caught.value.blocker is not None and caught.value.blocker.pid == pid
    assert f"pid {pid} (other-maintenance)" in str(caught.value)
    assert partition_names(database_url) == [], "nothing was changed"


def test_a_second_maintenance_waits_briefly_for_the_first(database_url: str) -> None:
    build(database_url, default=False)
    _register(database_url, premake=0)
    holder = psycopg.connect(database_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (MAINTENANCE_LOCK_KEY,))
    timer = threading.Timer(0.7, holder.close)
    timer.start()
    try:
        report = maintain_partitions(database_url=database_url, now=NOW, lock_wait=10)
    finally:
        timer.join()
    assert report.tables[0].created == ["public.analytics_p202611"]


def test_concurrent_runs_create_each_partition_once(database_url: str) -> None:
    build(database_url, default=True)
    _register(database_url, premake=3)
    results: list[object] = []

    def run() -> None:
        try:
            results.append(maintain_partitions(database_url=database_url, now=NOW, lock_wait=60))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [r for r in results if isinstance(r, Exception)]
    created = [p for r in results for t in r.tables for p in t.created]  # type: ignore[attr-defined]
    assert sorted(created) == [f"public.analytics_p{m}" for m in ("202611", "202612", "202701", "202702")]
    assert partition_names(database_url) == [
        "analytics_default", "analytics_p202611", "analytics_p202612", "analytics_p202701", "analytics_p202702"]


def test_an_unmanaged_or_unknown_table_is_refused_by_name(database_url: str) -> None:
    build(database_url, default=False)
    with pytest.raises(PartitionTableInvalid, match=r"public\.analytics: it is not managed"):
        maintain_partitions(database_url=database_url, table="analytics")
    with pytest.raises(PartitionTableInvalid, match=r"public\.analytics; DROP TABLE users: there is no such table"):
        maintain_partitions(database_url=database_url, table="analytics; DROP TABLE users")
    assert scalar(database_url, "SELECT to_regclass('public.users') IS NOT NULL")


def test_a_table_under_an_online_change_is_left_alone(database_url: str) -> None:
    """The online conversion (``agentdb.online``) of the same table holds its lock: maintenance skips the table."""
    from agentdb.online import state as online

    build(database_url, default=False)
    _register(database_url, premake=0)
    with psycopg.connect(database_url, autocommit=True) as engine_session:
        engine_session.execute("SELECT pg_advisory_lock(%s, %s)", online.table_lock_key("public", "analytics"))
        report = maintain_partitions(database_url=database_url, now=NOW)
        pid = engine_session.info.backend_pid
    assert partition_names(database_url) == []
    assert report.tables[0].warnings == [
        f"an online change of public.analytics is running (pid {pid}): its partitions are left alone"]
    assert maintain_partitions(database_url=database_url, now=NOW).tables[0].created == ["public.analytics_p202611"]
