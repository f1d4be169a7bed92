"""Kinds create_index, drop_index and add_unique: CONCURRENTLY, per partition on a partitioned table, and an
INVALID index left by a failed build cleaned up."""

from __future__ import annotations

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


def test_add_unique_on_a_partitioned_table_is_refused_with_the_alternative(migrated_url: str) -> None:
    with pytest.raises(OnlineChangeRefused, match="create_index with unique=True"):
        online.plan("analytics", "add_unique", database_url=migrated_url, name="x_key", columns=["id"])


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
