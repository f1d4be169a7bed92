"""An import into a partitioned table creates the missing month partitions first, never using DEFAULT."""

from __future__ import annotations

from pathlib import Path

import pytest
from _bulk_helpers import write
from _partitions_db import NOW, build, count, partition_names, rows

from agentdb.bulk import bulk_import
from agentdb.partitions import naming


@pytest.mark.parametrize("default", [True, False], ids=["with-default", "without-default"])
def test_rows_of_past_months_land_in_their_own_new_partitions(database_url: str, tmp_path: Path,
                                                              default: bool) -> None:
    build(database_url, default=default, months=(NOW,))
    lines = ["id,user_id,event_type,created_at"]
    months = ["2026-11-20 10:00:00+00", "2025-02-03 23:59:59+00", "2024-12-31 23:30:00-02", "2025-02-28 00:00:00+00"]
    for i, when in enumerate(months * 5):
        lines.append(f"{1000 + i},{1 + i % 5},play,{when}")
    path = write(tmp_path / "months.csv", "\n".join(lines) + "\n")
    dry = bulk_import("analytics", path, database_url=database_url, dry_run=True)
    assert sorted(dry.partitions_needed) == ["public.analytics_p202501", "public.analytics_p202502"]
    assert "analytics_p202502" not in partition_names(database_url)
    report = bulk_import("analytics", path, database_url=database_url)
    assert report.rows_loaded == 20 and sorted(report.partitions_created) == [
        "public.analytics_p202501", "public.analytics_p202502"]
    names = partition_names(database_url)
    assert {naming.partition_name("analytics", m) for m in (NOW,)} | {"analytics_p202501", "analytics_p202502"} \
        <= set(names)
    if default:
        assert count(database_url, "analytics_default") == 0, "never the DEFAULT partition"
    assert count(database_url, "analytics_p202502") == 10
    assert count(database_url, "analytics_p202501") == 5, "-02:00 on Dec 31 is January 1st in UTC"
    bounds = rows(database_url, "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = "
                  "'analytics_p202502'")[0][0]
    assert "2025-02-01 00:00:00+00" in bounds and "2025-03-01 00:00:00+00" in bounds
    indexes = rows(database_url, "SELECT count(*) FROM pg_indexes WHERE tablename = 'analytics_p202502'")[0][0]
    assert indexes == 3, "the new partition has the parent's indexes (primary key, user_id, brin)"


def test_rows_of_the_month_waiting_in_default_are_moved_out_first(database_url: str, tmp_path: Path) -> None:
    """Partition maintenance makes the month: the DEFAULT partition's rows of it move into it, none is lost."""
    build(database_url, default=True, months=(NOW,))
    rows(database_url, "INSERT INTO analytics (user_id, event_type, created_at) "
                       "VALUES (1, 'waiting', '2025-03-10 00:00:00+00'), (2, 'other', '2025-04-10 00:00:00+00')")
    lines = ["user_id,event_type,created_at"] + [f"{1 + i % 5},play,2025-03-{1 + i:02d} 10:00:00+00" for i in range(6)]
    report = bulk_import("analytics", write(tmp_path / "march.csv", "\n".join(lines) + "\n"),
                         database_url=database_url)
    assert (report.method, report.rows_loaded, report.partitions_created) == ("copy", 6, ["public.analytics_p202503"])
    assert count(database_url, "analytics_p202503") == 7, "the waiting row was moved into the new partition"
    assert count(database_url, "analytics_default") == 1, "the other month's row stays where it was"
    assert rows(database_url, "SELECT direction, success FROM agentdb.migration_runs "
                              "WHERE revision = 'partitions'") == [("maintain", True)]
