"""The engine's guarantees: abort at any phase, interrupted changes found, cut-over that gives up cleanly,
verification that stops it, resume refused on a changed file or source, pause/resume/throttle, completion."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from _online_helpers import (
    SMALL_BATCHES,
    change_row,
    differences,
    drive,
    fill_analytics,
    leftovers,
    relkind,
    snapshot,
    spawn,
)
from conftest import schema_dump

from agentdb import online
from agentdb.errors import (
    OnlineChangeBusy,
    OnlineChangeRefused,
    OnlineFileChanged,
    OnlineLockTimeout,
    OnlineSourceChanged,
    OnlineVerifyFailed,
)
from agentdb.online import OnlineSettings


def _killed(url: str, point: str, **kwargs: object) -> None:
    result = drive(url, "start", kill_at=point, settings=SMALL_BATCHES, **kwargs)  # type: ignore[arg-type]
    assert result.returncode == -9, f"not killed at {point}: rc={result.returncode} {result.stderr[-2000:]}"


@pytest.mark.parametrize("point", [
    "start:step:1", "start:step:2", "copy:batch:2", "copy:batch:3:uncommitted", "copy:after", "constraints:step:1",
    "constraints:step:4", "constraints:after", "verify:after", "cutover:before", "cutover:locked",
])
def test_abort_at_any_phase_leaves_the_source_exactly_as_it_was(migrated_url: str, point: str) -> None:
    fill_analytics(migrated_url, 1000)
    snapshot(migrated_url)
    before = schema_dump(migrated_url)
    _killed(migrated_url, point)
    [interrupted] = online.status(database_url=migrated_url)
    assert interrupted.interrupted and not interrupted.driven
    result = online.abort("analytics", database_url=migrated_url)
    assert result.status == "aborted"
    assert schema_dump(migrated_url) == before
    assert differences(migrated_url, "public.analytics", "online_test.before") == (0, 0)
    assert leftovers(migrated_url) == []
    assert online.status(database_url=migrated_url) == []
    # a second abort finds nothing to abort
    with pytest.raises(Exception, match="no unfinished online change"):
        online.abort("analytics", database_url=migrated_url)


def test_status_names_an_interrupted_change_and_resume_loses_at_most_one_batch(migrated_url: str) -> None:
    fill_analytics(migrated_url, 2000)
    snapshot(migrated_url)
    _killed(migrated_url, "copy:batch:3:uncommitted")
    [found] = online.status(database_url=migrated_url)
    assert found.interrupted and found.phase == "copy" and found.rows_done == 400  # batches 1-2 committed
    token = found.token
    assert f"table public.analytics__online_{token}" in found.objects
    assert f"function agentdb.online_{token}_capture" in found.objects
    assert f"trigger agentdb_online_{token}_capture on public.analytics" in found.objects
    assert "INTERRUPTED" in found.message and "resume or abort" in found.message
    assert found.as_dict()["interrupted"] is True
    # a new start refuses, naming the leftover
    with pytest.raises(OnlineChangeBusy, match="left at phase copy"):
        online.start("analytics", database_url=migrated_url)
    result = drive(migrated_url, "resume", kill_at="copy:batch:2")
    assert result.returncode == -9
    assert change_row(migrated_url)["rows_done"] == 800
    done = online.resume("analytics", database_url=migrated_url)
    assert done.status == "completed" and done.rows_done == 2000
    assert differences(migrated_url, "public.analytics", "online_test.before") == (0, 0)
    assert leftovers(migrated_url) == []


def test_cutover_gives_up_naming_the_blocker_and_swaps_nothing(migrated_url: str) -> None:
    fill_analytics(migrated_url, 500)
    _killed(migrated_url, "cutover:before")
    with psycopg.connect(migrated_url, application_name="report-job") as blocker:
        blocker.execute("SELECT count(*) FROM analytics WHERE country = 'DE'")  # ACCESS SHARE, left open
        pid = blocker.info.backend_pid
        settings = OnlineSettings(lock_timeout=0.1, lock_retries=3, retry_delay=0.05)
        started = time.monotonic()
        with pytest.raises(OnlineLockTimeout) as gave_up:
            online.resume("analytics", database_url=migrated_url, settings=settings)
        assert time.monotonic() - started < 10
        message = str(gave_up.value)
        assert f"pid {pid} (report-job)" in message
        assert "SELECT count(*) FROM analytics WHERE country = '?'" in message  # literals masked
        assert "the cut-over" in message and "nothing of it was done" in message
        assert relkind(migrated_url) == "r"
        row = change_row(migrated_url)
        assert row["status"] == "failed" and row["phase"] == "cutover" and "report-job" in row["error"]
    result = online.resume("analytics", database_url=migrated_url)
    assert result.status == "completed" and relkind(migrated_url) == "p"


def test_a_difference_stops_the_cutover_and_names_the_range(migrated_url: str) -> None:
    fill_analytics(migrated_url, 1000)
    _killed(migrated_url, "verify:before")
    row = change_row(migrated_url)
    with psycopg.connect(migrated_url) as conn:
        victim = conn.execute("SELECT max(id) FROM analytics").fetchone()
        assert victim is not None
        conn.execute(f"DELETE FROM public.{row['design']['new_table']} WHERE id = %s", (victim[0],))
    with pytest.raises(OnlineVerifyFailed) as failed:
        online.resume("analytics", database_url=migrated_url)
    assert "source 1 rows" not in str(failed.value)
    assert "id in [" in str(failed.value) and "new" in str(failed.value)
    lo, hi = failed.value.ranges[0].split("[")[1].split(")")[0].split(", ")
    assert int(lo) <= victim[0] < int(hi) + 1
    assert relkind(migrated_url) == "r"
    assert change_row(migrated_url)["status"] == "failed"
    online.abort("analytics", database_url=migrated_url)
    assert leftovers(migrated_url) == []


def test_a_changed_migration_file_refuses_to_resume(migrated_url: str, tmp_path: Path) -> None:
    fill_analytics(migrated_url, 600)
    migration = tmp_path / "007_partitioning.py"
    migration.write_text("revision = '007'\n")
    _killed(migrated_url, "copy:batch:1", extra={"revision": "007", "migration_file": str(migration)})
    row = change_row(migrated_url)
    assert row["revision"] == "007" and len(row["migration_checksum"]) == 64
    migration.write_text("revision = '007'  # edited\n")
    with pytest.raises(OnlineFileChanged, match="has changed since the change started"):
        online.resume("analytics", database_url=migrated_url)
    migration.unlink()
    with pytest.raises(OnlineFileChanged, match="is gone"):
        online.resume("analytics", database_url=migrated_url)
    migration.write_text("revision = '007'\n")
    assert online.resume("analytics", database_url=migrated_url).status == "completed"


def test_a_changed_source_refuses_the_cutover(migrated_url: str) -> None:
    fill_analytics(migrated_url, 300)
    _killed(migrated_url, "verify:after")
    with psycopg.connect(migrated_url) as conn:
        conn.execute("CREATE INDEX analytics_country_idx ON analytics (country)")
    with pytest.raises(OnlineSourceChanged, match="changed since online change"):
        online.resume("analytics", database_url=migrated_url)
    assert relkind(migrated_url) == "r"
    online.abort("analytics", database_url=migrated_url)
    assert leftovers(migrated_url) == []


def _wait_for(url: str, predicate: object, timeout: float = 60) -> online.ChangeStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = online.status(database_url=url)
        if found and predicate(found[0]):  # type: ignore[operator]
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"status never matched: {online.status(database_url=url)}")


def test_a_running_change_pauses_throttles_and_resumes(migrated_url: str) -> None:
    fill_analytics(migrated_url, 2000)
    snapshot(migrated_url)
    with psycopg.connect(migrated_url) as conn:
        conn.execute("CREATE TABLE online_test.hold AS SELECT 1 AS x")
    throttled = {**SMALL_BATCHES, "throttle_sql": "EXISTS (SELECT FROM online_test.hold)"}
    process = spawn(migrated_url, "start", settings=throttled)
    try:
        waiting = _wait_for(migrated_url, lambda s: s.waiting and "throttle_sql" in s.waiting)
        assert waiting.driven and waiting.phase == "copy" and waiting.rows_done == 0
        online.pause("analytics", database_url=migrated_url)
        paused = _wait_for(migrated_url, lambda s: s.status == "paused")
        assert paused.driven and "paused" in (paused.waiting or "")
        with psycopg.connect(migrated_url) as conn:
            conn.execute("DELETE FROM online_test.hold")
        time.sleep(1.0)
        assert online.status(database_url=migrated_url)[0].rows_done == 0  # still paused
        online.resume("analytics", database_url=migrated_url)
        assert process.wait(timeout=120) == 0, process.stderr.read() if process.stderr else ""
    finally:
        process.kill()
    assert change_row(migrated_url)["status"] == "completed"
    assert differences(migrated_url, "public.analytics", "online_test.before") == (0, 0)


def test_abort_of_a_running_change_is_done_by_its_driver(migrated_url: str) -> None:
    fill_analytics(migrated_url, 1000)
    with psycopg.connect(migrated_url) as conn:
        conn.execute("CREATE SCHEMA online_test")
        conn.execute("CREATE TABLE online_test.hold AS SELECT 1 AS x")
    before = schema_dump(migrated_url)
    process = spawn(migrated_url, "start",
                    settings={**SMALL_BATCHES, "throttle_sql": "EXISTS (SELECT FROM online_test.hold)"})
    try:
        _wait_for(migrated_url, lambda s: s.waiting and "throttle_sql" in s.waiting)
        result = online.abort("analytics", database_url=migrated_url)
        assert result.status == "aborted"
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    assert schema_dump(migrated_url) == before and leftovers(migrated_url) == []


def test_a_python_throttle_check_pauses_the_copy(migrated_url: str) -> None:
    fill_analytics(migrated_url, 1000)
    calls: list[int] = []
    notes: list[str] = []

    def check() -> str | None:
        calls.append(1)
        return "the nightly backup runs" if len(calls) <= 3 else None

    settings = OnlineSettings(batch_size=200, min_batch_size=200, max_batch_size=200, throttle_poll=0.05,
                              max_replica_lag=5.0)
    result = online.start("analytics", database_url=migrated_url, settings=settings, throttle=check,
                          progress=lambda p: notes.append(p.note or ""))
    assert result.status == "completed"
    assert "the nightly backup runs" in notes and len(calls) > 3


def test_a_bad_throttle_expression_is_refused_before_anything_changes(migrated_url: str) -> None:
    before = schema_dump(migrated_url)
    with pytest.raises(OnlineChangeRefused, match="throttle_sql fails"):
        online.start("analytics", database_url=migrated_url,
                     settings=OnlineSettings(throttle_sql="no_such_column > 1"))
    assert schema_dump(migrated_url) == before and online.status(database_url=migrated_url) == []


def test_cut_over_now_complete_later_keeping_the_old_table(migrated_url: str) -> None:
    fill_analytics(migrated_url, 400)
    snapshot(migrated_url)
    result = online.start("analytics", database_url=migrated_url, settings=OnlineSettings(complete=False))
    assert result.status == "cut_over" and relkind(migrated_url) == "p"
    old = f"public.analytics__old_{result.token}"
    assert differences(migrated_url, old, "online_test.before") == (0, 0)
    with pytest.raises(OnlineChangeRefused, match="already cut over"):
        online.abort("analytics", database_url=migrated_url)
    done = online.complete("analytics", database_url=migrated_url, keep_old=True)
    assert done.status == "completed"
    with psycopg.connect(migrated_url) as conn:
        kept = conn.execute("SELECT archive_table, row_count FROM agentdb.archived_tables "
                            "WHERE table_name = 'analytics'").fetchone()
        assert kept == (f"analytics_online_{result.token}", 400)
        assert conn.execute("SELECT to_regclass(%s)", (old,)).fetchone() == (None,)
    assert differences(migrated_url, f"agentdb_archive.analytics_online_{result.token}",
                       "online_test.before") == (0, 0)


def test_ensure_starts_resumes_or_does_nothing_as_a_migration_needs(migrated_url: str, tmp_path: Path) -> None:
    fill_analytics(migrated_url, 800)
    snapshot(migrated_url)
    migration = tmp_path / "007_partitioning.py"
    migration.write_text("revision = '007'\n")
    _killed(migrated_url, "copy:batch:2", extra={"revision": "007", "migration_file": str(migration)})
    resumed = online.ensure("analytics", "partition", database_url=migrated_url, revision="007",
                            migration_file=migration)
    assert resumed is not None and resumed.status == "completed" and resumed.revision == "007"
    assert online.ensure("analytics", "partition", database_url=migrated_url) is None  # done already
    with pytest.raises(OnlineChangeBusy, match="unpartition change at phase copy, not partition"):
        _killed(migrated_url, "copy:before", extra={"kind": "unpartition"})
        online.ensure("analytics", "partition", database_url=migrated_url)
    back = online.ensure("analytics", "unpartition", database_url=migrated_url)
    assert back is not None and back.status == "completed" and relkind(migrated_url) == "r"
    assert online.ensure("analytics", "unpartition", database_url=migrated_url) is None
    assert differences(migrated_url, "public.analytics", "online_test.before") == (0, 0)


@pytest.fixture
def migrated_url(plain_analytics_url: str) -> str:
    """These tests convert analytics themselves: a database at 006, where it is still one plain table (at head,
    migration 007 has partitioned it)."""
    return plain_analytics_url
