"""``agentdb.partitioned_tables``: what may be registered, checked against the catalogue, never pasted into SQL."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
import sqlalchemy as sa
from _partitions_db import build, rows, scalar

from agentdb.errors import PartitionTableInvalid
from agentdb.partitions import list_partitions, managed_tables, register, unregister


def test_register_inserts_then_updates_one_row(database_url: str) -> None:
    build(database_url)
    with psycopg.connect(database_url) as conn:
        first = register(conn, "analytics")
        second = register(conn, "public.analytics", premake=6, retention="18 months", retention_action="drop")
    assert (first.column, first.premake, first.retention, first.retention_action) == (
        "created_at", 4, None, "archive")
    assert (second.premake, second.retention, second.retention_action) == (6, "1 year 6 mons", "drop")
    assert rows(database_url, "SELECT table_schema, table_name, column_name, partition_interval::text, premake, "
                "retention::text, retention_action FROM agentdb.partitioned_tables") == [
        ("public", "analytics", "created_at", "1 mon", 6, "1 year 6 mons", "drop")]
    assert second.as_dict()["table"] == "public.analytics"


def test_register_runs_in_the_callers_transaction(database_url: str) -> None:
    build(database_url)
    engine = sa.create_engine(sa.make_url(database_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            register(conn, "analytics", retention=timedelta(days=90))
            assert [m.retention for m in managed_tables(conn)] == ["90 days"]
            conn.rollback()
        with engine.connect() as conn:
            assert managed_tables(conn) == []
            register(conn, "analytics")
            conn.commit()
            assert unregister(conn, "analytics") is True
            assert unregister(conn, "analytics") is False
            conn.commit()
    finally:
        engine.dispose()


@pytest.mark.parametrize(("name", "options", "message"), [
    ("nosuch", {}, r"public\.nosuch: there is no such table"),
    ('analytics"; DROP TABLE users; --', {}, r"there is no such table"),
    ("users", {}, r"public\.users: it is a plain table, not a partitioned one"),
    ("listed", {}, r"public\.listed: it is partitioned by LIST"),
    ("analytics", {"column": "event_type"}, r"its partition key is not the single column 'event_type'"),
    ("analytics", {"column": "no column"}, r"it has no column 'no column'"),
    ("naive", {}, r"column 'created_at' is timestamp without time zone"),
    ("analytics", {"premake": 500}, r"premake 500 is out of range"),
    ("analytics", {"retention": "forever"}, r"invalid retention 'forever'"),
    ("analytics", {"retention": "1 month'); DROP TABLE users; --"}, r"invalid retention"),
    ("analytics", {"retention": "0 days"}, r"invalid retention '0 days'"),
    ("analytics", {"retention_action": "shred"}, r"unknown retention action 'shred'"),
])
def test_register_refuses_what_cannot_be_managed(database_url: str, name: str, options: dict[str, object],
                                                 message: str) -> None:
    build(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE listed (created_at timestamptz, kind text) PARTITION BY LIST (kind)")
        conn.execute("CREATE TABLE naive (created_at timestamp NOT NULL) PARTITION BY RANGE (created_at)")
    with psycopg.connect(database_url) as conn, pytest.raises(PartitionTableInvalid, match=message):
        register(conn, name, **options)  # type: ignore[arg-type]
    assert scalar(database_url, "SELECT to_regclass('public.users') IS NOT NULL")
    assert scalar(database_url, "SELECT to_regclass('agentdb.partitioned_tables')") is None, "nothing written"


def test_listing_a_table_that_is_not_partitioned_is_refused(database_url: str) -> None:
    build(database_url)
    with pytest.raises(PartitionTableInvalid, match=r"public\.users: it is not a partitioned table"):
        list_partitions("users", database_url=database_url)
    assert [p.partition for p in list_partitions("analytics", database_url=database_url)] == [
        "public.analytics_default"]
    assert list_partitions(database_url=database_url) == [], "nothing is managed yet"
