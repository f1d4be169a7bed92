"""Draining the DEFAULT partition: rows of months without a partition move into new partitions, none lost or doubled."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from _partitions_db import NOW, build, partition_names, rows, scalar
from psycopg import sql

from agentdb.errors import PartitionMaintenanceFailed
from agentdb.partitions import list_partitions, maintain_partitions, maintenance, register

ALL = "SELECT id, user_id, event_type, properties::text, created_at FROM analytics ORDER BY id"


def _fill(url: str, spec: dict[str, int]) -> None:
    """``{'2026-09': 300, ...}``: that many rows spread over each month, in the DEFAULT partition."""
    with psycopg.connect(url, autocommit=True) as conn:
        for month, n in spec.items():
            conn.execute(
                "INSERT INTO analytics (user_id, event_type, properties, created_at) "
                "SELECT 1 + g %% 5, 'play', jsonb_build_object('n', g), "
                "  %s::timestamptz + (g * interval '1 minute') FROM generate_series(1, %s) g",
                (f"{month}-01 00:00+00", n))


def _register(url: str, **options: Any) -> None:
    with psycopg.connect(url) as conn:
        register(conn, "analytics", **options)


def test_rows_move_out_of_the_default_into_their_months_none_lost_or_doubled(database_url: str) -> None:
    build(database_url, default=True)
    _fill(database_url, {"2026-09": 300, "2026-11": 1000, "2027-01": 50, "2031-05": 7})
    before = rows(database_url, ALL)
    _register(database_url, premake=2)

    report = maintain_partitions(database_url=database_url, now=NOW, batch_rows=97)

    assert rows(database_url, ALL) == before, "every row once, unchanged"
    assert scalar(database_url, "SELECT count(*) = count(DISTINCT id) FROM analytics")
    placed = rows(database_url, "SELECT tableoid::regclass::text, count(*) FROM analytics GROUP BY 1 ORDER BY 1")
    assert placed == [("analytics_default", 7), ("analytics_p202609", 300), ("analytics_p202611", 1000),
                      ("analytics_p202701", 50)]
    table = report.tables[0]
    assert table.drained == {"public.analytics_p202609": 300, "public.analytics_p202611": 1000,
                             "public.analytics_p202701": 50}
    assert table.created == ["public.analytics_p202609", "public.analytics_p202611", "public.analytics_p202612",
                             "public.analytics_p202701"]
    assert any("7 rows of 1 month(s) from 2031-05 on stay in the DEFAULT partition" in w for w in table.warnings)
    assert scalar(database_url, "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'agentdb_%'") == 0, \
        "no guard or bounds constraint is left behind"
    assert scalar(database_url, "SELECT count(*) FROM pg_class WHERE relname LIKE 'analytics_p%' "
                  "AND NOT relispartition AND relkind = 'r'") == 0
    # The moved rows are in partitions the parent's foreign key covers: deleting a user nulls them.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE id = 2")
    assert scalar(database_url, "SELECT count(*) FROM analytics_p202609 WHERE user_id = 2") == 0

    again = maintain_partitions(database_url=database_url, now=NOW)
    assert not again.changed


def test_the_default_ends_empty_when_every_month_is_within_the_horizon(database_url: str) -> None:
    build(database_url, default=True)
    _fill(database_url, {"2025-12": 10, "2026-10": 20, "2026-11": 30})
    before = rows(database_url, ALL)
    _register(database_url, premake=1)
    maintain_partitions(database_url=database_url, now=NOW, batch_rows=7)
    assert rows(database_url, ALL) == before
    assert scalar(database_url, "SELECT count(*) FROM ONLY analytics_default") == 0
    assert partition_names(database_url) == [
        "analytics_default", "analytics_p202512", "analytics_p202610", "analytics_p202611", "analytics_p202612"]


def test_attach_never_scans_the_default_under_access_exclusive(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL's own verdict (DEBUG1), heard on maintenance's connections: both scans are skipped.

    ATTACH scans the DEFAULT partition, under ACCESS EXCLUSIVE, unless its
    constraints prove it holds no row of the new month; and the new table,
    unless its CHECK proves its bounds.
    """
    build(database_url, default=True)
    _fill(database_url, {"2026-11": 100, "2031-01": 5})
    _register(database_url, premake=1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET client_min_messages = debug1").format(
            sql.Identifier(conn.info.dbname)))
    notices: list[str] = []
    real = maintenance.create_engine

    def listening(target: Any) -> sa.Engine:
        engine = real(target)
        sa.event.listen(engine, "connect", lambda dbapi, _record: dbapi.add_notice_handler(
            lambda diag: notices.append(diag.message_primary or "")))
        return engine

    monkeypatch.setattr(maintenance, "create_engine", listening)
    report = maintain_partitions(database_url=database_url, now=NOW)
    assert report.tables[0].created == ["public.analytics_p202611", "public.analytics_p202612"]
    for month in ("202611", "202612"):
        assert f'partition constraint for table "analytics_p{month}" is implied by existing constraints' in notices
    implied = 'updated partition constraint for default partition "analytics_default" is implied by existing ' \
              "constraints"
    assert notices.count(implied) == 2, "the DEFAULT partition was not scanned by either ATTACH"


