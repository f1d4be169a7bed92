"""Retention: partitions entirely older than the configured age are detached, then archived, dropped or kept."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from _partitions_db import NOW, build, partition_names, rows, scalar

from agentdb.partitions import maintain_partitions, naming, register

OLD = (*(datetime(2025, m, 1, tzinfo=UTC) for m in range(9, 13)), datetime(2026, 11, 1, tzinfo=UTC))


def _fill_months(url: str) -> None:
    """Three rows in each existing month partition."""
    with psycopg.connect(url, autocommit=True) as conn:
        for month in OLD:
            conn.execute("INSERT INTO analytics (user_id, event_type, created_at) "
                         "SELECT 1, 'play', %s + g * interval '1 hour' FROM generate_series(1, 3) g", (month,))


def _register(url: str, **options: Any) -> None:
    with psycopg.connect(url) as conn:
        register(conn, "analytics", **options)


def test_old_partitions_are_archived_and_recorded(database_url: str) -> None:
    build(database_url, default=True, months=(datetime(2025, 8, 1, tzinfo=UTC), *OLD))
    _fill_months(database_url)  # August stays empty
    _register(database_url, premake=0, retention="12 months")  # cutoff 2025-11-15: August to October go

    report = maintain_partitions(database_url=database_url, now=NOW)
    assert report.tables[0].dropped == [{"partition": "public.analytics_p202508", "rows": 0}], \
        "an empty partition is dropped, not archived (as a rollback drops an empty table)"
    assert scalar(database_url, "SELECT to_regclass('public.analytics_p202508')") is None

    assert partition_names(database_url) == [
        "analytics_default", "analytics_p202511", "analytics_p202512", "analytics_p202611"]
    archived = report.tables[0].archived
    assert [(a["partition"], a["rows"]) for a in archived] == [
        ("public.analytics_p202509", 3), ("public.analytics_p202510", 3)]
    registry = rows(database_url, "SELECT table_schema, table_name, archive_table, row_count, run_id::text "
                    "FROM agentdb.archived_tables ORDER BY id")
    assert [(r[0], r[1], r[3], r[4]) for r in registry] == [
        ("public", "analytics_p202509", 3, str(report.run_id)), ("public", "analytics_p202510", 3, str(report.run_id))]
    for (_, _, archive, *_rest), entry in zip(registry, archived, strict=True):
        assert entry["archive"] == f"agentdb_archive.{archive}"
        assert scalar(database_url, f'SELECT count(*) FROM agentdb_archive."{archive}"') == 3
        assert scalar(database_url, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = "
                      "%s::regclass", (f'agentdb_archive."{archive}"',)) == 0, \
            "no foreign key: a downgrade may still drop users"
    assert scalar(database_url, "SELECT count(*) FROM analytics WHERE created_at < '2025-11-01'") == 0
    history = rows(database_url, "SELECT direction, success, details->'tables'->0->'archived' "
                   "FROM agentdb.migration_runs")
    assert [(h[0], h[1], len(h[2])) for h in history] == [("maintain", True, 2)]

    assert not maintain_partitions(database_url=database_url, now=NOW).changed


def test_drop_detaches_concurrently_without_a_default_partition(database_url: str) -> None:
    build(database_url, default=False, months=OLD)
    _fill_months(database_url)
    _register(database_url, premake=0, retention="1 year", retention_action="drop")
    report = maintain_partitions(database_url=database_url, now=NOW)
    assert [(d["partition"], d["rows"]) for d in report.tables[0].dropped] == [
        ("public.analytics_p202509", 3), ("public.analytics_p202510", 3)]
    assert all(s.concurrently for s in report.plan if s.action == "retire")
    assert scalar(database_url, "SELECT to_regclass('public.analytics_p202509')") is None
    assert partition_names(database_url) == ["analytics_p202511", "analytics_p202512", "analytics_p202611"]


def test_detach_only_keeps_the_table_and_uses_concurrently_when_it_can(database_url: str) -> None:
    build(database_url, default=False, months=OLD)
    _register(database_url, premake=0, retention="12 months", retention_action="detach")
    report = maintain_partitions(database_url=database_url, now=NOW)
    assert report.tables[0].detached == ["public.analytics_p202509", "public.analytics_p202510"]
    # DETACH ... CONCURRENTLY leaves a CHECK constraint copying the partition constraint; a plain DETACH does not.
    checks = rows(database_url, "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'c' "
                  "AND conrelid IN ('analytics_p202509'::regclass, 'analytics_p202510'::regclass) "
                  "AND pg_get_constraintdef(oid) LIKE '%%created_at IS NOT NULL%%' ORDER BY 1")
    assert checks == [("analytics_p202509",), ("analytics_p202510",)]
    assert not maintain_partitions(database_url=database_url, now=NOW).changed, \
        "a detached month is not made again: it is older than the retention"


def test_an_interrupted_concurrent_detach_is_finalized(database_url: str) -> None:
    build(database_url, default=False, months=OLD)
    _fill_months(database_url)
    # A reader keeps a snapshot that sees the partition: the detach's second transaction times out and the
    # partition stays "detach pending", as after a crash or a cancel.
    reader = psycopg.connect(database_url)
    reader.execute("SELECT count(*) FROM analytics").fetchone()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '200ms'")
        try:
            conn.execute("ALTER TABLE analytics DETACH PARTITION analytics_p202509 CONCURRENTLY")
        except psycopg.errors.LockNotAvailable:
            pass
    reader.close()
    assert scalar(database_url, "SELECT inhdetachpending FROM pg_inherits "
                  "WHERE inhrelid = 'analytics_p202509'::regclass") is True
    _register(database_url, premake=0, retention="12 months")
    report = maintain_partitions(database_url=database_url, now=NOW)
    table = report.tables[0]
    assert table.finalized == ["public.analytics_p202509"]
    assert [a["partition"] for a in table.archived] == ["public.analytics_p202509", "public.analytics_p202510"]
    assert scalar(database_url, "SELECT count(*) FROM pg_inherits WHERE inhdetachpending") == 0


def test_rows_older_than_the_retention_in_the_default_are_archived_too(database_url: str) -> None:
    build(database_url, default=True)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO analytics (event_type, created_at) VALUES ('play', '2024-02-03 00:00+00'), "
                     "('play', '2024-02-04 00:00+00'), ('play', '2026-11-02 00:00+00')")
    _register(database_url, premake=0, retention="6 months")
    report = maintain_partitions(database_url=database_url, now=NOW)
    table = report.tables[0]
    assert table.drained == {"public.analytics_p202402": 2, "public.analytics_p202611": 1}
    assert [(a["partition"], a["rows"]) for a in table.archived] == [("public.analytics_p202402", 2)]
    assert scalar(database_url, "SELECT count(*) FROM ONLY analytics_default") == 0
    assert partition_names(database_url) == ["analytics_default", "analytics_p202611"]


def test_month_names_are_the_contract(database_url: str) -> None:
    build(database_url, default=False)
    _register(database_url, premake=0)
    maintain_partitions(database_url=database_url, now=NOW)
    bound = scalar(database_url, "SELECT pg_get_expr(relpartbound, oid) FROM pg_class "
                   "WHERE relname = %s", (naming.partition_name("analytics", NOW),))
    assert bound == "FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')"
