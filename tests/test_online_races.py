"""The races between a copy batch and concurrent writers, each forced in both orders with two connections.

The capture trigger is installed (the change's *start* phase), then one
connection runs a copy batch in an open transaction while another writes the
same row; a lock wait (seen in ``pg_stat_activity``) fixes which goes first.
After each race the rest is copied and the new table must equal the source.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from _online_helpers import differences, fill_analytics, wait_until_waiting

from agentdb import online
from agentdb.online._sql import execute
from agentdb.online.copy import CopySpec, begin, next_batch


@dataclass
class Race:
    url: str
    new_table: str
    spec: CopySpec
    checkpoint: dict[str, Any]
    copier: sa.Connection
    writer: psycopg.Connection[Any]
    key: int

    def copier_pid(self) -> int:
        return int(self.copier.connection.driver_connection.info.backend_pid)  # type: ignore[union-attr]

    def batch(self) -> None:
        """One batch over every row, in the copier's open transaction."""
        next_batch(self.copier, self.spec, self.checkpoint, 1_000_000)

    def committed_batch(self) -> None:
        with self.copier.begin():
            self.batch()

    def new_rows(self, key: int) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(
                f"SELECT country, created_at, tableoid::regclass::text FROM public.{self.new_table} WHERE id = %s",
                (key,)).fetchall()

    def source_rows(self, key: int) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute("SELECT country, created_at FROM analytics WHERE id = %s", (key,)).fetchall()

    def finish_and_compare(self) -> None:
        """Copy everything (again: ON CONFLICT DO NOTHING) and compare new and source row by row."""
        if self.copier.in_transaction():
            self.copier.commit()
        with self.copier.begin():
            self.batch()
        assert differences(self.url, "public.analytics", f"public.{self.new_table}") == (0, 0)


