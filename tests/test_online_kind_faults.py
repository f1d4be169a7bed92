"""The fault matrix of the online kinds other than partition (issue 12), the slice CI runs.

With writer threads inserting, updating and deleting the whole time, the process driving a change is killed
(SIGKILL, the engine's kill hook) at every phase boundary its plan exposes (the points are enumerated from the
kind's phases, so a new phase or step is covered at once), a kind of each family (rebuild, expand/contract,
constraint/index) in turn, and at 20 random points (seeded, printed) spread over the other kinds; each time a
new process resumes.  At the end the table equals the writers' reference row by row, nothing is left behind and
no change is unfinished.  Then: abort at every phase of a kind of each family leaves the table exactly as it
was; a cut-over (of a rebuild, and the contraction of an expand/contract change) that cannot get its lock
gives up naming the blocker, and goes on once it is gone; a concurrent index build (or drop) killed with its
session leaves an INVALID index, which the resume drops.

``benchmarks/faults_online.py`` runs the whole matrix: every boundary and 20 random points of every kind,
and abort at every phase of every kind.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator

import psycopg
import pytest
from _online_fault_matrix import (
    BATCH,
    SCENARIOS,
    SETTINGS,
    Drivers,
    abort_at_each,
    abortable,
    boundaries,
    first,
    leftovers,
    make_tables,
    phases_of,
    random_points,
    run_points,
)
from conftest import schema_dump

from agentdb import online
from agentdb.errors import OnlineLockTimeout

ROWS = 2000
#: A kind of each family, at every boundary; the random points go to the others.
FAMILIES = {"rebuild": ("alter_column_type",), "expand": ("add_column",),
            "constraint": ("add_unique", "add_foreign_key")}
RANDOM_KINDS = ("rename_column", "split_column", "merge_columns", "create_index", "drop_index", "add_check")
RANDOM_POINTS = 20
SEED = int(os.environ.get("AGENTDB_TEST_SEED") or random.randrange(1 << 30))


@pytest.fixture(scope="module")
def drivers() -> Iterator[Drivers]:
    with Drivers() as server:
        yield server


@pytest.mark.parametrize("family", FAMILIES)
def test_kill_at_every_boundary_then_resume_loses_nothing(database_url: str, drivers: Drivers, family: str) -> None:
    make_tables(database_url, ROWS)
    for kind in FAMILIES[family]:
        scenario = SCENARIOS[kind]
        phases = phases_of(database_url, scenario)
        points = boundaries(phases)
        run = run_points(database_url, scenario, phases, points, drivers, ROWS)
        print(f"{kind}: {run.seconds:.1f}s, {run.commits} writes; " + ", ".join(
            f"{p} ({o})" for p, o in zip(points, run.outcomes, strict=False)))
        assert run.problems == [], f"{kind}: {run.problems}"
        assert run.outcomes.count("killed") >= len(phases) + 1


def _share(kind: str) -> int:
    """This kind's part of the 20 random points: spread over the kinds by the seed."""
    rng = random.Random(SEED)
    picks = list(RANDOM_KINDS) * (RANDOM_POINTS // len(RANDOM_KINDS))
    picks += rng.sample(RANDOM_KINDS, RANDOM_POINTS - len(picks))
    return picks.count(kind)


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_kill_at_random_points_then_resume_loses_nothing(database_url: str, drivers: Drivers, kind: str) -> None:
    make_tables(database_url, ROWS)
    scenario = SCENARIOS[kind]
    phases = phases_of(database_url, scenario)
    points = random_points(phases, random.Random(f"{SEED}-{kind}"), _share(kind), ROWS // BATCH - 1)
    replay = f"AGENTDB_TEST_SEED={SEED}: {kind} killed at {', '.join(points)}"
    print(replay)
    run = run_points(database_url, scenario, phases, points, drivers, ROWS, seed=SEED)
    assert run.problems == [], f"{replay}: {run.problems}"
    assert run.outcomes.count("killed") >= len(points) - 1, f"{replay}: {run.outcomes}"


@pytest.mark.parametrize("kinds", [("alter_column_type",), ("split_column",),
                                   ("add_foreign_key", "drop_index")], ids=FAMILIES)
def test_abort_at_every_phase_leaves_the_table_as_it_was(database_url: str, drivers: Drivers,
                                                         kinds: tuple[str, ...]) -> None:
    make_tables(database_url, 300)
    for kind in kinds:
        scenario = SCENARIOS[kind]
        points = abortable(phases_of(database_url, scenario), online.KINDS[kind].abortable_until_complete)
        run = abort_at_each(database_url, scenario, points, drivers, schema_dump)
        print(f"{kind}: {run.seconds:.1f}s; " + ", ".join(f"{p} ({o})" for p, o in zip(points, run.outcomes,
                                                                                      strict=False)))
        assert run.problems == [], f"{kind}: {run.problems}"
        assert run.outcomes == ["aborted"] * len(points)


def _column_type(url: str) -> object:
    return first(url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'par'::regclass "
                      "AND attname = 'id'")


def test_a_type_change_cutover_that_cannot_lock_gives_up_naming_the_blocker(database_url: str,
                                                                            drivers: Drivers) -> None:
    make_tables(database_url, 500)
    scenario = SCENARIOS["alter_column_type"]
    assert drivers.run(database_url, "start", table="par", kind=scenario.kind, options=scenario.options,
                       settings=SETTINGS, kill_at="cutover:before").killed
    with psycopg.connect(database_url, application_name="report-job") as blocker:
        blocker.execute("SELECT count(*) FROM par WHERE city = 'c7'")  # ACCESS SHARE, left open
        pid = blocker.info.backend_pid
        started = time.monotonic()
        with pytest.raises(OnlineLockTimeout) as gave_up:
            online.resume("par", database_url=database_url,
                          settings=online.OnlineSettings(lock_timeout=0.1, lock_retries=3, retry_delay=0.05))
        assert time.monotonic() - started < 10
        message = str(gave_up.value)
        assert "the cut-over" in message and "after 3 attempts" in message and "nothing of it was done" in message
        assert f"pid {pid} (report-job)" in message and "city = '?'" in message  # the blocker, literals masked
        assert _column_type(database_url) == "integer"
        [failed] = online.status(database_url=database_url)
        assert (failed.status, failed.phase) == ("failed", "cutover") and "report-job" in (failed.error or "")
    assert online.resume("par", database_url=database_url).status == "completed"
    assert _column_type(database_url) == "bigint" and leftovers(database_url) == []


def test_a_contraction_that_cannot_lock_gives_up_naming_the_blocker(database_url: str, drivers: Drivers) -> None:
    make_tables(database_url, 500)
    scenario = SCENARIOS["rename_column"]
    settings = {**scenario.settings(), "lock_timeout": 0.1, "lock_retries": 3, "retry_delay": 0.05}
    assert drivers.run(database_url, "start", table="par", kind=scenario.kind, options=scenario.options,
                       settings=settings).returncode == 0
    with psycopg.connect(database_url, application_name="report-job") as blocker:
        blocker.execute("SELECT count(*) FROM par WHERE town = 'c7'")
        pid = blocker.info.backend_pid
        with pytest.raises(OnlineLockTimeout) as gave_up:
            online.complete("par", database_url=database_url)
        message = str(gave_up.value)
        assert "phase complete" in message and "after 3 attempts" in message
        assert f"pid {pid} (report-job)" in message and "town = '?'" in message
        # still expanded: both columns, kept in step by the trigger
        blocker.rollback()
        blocker.execute("UPDATE par SET city = 'moved' WHERE id = 5")
        assert blocker.execute("SELECT town FROM par WHERE id = 5").fetchone() == ("moved",)
        blocker.rollback()
    assert online.complete("par", database_url=database_url).status == "completed"
    assert first(database_url, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'par'::regclass "
                                "AND attname = 'city' AND NOT attisdropped") == 0
    assert leftovers(database_url) == [] and online.status(database_url=database_url) == []


@pytest.mark.parametrize("kind", ["add_unique", "create_index", "drop_index"])
def test_a_concurrent_build_or_drop_killed_with_its_session_leaves_an_invalid_index_the_resume_drops(
        database_url: str, drivers: Drivers, kind: str) -> None:
    make_tables(database_url, ROWS)
    scenario = SCENARIOS[kind]
    name = scenario.options["name"]
    with psycopg.connect(database_url) as writer:
        writer.execute("UPDATE par SET amount = amount WHERE id = 1")  # open: the build (or drop) waits for it
        pid = drivers.spawn(database_url, "start", table="par", kind=kind, options=scenario.options,
                            settings=SETTINGS)
        try:
            backend = _waiting_build(database_url)
        except AssertionError:
            ended = drivers.wait()
            raise AssertionError(f"it never waited; the driver ended: {ended.output[-1500:]}") from None
        # The crash: the driving process and its session die in the middle of the build (or drop).
        os.kill(pid, signal.SIGKILL)
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        assert drivers.wait().killed
    assert f"invalid index {name}" in leftovers(database_url)
    deadline = time.monotonic() + 10
    while not (found := online.status(database_url=database_url))[0].interrupted:
        assert time.monotonic() < deadline, found[0].message
        time.sleep(0.05)
    resumed = drivers.run(database_url, "resume", table="par")
    assert resumed.returncode == 0, resumed.output
    for query, expected in scenario.checks:
        assert first(database_url, query) == expected, query
    assert leftovers(database_url) == [] and online.status(database_url=database_url) == []


def _waiting_build(url: str, timeout: float = 20) -> int:
    """The backend of the driver whose CREATE or DROP INDEX CONCURRENTLY waits for an older transaction."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT pid FROM pg_stat_activity WHERE query ~* '^(CREATE|DROP).*INDEX CONCURRENTLY' "
                               "AND wait_event_type = 'Lock'").fetchone()
            if row is not None:
                return int(row[0])
            time.sleep(0.02)
    raise AssertionError("no concurrent build or drop waited")
