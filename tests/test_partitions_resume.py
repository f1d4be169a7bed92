"""A maintenance killed half-way (``kill -9``) loses no row, and the next run completes what it left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
from _partitions_db import NOW, build, partition_names, rows, scalar

from agentdb.partitions import list_partitions, maintain_partitions, register

ROWS = 30_000
ALL = "SELECT id, created_at, properties::text FROM {} ORDER BY id"


def _register(url: str, **options: Any) -> None:
    with psycopg.connect(url) as conn:
        register(conn, "analytics", **options)


def _fill(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO analytics (event_type, properties, created_at) "
                      "SELECT 'play', jsonb_build_object('n', g), timestamptz '2026-11-01 00:00+00' "
                      "+ g * interval '1 second' FROM generate_series(1, %s) g", (ROWS,))


def _spawn(url: str) -> subprocess.Popen[bytes]:
    code = (
        "from datetime import datetime\n"
        "from agentdb.partitions import maintain_partitions\n"
        f"maintain_partitions(database_url={url!r}, now=datetime.fromisoformat({NOW.isoformat()!r}), batch_rows=100)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _moved(url: str) -> int:
    """Rows in the standalone table being filled (0 before it exists)."""
    if scalar(url, "SELECT to_regclass('public.analytics_p202611')") is None:
        return 0
    return int(scalar(url, "SELECT count(*) FROM ONLY analytics_p202611"))


@pytest.mark.parametrize("kill_after_rows", [1, ROWS // 2, ROWS - 2000])
def test_kill_during_the_drain_loses_nothing_and_the_next_run_resumes(database_url: str, kill_after_rows: int) -> None:
    build(database_url, default=True)
    _fill(database_url)
    before = rows(database_url, ALL.format("analytics"))
    _register(database_url, premake=0)

    process = _spawn(database_url)
    deadline = time.monotonic() + 60
    try:
        while _moved(database_url) < kill_after_rows:
            assert process.poll() is None, "maintenance ended before the kill point"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL

    # At the moment of the crash, each row is in exactly one place: the parent, or the table being filled.
    moved = _moved(database_url)
    visible = rows(database_url, ALL.format("analytics"))
    waiting = rows(database_url, ALL.format("ONLY analytics_p202611"))
    if "analytics_p202611" not in partition_names(database_url):
        assert 0 < moved < ROWS + 1
        assert sorted(visible + waiting) == before, "no row lost, none doubled"
        listed = {p.partition: p.state for p in list_partitions("analytics", database_url=database_url)}
        assert listed["public.analytics_p202611"] == "draining"
    else:  # the kill came after the attach
        assert visible == before

    report = maintain_partitions(database_url=database_url, now=NOW)
    assert rows(database_url, ALL.format("analytics")) == before
    assert scalar(database_url, "SELECT count(*) FROM ONLY analytics_default") == 0
    assert scalar(database_url, "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'agentdb_%'") == 0
    if report.tables[0].created:
        assert report.tables[0].created == ["public.analytics_p202611"]
        assert report.plan[0].resume
    assert not maintain_partitions(database_url=database_url, now=NOW).changed


def test_a_guard_left_by_a_crash_is_resolved_by_the_next_run(database_url: str) -> None:
    """A crash between the guard and the attach: writes of the month are refused until the next run completes it."""
    build(database_url, default=True)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO analytics (event_type, created_at) VALUES ('play', '2026-11-02 00:00+00')")
        # What the crashed run had done: the month's table with its bounds, the row moved, the guard added.
        conn.execute("CREATE TABLE analytics_p202611 (LIKE analytics INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                     "INCLUDING INDEXES)")
        conn.execute("ALTER TABLE analytics_p202611 ADD CONSTRAINT agentdb_partition_bounds CHECK "
                     "(created_at >= '2026-11-01 00:00+00' AND created_at < '2026-12-01 00:00+00')")
        conn.execute("WITH moved AS (DELETE FROM analytics_default RETURNING *) "
                     "INSERT INTO analytics_p202611 SELECT * FROM moved")
        conn.execute("ALTER TABLE analytics_default ADD CONSTRAINT agentdb_drain_p202611 CHECK "
                     "(created_at < '2026-11-01 00:00+00' OR created_at >= '2026-12-01 00:00+00') NOT VALID")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO analytics (event_type, created_at) VALUES ('play', '2026-11-03 00:00+00')")
    _register(database_url, premake=0)
    plan = maintain_partitions(database_url=database_url, now=NOW, dry_run=True).plan
    assert [(s.partition, s.resume) for s in plan] == [("public.analytics_p202611", True)]
    maintain_partitions(database_url=database_url, now=NOW)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO analytics (event_type, created_at) VALUES ('play', '2026-11-03 00:00+00')")
    assert rows(database_url, "SELECT tableoid::regclass::text, count(*) FROM analytics GROUP BY 1") == [
        ("analytics_p202611", 2)]
    assert scalar(database_url, "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'agentdb_%'") == 0


def test_a_table_in_the_way_is_named_and_the_rest_is_done(database_url: str) -> None:
    build(database_url, default=False)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE analytics_p202612 (note text)")
    _register(database_url, premake=2)
    from agentdb.errors import PartitionMaintenanceFailed

    with pytest.raises(PartitionMaintenanceFailed, match=r"public\.analytics_p202612: a table of that name exists"):
        maintain_partitions(database_url=database_url, now=NOW)
    assert partition_names(database_url) == ["analytics_p202611", "analytics_p202701"]
    (run,) = rows(database_url, "SELECT success, error FROM agentdb.migration_runs")
    assert run[0] is False and "analytics_p202612" in run[1]
