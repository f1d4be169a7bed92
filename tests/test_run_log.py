"""What a run did is said once, after it happened (issue 7, §2 and §3).

The runner logs one INFO line per migration applied or rolled back on the
``agentdb.run`` logger, and one per archive event of the step, once the step's
transaction has committed; a dry run (rolled back: nothing happened) logs none.
Each test's handler looks at the database from a connection of its own at the
moment a line is logged, so a line logged before its commit is caught.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from conftest import fixture_migration

import agentdb
from agentdb.errors import MigrationFailed
from agentdb.runtime.environment import RUN_LOGGER, StepResult, describe_event

STEP_LINE = re.compile(r"^(upgrade|downgrade) (\d{3})_\w+ \((\d+ ms|\d+\.\d s)\)$")


@dataclass(frozen=True)
class Seen:
    message: str
    #: ``agentdb.alembic_version`` as another connection saw it when the line was logged.
    committed_version: str | None
    #: Archive tables another connection saw in ``agentdb.archived_tables`` (restored ones included).
    committed_archives: frozenset[str]


class _Watcher(logging.Handler):
    def __init__(self, url: str) -> None:
        super().__init__(logging.DEBUG)
        self.url = url
        self.seen: list[Seen] = []

    def emit(self, record: logging.LogRecord) -> None:
        # lock_timeout: a line logged while the run's transaction still holds its locks must not hang the test.
        with psycopg.connect(self.url, autocommit=True, options="-c lock_timeout=2s") as conn:
            try:
                version = conn.execute(
                    "SELECT CASE WHEN to_regclass('agentdb.alembic_version') IS NOT NULL "
                    "THEN (SELECT string_agg(version_num, ',') FROM agentdb.alembic_version) END"
                ).fetchone()
                archives: set[str] = set()
                if conn.execute("SELECT to_regclass('agentdb.archived_tables')").fetchone() != (None,):
                    archives = {r[0] for r in conn.execute("SELECT archive_table FROM agentdb.archived_tables")}
            except psycopg.errors.LockNotAvailable:
                self.seen.append(Seen(record.getMessage(), "<locked by a transaction still open>", frozenset()))
                return
        self.seen.append(Seen(record.getMessage(), version[0] if version else None, frozenset(archives)))


@pytest.fixture
def watched(database_url: str) -> Iterator[_Watcher]:
    logger = logging.getLogger(RUN_LOGGER)
    watcher = _Watcher(database_url)
    level = logger.level
    logger.addHandler(watcher)
    logger.setLevel(logging.INFO)
    try:
        yield watcher
    finally:
        logger.removeHandler(watcher)
        logger.setLevel(level)


def _steps(watcher: _Watcher) -> list[Seen]:
    return [seen for seen in watcher.seen if STEP_LINE.match(seen.message)]


def test_one_line_per_migration_logged_after_its_transaction_committed(database_url: str, watched: _Watcher) -> None:
    report = agentdb.upgrade("003", database_url=database_url)
    assert [s.message.split()[:2] for s in watched.seen] == [
        ["upgrade", "001_initial_schema"], ["upgrade", "002_add_spotify_tables"], ["upgrade", "003_add_ai_tables"]]
    for seen in watched.seen:
        assert STEP_LINE.match(seen.message) and len(seen.message) <= 100, seen.message
        # Logged once the step's own transaction had committed: another connection already sees its revision.
        assert seen.committed_version == seen.message.split()[1][:3], seen
    assert [s.revision for s in report.steps] == ["001", "002", "003"]
    assert all(round(s.duration_ms, 1) == s.duration_ms and s.events == () for s in report.steps)


def test_archive_events_are_logged_once_after_commit_and_kept_on_the_step(
    database_url: str, watched: _Watcher
) -> None:
    agentdb.upgrade("head", database_url=database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO tracks (title, duration_ms) VALUES ('Kept', 1000)")
    watched.seen.clear()

    report = agentdb.downgrade("001", database_url=database_url)
    archived = [s for s in watched.seen if s.message.lstrip().startswith("archived ")]
    with psycopg.connect(database_url) as conn:
        registry = {r[0]: r[1] for r in conn.execute("SELECT archive_table, table_name FROM agentdb.archived_tables")}
    assert len(archived) == len(registry), "one line per archived table, once"
    tracks = [s for s in archived if " of public.tracks in agentdb_archive.tracks_002_" in s.message]
    assert len(tracks) == 1 and tracks[0].message.startswith("  archived 1 row of public.tracks in "), archived
    for seen in archived:
        name = seen.message.rsplit(".", 1)[-1]
        assert name in seen.committed_archives, "the archive existed (committed) when the line was logged"
    # The event line follows its own step's line.
    messages = [s.message for s in watched.seen]
    assert messages[messages.index(tracks[0].message) - 1].startswith("downgrade 002_add_spotify_tables ")
    step_002 = next(s for s in report.steps if s.revision == "002")
    assert next(e for e in step_002.events if e.get("archived") == "public.tracks")["rows"] == 1
    assert sum(len(s.events) for s in report.steps) == len(archived)

    watched.seen.clear()
    agentdb.upgrade("head", database_url=database_url)
    restored = [s.message for s in watched.seen if s.message.lstrip().startswith("restored ")]
    assert sum(" of public.tracks" in m for m in restored) == 1, restored
    assert len(restored) == len(registry)


def test_a_dry_run_logs_nothing_it_only_rehearsed(database_url: str, watched: _Watcher) -> None:
    agentdb.upgrade("head", database_url=database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO tracks (title, duration_ms) VALUES ('Kept', 1000)")
    watched.seen.clear()
    report = agentdb.dry_run("001", direction="downgrade", database_url=database_url)
    assert report.rolled_back and any(step.observed.archive for step in report.steps)
    assert watched.seen == []


def test_a_failed_step_is_not_logged_the_committed_ones_before_it_are(database_url: str, watched: _Watcher,
                                                                     script_location) -> None:  # type: ignore[no-untyped-def]
    script_location({"002_fails.py": fixture_migration("002", "001", "op.execute('SELECT 1/0')")}, upto="001")
    with pytest.raises(MigrationFailed):
        agentdb.upgrade("head", database_url=database_url)
    assert [s.message.split()[:2] for s in watched.seen] == [["upgrade", "001_initial_schema"]]


def test_lines_fit_a_100_column_terminal() -> None:
    long = StepResult("005", "downgrade", "Add analytics, event logs, the trigger-filled audit log, consent, "
                      "access roles and the bulk-change guard.", 1234.5)
    assert len(long.describe()) <= 100 and long.describe().endswith("… (1.2 s)")
    assert StepResult("001", "upgrade", "Initial schema.", 24.4).describe() == "upgrade 001 Initial schema (24 ms)"
    named = StepResult("005", "upgrade", "Add analytics...", 190.2, (), "005_add_analytics_tables")
    assert named.describe() == "upgrade 005_add_analytics_tables (190 ms)", "the file name, never cut"
    assert describe_event({"archived": "public.consent", "rows": 884, "archive": "agentdb_archive.consent_005_ab"}) \
        == "archived 884 rows of public.consent in agentdb_archive.consent_005_ab"
    purged = describe_event({"purged": "public.users", "rows": 1})
    assert purged == "purged 1 row of public.users (not archived: --purge)"

