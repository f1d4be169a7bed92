"""kill -9 of the process driving the partition conversion, with writers running the whole time.

Writer threads insert, update (also the partition key) and delete analytics
rows on their own connections; each write is mirrored, in the same
transaction, into a reference table, so the reference holds exactly the
acknowledged writes.  The driving process is killed at every phase boundary
(the engine's kill hook) and at random points (random hook points, and
SIGKILL from outside at random times); each time a new process resumes from
the checkpoint.  At the end analytics is partitioned and equals the
reference row by row (EXCEPT ALL both ways): nothing lost, nothing
resurrected, no stale version, nothing left behind.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from _online_helpers import change_row, differences, drive, fill_analytics, leftovers, relkind, spawn

from agentdb import online

ROWS = 20_000
SETTINGS = {"batch_size": 250, "min_batch_size": 250, "max_batch_size": 250, "lock_retries": 30,
            "throttle_poll": 0.1}

#: Every phase boundary, and the points inside a phase where a crash is most interesting.
BOUNDARIES = [
    "start:before", "start:step:1", "start:step:2",
    "copy:before", "copy:batch:3:uncommitted", "copy:batch:4", "copy:after",
    "constraints:before", "constraints:step:2", "constraints:after",
    "verify:before", "verify:after",
    "cutover:before", "cutover:locked", "cutover:after",
    "complete:before", "complete:step:1", "complete:after",
]


class Writers:
    """Threads writing analytics and mirroring every committed write into online_test.ref."""

    def __init__(self, url: str, count: int = 2, seed: int = 0) -> None:
        self.url = url
        self.stop = threading.Event()
        self.commits = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(seed + n,), daemon=True) for n in range(count)]

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(self.url, application_name="online-test-writer") as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM online_test.ref")]
            conn.commit()
            while not self.stop.is_set():
                op = rng.random()
                key = rng.choice(ids)
                try:
                    with conn.transaction():
                        if op < 0.4:
                            row = conn.execute(
                                "WITH w AS (INSERT INTO analytics (user_id, event_type, country, properties, "
                                "created_at) VALUES (NULL, 'play', %s, jsonb_build_object('w', %s::int), "
                                "now() - make_interval(days => %s)) RETURNING *) "
                                "INSERT INTO online_test.ref SELECT * FROM w RETURNING id",
                                (rng.choice(["DE", "FR", None]), rng.randrange(1000), rng.randrange(150)),
                            ).fetchone()
                            if row:
                                ids.append(row[0])
                        elif op < 0.75:
                            conn.execute(
                                "WITH w AS (UPDATE analytics SET country = %s, properties = properties || "
                                "jsonb_build_object('u', %s::int) WHERE id = %s RETURNING *) "
                                "UPDATE online_test.ref r SET country = w.country, properties = w.properties "
                                "FROM w WHERE r.id = w.id",
                                (rng.choice(["SE", "NO", "US"]), rng.randrange(1000), key),
                            )
                        elif op < 0.87:
                            conn.execute(
                                "WITH w AS (UPDATE analytics SET created_at = created_at + make_interval(days => %s) "
                                "WHERE id = %s RETURNING *) "
                                "UPDATE online_test.ref r SET created_at = w.created_at FROM w WHERE r.id = w.id",
                                (rng.choice([-40, -3, 5, 33]), key),
                            )
                        else:
                            conn.execute(
                                "WITH w AS (DELETE FROM analytics WHERE id = %s RETURNING id) "
                                "DELETE FROM online_test.ref r USING w WHERE r.id = w.id", (key,))
                    with self.lock:
                        self.commits += 1
                except psycopg.Error as exc:
                    # Rolled back on both tables: the reference stays exact.  Counted, and shown if many.
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                    if conn.broken:
                        return
                time.sleep(0.003)


@pytest.fixture
def loaded(migrated_url: str) -> Iterator[str]:
    fill_analytics(migrated_url, ROWS, months=8)
    with psycopg.connect(migrated_url) as conn:
        conn.execute("CREATE SCHEMA online_test")
        conn.execute("CREATE TABLE online_test.ref AS SELECT * FROM analytics")
        conn.execute("ALTER TABLE online_test.ref ADD PRIMARY KEY (id)")
    yield migrated_url


def _check_result(url: str, writers: Writers) -> None:
    assert writers.commits > 100, "the writers did not write during the change"
    # A writer transaction may fail (e.g. a deadlock with another writer); none may be lost once committed.
    assert len(writers.failures) < writers.commits / 20, writers.failures[:5]
    assert relkind(url) == "p"
    assert differences(url, "public.analytics", "online_test.ref") == (0, 0)
    assert leftovers(url) == []
    assert online.status(database_url=url) == []
    assert change_row(url)["status"] == "completed"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM analytics").fetchone() == conn.execute(
            "SELECT count(*) FROM online_test.ref").fetchone()


def test_kill_at_every_phase_boundary_then_resume_loses_nothing(loaded: str) -> None:
    with Writers(loaded, seed=1) as writers:
        for number, point in enumerate(BOUNDARIES):
            result = drive(loaded, "start" if number == 0 else "resume", kill_at=point, settings=SETTINGS)
            assert result.returncode == -9, f"not killed at {point}: {result.stderr[-2000:]}"
            if point != "complete:after":
                _wait_interrupted(loaded, point)
        time.sleep(0.5)  # writes after the cut-over, into the partitioned table
    _check_result(loaded, writers)


def _wait_interrupted(url: str, point: str, timeout: float = 10) -> None:
    """The killed driver's session outlives it until the server notices (a moment; longer on a busy machine):
    until then its lock makes the change look driven, then status() flags it interrupted."""
    deadline = time.monotonic() + timeout
    while True:
        [found] = online.status(database_url=url)
        if found.interrupted:
            return
        assert time.monotonic() < deadline, (point, found.message)
        time.sleep(0.02)


def _driven(url: str, process: subprocess.Popen[str], timeout: float = 60) -> bool:
    """Wait until the spawned process drives the change (holds its lock); False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        found = online.status(database_url=url)
        if found and found[0].driven:
            return True
        time.sleep(0.05)
    return False