@pytest.fixture(params=["ranges", "keyset"])
def race(migrated_url: str, request: pytest.FixtureRequest) -> Iterator[Race]:
    """Each race runs with both kinds of batch: ranges of analytics.id (what the engine uses for it) and
    keyset batches in primary-key order (tables whose key does not start with an integer)."""
    fill_analytics(migrated_url, 300)
    plan = online.plan("analytics", database_url=migrated_url)
    engine = sa.create_engine(sa.make_url(migrated_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as copier, psycopg.connect(migrated_url) as writer:
            with copier.begin():
                for step in plan.phase("start").steps:
                    for statement in step.statements:
                        execute(copier, statement)
            spec = plan.phase("copy").copy
            assert spec is not None
            spec = replace(spec, ranged=request.param == "ranges")
            with copier.begin():
                checkpoint = begin(copier, spec)
            assert checkpoint is not None and checkpoint["mode"] == ("range" if spec.ranged else "keyset")
            key = writer.execute("SELECT id FROM analytics ORDER BY id OFFSET 100 LIMIT 1").fetchone()
            writer.commit()
            assert key is not None
            yield Race(migrated_url, plan.design["new_table"], spec, checkpoint, copier, writer, int(key[0]))
    finally:
        engine.dispose()


def _in_thread(work: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def _join(thread: threading.Thread, errors: list[BaseException]) -> None:
    thread.join(timeout=30)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def test_delete_committed_while_the_batch_waits_is_not_resurrected(race: Race) -> None:
    race.writer.execute("DELETE FROM analytics WHERE id = %s", (race.key,))
    thread, errors = _in_thread(race.committed_batch)
    wait_until_waiting(race.url, race.copier_pid())  # the batch waits for the deleting writer
    race.writer.commit()
    _join(thread, errors)
    assert race.new_rows(race.key) == []
    race.finish_and_compare()


def test_delete_after_the_batch_copied_the_row_removes_the_copy(race: Race) -> None:
    race.copier.begin()
    race.batch()
    writer_pid = race.writer.info.backend_pid

    def delete() -> None:
        race.writer.execute("DELETE FROM analytics WHERE id = %s", (race.key,))
        race.writer.commit()

    thread, errors = _in_thread(delete)
    wait_until_waiting(race.url, writer_pid)  # the writer waits for the batch's FOR KEY SHARE
    race.copier.commit()
    _join(thread, errors)
    assert race.new_rows(race.key) == [] and race.source_rows(race.key) == []
    race.finish_and_compare()


def test_update_committed_while_the_batch_waits_is_not_overwritten_by_the_old_version(race: Race) -> None:
    old = race.source_rows(race.key)[0]
    race.writer.execute("UPDATE analytics SET country = 'NO' WHERE id = %s", (race.key,))
    thread, errors = _in_thread(race.committed_batch)
    # The batch read the old version in its snapshot; its insert waits for the writer's copy of the new one.
    wait_until_waiting(race.url, race.copier_pid())
    race.writer.commit()
    _join(thread, errors)
    assert [r[0] for r in race.new_rows(race.key)] == ["NO"] and old[0] != "NO"
    race.finish_and_compare()


def test_update_rolled_back_while_the_batch_waits_leaves_the_old_version(race: Race) -> None:
    old = race.source_rows(race.key)[0]
    race.writer.execute("UPDATE analytics SET country = 'NO' WHERE id = %s", (race.key,))
    thread, errors = _in_thread(race.committed_batch)
    wait_until_waiting(race.url, race.copier_pid())
    race.writer.rollback()
    _join(thread, errors)
    assert [r[0] for r in race.new_rows(race.key)] == [old[0]]
    race.finish_and_compare()


def test_update_after_the_batch_copied_the_row_overwrites_the_copy(race: Race) -> None:
    race.copier.begin()
    race.batch()
    writer_pid = race.writer.info.backend_pid

    def update() -> None:
        race.writer.execute("UPDATE analytics SET country = 'SE' WHERE id = %s", (race.key,))
        race.writer.commit()

    thread, errors = _in_thread(update)
    wait_until_waiting(race.url, writer_pid)  # its upsert waits for the batch's uncommitted insert
    race.copier.commit()
    _join(thread, errors)
    assert [r[0] for r in race.new_rows(race.key)] == ["SE"]
    race.finish_and_compare()


def test_partition_key_update_before_the_batch_moves_the_row_once(race: Race) -> None:
    old = race.source_rows(race.key)[0]
    race.writer.execute("UPDATE analytics SET created_at = created_at + interval '40 days' WHERE id = %s",
                        (race.key,))
    thread, errors = _in_thread(race.committed_batch)
    wait_until_waiting(race.url, race.copier_pid())  # a key update conflicts with FOR KEY SHARE
    race.writer.commit()
    _join(thread, errors)
    rows = race.new_rows(race.key)
    assert len(rows) == 1 and rows[0][1] == race.source_rows(race.key)[0][1] != old[1]
    race.finish_and_compare()


def test_partition_key_update_after_the_batch_deletes_the_old_key(race: Race) -> None:
    old = race.source_rows(race.key)[0]
    race.copier.begin()
    race.batch()
    writer_pid = race.writer.info.backend_pid

    def move() -> None:
        race.writer.execute("UPDATE analytics SET created_at = created_at - interval '40 days' WHERE id = %s",
                            (race.key,))
        race.writer.commit()

    thread, errors = _in_thread(move)
    wait_until_waiting(race.url, writer_pid)
    race.copier.commit()
    _join(thread, errors)
    rows = race.new_rows(race.key)
    assert len(rows) == 1 and rows[0][1] == race.source_rows(race.key)[0][1] != old[1]
    month = rows[0][1].strftime("%Y%m")
    assert rows[0][2] in (f"analytics_p{month}", "analytics_default")
    race.finish_and_compare()


def test_insert_during_the_batch_reaches_the_new_table_once(race: Race) -> None:
    race.copier.begin()
    race.batch()
    race.writer.execute("INSERT INTO analytics (event_type, country) VALUES ('play', 'IT')")
    race.writer.execute("INSERT INTO analytics (id, event_type, created_at) VALUES (%s, 'skip', now())",
                        (race.key,))  # an explicit id below the batch's last key: another key (id, created_at)
    race.writer.commit()
    race.copier.commit()
    with psycopg.connect(race.url) as conn:
        counts = conn.execute(f"SELECT count(*) FROM public.{race.new_table} WHERE id = %s", (race.key,)).fetchone()
    assert counts == (2,)
    race.finish_and_compare()


@pytest.fixture
def migrated_url(plain_analytics_url: str) -> str:
    """These tests convert analytics themselves: a database at 006, where it is still one plain table (at head,
    migration 007 has partitioned it)."""
    return plain_analytics_url
