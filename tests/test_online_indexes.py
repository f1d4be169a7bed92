"""Kinds create_index, drop_index and add_unique: CONCURRENTLY, per partition on a partitioned table (where
add_unique gives a unique index), and an INVALID index left by a failed build cleaned up."""

from __future__ import annotations

import random

import psycopg
import pytest
from _online_helpers import fill_analytics, leftovers
from _online_kind_helpers import SMALL, Writers, drive, invalid_indexes, make_tables, par_writes, scalar
from conftest import schema_dump

from agentdb import online
from agentdb.errors import OnlineChangeRefused, OnlineLockTimeout, OnlineStepFailed


def test_create_index_concurrently_while_writers_write(database_url: str) -> None:
    make_tables(database_url)
    plan = online.plan("par", "create_index", database_url=database_url, name="par_amount_idx", columns=["amount"])
    assert "CREATE INDEX CONCURRENTLY \"par_amount_idx\" ON \"public\".\"par\"" in plan.sql()
    assert plan.as_dict()["phases"][0]["steps"][0]["concurrent"] is True
    with Writers(database_url, par_writes) as writers:
        result = online.run(plan, database_url=database_url)
    assert writers.commits > 0 and result.status == "completed"
    assert scalar(database_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'par_amount_idx'::regclass")
    # done already: a migration that runs it again has nothing to do
    assert online.ensure("par", "create_index", database_url=database_url, name="par_amount_idx",
                         columns=["amount"]) is None


def test_create_index_on_a_partitioned_table_builds_each_partition_then_attaches(migrated_url: str) -> None:
    fill_analytics(migrated_url, 2000)
    result = online.start("analytics", "create_index", database_url=migrated_url, name="analytics_country_idx",
                          columns=["country"])
    assert result.status == "completed"
    with psycopg.connect(migrated_url) as conn:
        parent = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'analytics_country_idx'::regclass"
                              ).fetchone()
        attached = conn.execute(
            "SELECT count(*) FILTER (WHERE i.indisvalid), count(*) FROM pg_inherits h JOIN pg_index i "
            "ON i.indexrelid = h.inhrelid WHERE h.inhparent = 'analytics_country_idx'::regclass").fetchone()
        partitions = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'analytics'::regclass"
                                  ).fetchone()
    assert parent == (True,) and attached is not None and partitions is not None
    assert attached[0] == attached[1] == partitions[0] > 1
    assert invalid_indexes(migrated_url) == []


def test_abort_of_a_partitioned_index_build_leaves_nothing(migrated_url: str) -> None:
    fill_analytics(migrated_url, 500)
    before = schema_dump(migrated_url)
    result = drive(migrated_url, "start", kill_at="build:step:3",
                   extra={"kind": "create_index", "name": "analytics_device_idx", "columns": ["device"]})
    assert result.returncode == -9, result.stderr[-2000:]
    [found] = online.status(database_url=migrated_url)
    assert found.interrupted and any("analytics_device_idx" in o for o in found.objects)
    assert online.abort("analytics", database_url=migrated_url).status == "aborted"
    assert schema_dump(migrated_url) == before
    assert leftovers(migrated_url) == []


def test_add_unique_with_duplicates_fails_and_leaves_no_invalid_index(database_url: str) -> None:
    make_tables(database_url)
    before = schema_dump(database_url)
    with pytest.raises(OnlineStepFailed, match="par_country_key"):
        online.start("par", "add_unique", database_url=database_url, name="par_country_key", columns=["country"],
                     settings=online.OnlineSettings(**SMALL))  # type: ignore[arg-type]
    assert invalid_indexes(database_url) == []  # the failed build's INVALID index was dropped at once
    assert online.abort("par", database_url=database_url).status == "aborted"
    assert schema_dump(database_url) == before


def test_add_unique_builds_concurrently_then_attaches(database_url: str) -> None:
    make_tables(database_url)
    with Writers(database_url, par_writes) as writers:
        result = online.start("par", "add_unique", database_url=database_url, name="par_name_key", columns="name")
    assert writers.commits > 0 and result.status == "completed"
    assert scalar(database_url, "SELECT contype::text FROM pg_constraint WHERE conname = 'par_name_key'") == "u"
    with pytest.raises(psycopg.errors.UniqueViolation), psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO par (name) VALUES ('first1 last1')")