def test_kill_at_random_points_then_resume_loses_nothing(loaded: str) -> None:
    seed = int(os.environ.get("AGENTDB_TEST_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    print(f"random kill points: AGENTDB_TEST_SEED={seed}")
    # Random named points early in the copy...
    copy_points = [f"copy:batch:{n}{rng.choice(['', ':uncommitted'])}" for n in sorted(rng.sample(range(1, 15), 4))]
    delivered = 0
    with Writers(loaded, seed=seed) as writers:
        for number, point in enumerate(copy_points):
            result = drive(loaded, "start" if number == 0 else "resume", kill_at=point, settings=SETTINGS)
            assert result.returncode == -9, f"not killed at {point}: {result.stderr[-2000:]}"
            delivered += 1
        # ...then SIGKILL from outside at a random moment of a live driver's work, while the copy goes on
        # (slowed down by a throttle expression that sleeps 30 ms before each batch of 100 rows)...
        external = 0
        slow = {**SETTINGS, "batch_size": 100, "min_batch_size": 100, "max_batch_size": 100,
                "throttle_sql": "pg_sleep(0.03) IS NULL"}
        while external < 6:
            [found] = online.status(database_url=loaded)
            assert found.phase == "copy", f"the copy ended after {external} external kills"
            process = spawn(loaded, "resume", settings=slow)
            assert _driven(loaded, process), process.stderr.read() if process.stderr else ""
            time.sleep(rng.uniform(0.05, 1.0))
            assert process.poll() is None
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            external += 1
        delivered += external
        # ...then random named points in the foreign-key phase, and the rest to the end.
        for point in [f"constraints:step:{n}" for n in sorted(rng.sample(range(1, 20), 2))]:
            result = drive(loaded, "resume", kill_at=point, settings=SETTINGS)
            assert result.returncode == -9, f"not killed at {point}: {result.stderr[-2000:]}"
            delivered += 1
        final = drive(loaded, "resume")
        assert final.returncode == 0, final.stderr[-2000:]
        time.sleep(0.5)
    print(f"kills delivered: {delivered} ({delivered - external} named, {external} from outside)")
    assert delivered >= 12
    _check_result(loaded, writers)


@pytest.fixture
def migrated_url(plain_analytics_url: str) -> str:
    """These tests convert analytics themselves: a database at 006, where it is still one plain table (at head,
    migration 007 has partitioned it)."""
    return plain_analytics_url