def test_a_trigger_that_would_fire_on_the_move_stops_the_drain(database_url: str) -> None:
    build(database_url, default=True)
    _fill(database_url, {"2026-11": 10})
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE deleted_log (id bigint)")
        conn.execute("CREATE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$BEGIN INSERT INTO deleted_log VALUES (OLD.id); RETURN OLD; END$$")
        conn.execute("CREATE TRIGGER log_delete AFTER DELETE ON analytics FOR EACH ROW EXECUTE FUNCTION log_delete()")
    _register(database_url, premake=1)
    with pytest.raises(PartitionMaintenanceFailed, match="DELETE trigger log_delete would fire") as caught:
        maintain_partitions(database_url=database_url, now=NOW)
    assert scalar(database_url, "SELECT count(*) FROM ONLY analytics_default") == 10, "nothing moved"
    assert scalar(database_url, "SELECT count(*) FROM deleted_log") == 0
    report = caught.value.report
    assert report is not None and report.tables[0].created == ["public.analytics_p202612"], \
        "the month without rows in the way was still made"  # type: ignore[attr-defined]


def test_writers_keep_writing_while_the_default_drains(database_url: str) -> None:
    """Inserts of every month go on during the drain: each acknowledged row is there exactly once afterwards.

    Inserts of the month being sealed are refused (23514) between the guard and the attach: counted, and
    nothing else may fail.
    """
    build(database_url, default=True)
    _fill(database_url, {"2026-10": 3000, "2026-11": 3000})
    _register(database_url, premake=1)
    stop = threading.Event()
    acknowledged: list[tuple[int, datetime]] = []
    refused: list[str] = []
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                i = 0
                while not stop.is_set():
                    i += 1
                    when = datetime(2026, 10 + (i + offset) % 3, 1, tzinfo=UTC) + timedelta(minutes=i)
                    try:
                        row = conn.execute("INSERT INTO analytics (event_type, created_at) VALUES ('skip', %s) "
                                           "RETURNING id, created_at", (when,)).fetchone()
                    except psycopg.errors.CheckViolation as exc:
                        # The guard, or (an insert routed before a concurrent ATTACH committed) the DEFAULT
                        # partition's new partition constraint.
                        refused.append(exc.diag.constraint_name or f"partition constraint of {exc.diag.table_name}")
                        continue
                    assert row is not None
                    acknowledged.append((int(row[0]), row[1]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        report = maintain_partitions(database_url=database_url, now=NOW, batch_rows=500)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors
    assert acknowledged, "the writers wrote"
    assert set(refused) <= {"agentdb_drain_p202610", "agentdb_drain_p202611", "agentdb_drain_p202612",
                            "partition constraint of analytics_default"}
    found = set(rows(database_url, "SELECT id, created_at FROM analytics WHERE event_type = 'skip'"))
    assert found == set(acknowledged), "every acknowledged write is there, and nothing else"
    assert scalar(database_url, "SELECT count(*) = count(DISTINCT id) FROM analytics")
    assert scalar(database_url, "SELECT count(*) FROM analytics WHERE event_type = 'play'") == 6000
    assert scalar(database_url, "SELECT count(*) FROM ONLY analytics_default") == 0
    table = report.tables[0]
    assert {"public.analytics_p202610", "public.analytics_p202611"} <= set(table.drained)
    print(f"\nwrites acknowledged {len(acknowledged)}, refused during the seal {len(refused)}, "
          f"guard windows ms {table.guard_ms}")


def test_listing_shows_bounds_rows_and_size(database_url: str) -> None:
    build(database_url, default=True)
    _fill(database_url, {"2026-11": 40, "2030-01": 2})
    _register(database_url, premake=1)
    maintain_partitions(database_url=database_url, now=NOW)
    listed = list_partitions("analytics", database_url=database_url, exact=True)
    assert [(p.partition, p.kind, p.rows) for p in listed] == [
        ("public.analytics_p202611", "range", 40), ("public.analytics_p202612", "range", 0),
        ("public.analytics_default", "default", 2)]
    assert listed[0].lower == datetime(2026, 11, 1, tzinfo=UTC) and listed[0].upper == datetime(2026, 12, 1, tzinfo=UTC)
    assert all(p.size_bytes > 0 and p.managed and p.state == "attached" for p in listed)
    assert listed[0].as_dict()["lower"] == "2026-11-01T00:00:00+00:00"
    assert [p.partition for p in list_partitions(database_url=database_url)] == [p.partition for p in listed]