def test_add_unique_on_a_partitioned_table_is_a_unique_index_built_per_partition(migrated_url: str) -> None:
    url = migrated_url
    fill_analytics(url, 1000)
    before = schema_dump(url)
    with pytest.raises(OnlineChangeRefused, match="must include its partition key: created_at missing"):
        online.plan("analytics", "add_unique", database_url=url, name="analytics_session_key", columns="session_id")
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO analytics (event_type, session_id, created_at) SELECT 'play', session_id, "
                     "created_at FROM analytics WHERE id = 10")
    with pytest.raises(OnlineChangeRefused, match=r"1 value\(s\) of \(session_id, created_at\) occur more than once"):
        online.start("analytics", "add_unique", database_url=url, name="analytics_session_key",
                     columns=["session_id", "created_at"])
    assert schema_dump(url) == before and invalid_indexes(url) == [] and online.status(database_url=url) == []
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM analytics WHERE id = (SELECT max(id) FROM analytics)")
    plan = online.plan("analytics", "add_unique", database_url=url, name="analytics_session_key",
                       columns=["session_id", "created_at"])
    assert "not a named constraint" in plan.sql() and 'ON ONLY "public"."analytics"' in plan.sql()
    with Writers(url, _analytics_inserts) as writers:
        assert online.run(plan, database_url=url).status == "completed"
    assert writers.commits > 0 and not writers.failures, writers.failures[:3]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT indisunique, indisvalid FROM pg_index WHERE indexrelid = "
                            "'analytics_session_key'::regclass").fetchone() == (True, True)
        attached = conn.execute("SELECT count(*) FROM pg_inherits h JOIN pg_index i ON i.indexrelid = h.inhrelid "
                                "WHERE h.inhparent = 'analytics_session_key'::regclass AND i.indisunique "
                                "AND i.indisvalid").fetchone()
        assert attached == conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'analytics'::regclass"
                                        ).fetchone()
        # a foreign key can reference it
        conn.execute("CREATE TABLE public.session_note (session_id uuid, at timestamptz, "
                     "FOREIGN KEY (session_id, at) REFERENCES analytics (session_id, created_at))")
    with pytest.raises(psycopg.errors.UniqueViolation), psycopg.connect(url) as conn:
        conn.execute("INSERT INTO analytics (event_type, session_id, created_at) SELECT 'play', session_id, "
                     "created_at FROM analytics WHERE id = 20")
    assert invalid_indexes(url) == []
    assert online.ensure("analytics", "add_unique", database_url=url, name="analytics_session_key",
                         columns=["session_id", "created_at"]) is None


def _analytics_inserts(conn: psycopg.Connection, rng: random.Random) -> None:
    conn.execute("INSERT INTO analytics (event_type, session_id) VALUES ('play', gen_random_uuid())")


def test_a_failed_or_aborted_partitioned_add_unique_leaves_nothing(migrated_url: str) -> None:
    url = migrated_url
    fill_analytics(url, 500)
    before = schema_dump(url)
    change = {"kind": "add_unique", "name": "analytics_session_key", "columns": ["session_id", "created_at"]}
    result = drive(url, "start", kill_at="build:step:3", extra=dict(change))
    assert result.returncode == -9, result.stderr[-2000:]
    [found] = online.status(database_url=url)
    assert found.interrupted and any("analytics_session_key" in o for o in found.objects)
    assert online.abort("analytics", database_url=url).status == "aborted"
    assert schema_dump(url) == before and invalid_indexes(url) == [] and leftovers(url) == []
    # A duplicate written after the plan fails its partition's build; that INVALID index is dropped at once,
    # and abort drops the rest.
    plan = online.plan("analytics", "add_unique", database_url=url, name="analytics_session_key",
                       columns=["session_id", "created_at"])
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO analytics (event_type, session_id, created_at) SELECT 'play', session_id, "
                     "created_at FROM analytics WHERE id = 5")
    with pytest.raises(OnlineStepFailed, match="could not create unique index"):
        online.run(plan, database_url=url)
    assert invalid_indexes(url) == ["analytics_session_key"]  # the parent's, catalogue only, until the abort
    assert online.abort("analytics", database_url=url).status == "aborted"
    assert schema_dump(url) == before and invalid_indexes(url) == [] and leftovers(url) == []


def test_drop_index_concurrently_and_on_a_partitioned_table(migrated_url: str) -> None:
    make_tables(migrated_url, 200)
    plan = online.plan("par", "drop_index", database_url=migrated_url, name="par_city_idx")
    assert "DROP INDEX CONCURRENTLY IF EXISTS \"public\".\"par_city_idx\"" in plan.sql()
    assert online.run(plan, database_url=migrated_url).status == "completed"
    assert scalar(migrated_url, "SELECT to_regclass('public.par_city_idx')") is None
    assert online.start("analytics", "drop_index", database_url=migrated_url,
                        name="analytics_track_id_idx").status == "completed"
    assert scalar(migrated_url, "SELECT to_regclass('public.analytics_track_id_idx')") is None
    with pytest.raises(OnlineChangeRefused, match="backs a constraint"):
        online.plan("par", "drop_index", database_url=migrated_url, name="par_pkey")
    with pytest.raises(OnlineChangeRefused, match="no index 'nope'"):
        online.plan("par", "drop_index", database_url=migrated_url, name="nope")


def test_a_concurrent_build_blocked_by_an_open_writer_gives_up_naming_it(database_url: str) -> None:
    make_tables(database_url, 100)
    settings = online.OnlineSettings(concurrent_lock_timeout=0.3, lock_retries=2, retry_delay=0.05)
    with psycopg.connect(database_url, application_name="long-writer") as writer:
        writer.execute("INSERT INTO par (name) VALUES ('open')")  # ROW EXCLUSIVE, transaction left open
        pid = writer.info.backend_pid
        with pytest.raises(OnlineLockTimeout) as gave_up:
            online.start("par", "create_index", database_url=database_url, settings=settings,
                         name="par_amount_idx", columns=["amount"])
        assert f"pid {pid} (long-writer)" in str(gave_up.value)
    # Its cleanup (DROP INDEX CONCURRENTLY) waited for the same writer; the leftover is named, and dropped first
    # by the resume.
    [left] = online.status(database_url=database_url)
    assert left.status == "failed" and "long-writer" in (left.error or "")
    assert online.resume("par", database_url=database_url).status == "completed"
    assert invalid_indexes(database_url) == []
