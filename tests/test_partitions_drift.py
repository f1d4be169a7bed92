"""Managed partitions are not schema drift: the predicate for Alembic's autogenerate, on a database with partitions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from _partitions_db import NOW, build
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql

from agentdb.partitions import (
    ManagedPartitions,
    is_managed_partition,
    maintain_partitions,
    managed_partitions,
    register,
)
from agentdb.runtime.environment import configure_options
from agentdb.schema import metadata


@pytest.fixture
def connection(database_url: str) -> Iterator[sa.Connection]:
    engine = sa.create_engine(sa.make_url(database_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def test_the_predicate_knows_partitions_drains_and_detached_months(database_url: str,
                                                                    connection: sa.Connection) -> None:
    build(database_url, default=True)
    build(database_url, default=False, table="events")  # partitioned, but not managed
    with psycopg.connect(database_url, autocommit=True) as conn:
        register(conn, "analytics", premake=1)
        conn.execute("CREATE TABLE analytics_p202401 (LIKE analytics)")  # a month retention left detached
        conn.execute("CREATE TABLE analytics_p2024 (note text)")  # not a month name
        conn.execute("CREATE TABLE events_p202611 PARTITION OF events FOR VALUES FROM ('2026-11-01 00:00+00') "
                     "TO ('2026-12-01 00:00+00')")
    maintain_partitions(database_url=database_url, now=NOW)
    managed = managed_partitions(connection)
    for name in ("analytics_p202611", "analytics_p202612", "analytics_default", "analytics_p202401"):
        assert managed.is_managed(name), name
        assert is_managed_partition(connection, name, "public")
    for name in ("analytics", "users", "analytics_p2024", "events", "events_p202611"):
        assert not managed.is_managed(name), name
    assert not managed.is_managed("analytics_p202611", "other_schema")
    assert ("public", "analytics_p202611") in managed.relations
    # Alembic's hooks: the table and everything hanging off it.
    assert managed.include_name("analytics_p202611", "table", {"schema_name": None}) is False
    assert managed.include_name("analytics", "table", {"schema_name": None}) is True
    assert managed.include_name("analytics_p202611_pkey", "index", {"table_name": "analytics_p202611"}) is False
    assert managed.include_name("public", "schema", {}) is True


def test_without_a_catalogue_nothing_is_managed(connection: sa.Connection) -> None:
    managed = managed_partitions(connection)
    assert managed == ManagedPartitions(frozenset(), frozenset(), "public")
    assert not managed.is_managed("analytics_default")


def _partition_analytics(url: str) -> None:
    """Turn the migrated ``analytics`` into a RANGE-partitioned table with the same declaration (what 007 will do).

    ``LIKE ... INCLUDING ALL`` carries columns, identity, defaults, CHECKs,
    indexes and comments; the table comment, foreign keys and grants are
    carried by hand, from the catalogue.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        comment = conn.execute("SELECT obj_description('analytics'::regclass, 'pg_class')").fetchone()
        fks = conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                           "WHERE conrelid = 'analytics'::regclass AND contype = 'f' ORDER BY conname").fetchall()
        grants = conn.execute(
            "SELECT NULL, a.privilege_type, a.grantee::regrole::text FROM pg_class c, aclexplode(c.relacl) a "
            "WHERE c.oid = 'analytics'::regclass AND a.grantee <> c.relowner "
            "UNION ALL SELECT t.attname, a.privilege_type, a.grantee::regrole::text "
            "FROM pg_attribute t, aclexplode(t.attacl) a WHERE t.attrelid = 'analytics'::regclass "
            "AND t.attacl IS NOT NULL").fetchall()
        with conn.transaction():
            conn.execute("ALTER TABLE analytics RENAME TO analytics_old")
            for index in ("analytics_pkey", "analytics_user_id_idx", "analytics_track_id_idx",
                          "analytics_created_at_idx"):
                conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(index), sql.Identifier("old_" + index)))
            conn.execute("CREATE TABLE analytics (LIKE analytics_old INCLUDING ALL) PARTITION BY RANGE (created_at)")
            conn.execute(sql.SQL("COMMENT ON TABLE analytics IS {}").format(
                sql.Literal(comment[0] if comment else None)))
            for name, definition in fks:  # the catalogue's own text
                conn.execute(sql.SQL("ALTER TABLE analytics ADD CONSTRAINT {} ").format(sql.Identifier(name))
                             + sql.SQL(definition))
            for column, privilege, grantee in grants:
                target = sql.SQL("({})").format(sql.Identifier(column)) if column else sql.SQL("")
                conn.execute(sql.SQL("GRANT {}{} ON analytics TO {}").format(
                    sql.SQL(privilege), target, sql.Identifier(grantee)))
            conn.execute("DROP TABLE analytics_old")
            conn.execute("CREATE TABLE analytics_default PARTITION OF analytics DEFAULT")


def _diffs(connection: sa.Connection, managed: ManagedPartitions | None) -> list[Any]:
    """Autogenerate as agentdb configures it, with the predicate chained in front of agentdb's own."""
    options = configure_options()
    if managed is not None:
        theirs = options.get("include_object")
        options["include_name"] = managed.include_name
        options["include_object"] = lambda *args: managed.include_object(*args) and (theirs is None or theirs(*args))
    context = MigrationContext.configure(connection, opts=options)
    diffs = list(compare_metadata(context, metadata))
    connection.rollback()
    return diffs


def test_autogenerate_sees_no_drift_from_managed_partitions(migrated_url: str) -> None:
    _partition_analytics(migrated_url)
    with psycopg.connect(migrated_url) as conn:
        register(conn, "analytics", premake=1)
    maintain_partitions(database_url=migrated_url, now=NOW)
    engine = sa.create_engine(sa.make_url(migrated_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as connection:
            managed = managed_partitions(connection)
            connection.rollback()
            unfiltered = _diffs(connection, None)
            filtered = _diffs(connection, managed)
    finally:
        engine.dispose()
    removed = sorted(d[1].name for d in unfiltered if isinstance(d, tuple) and d[0] == "remove_table")
    assert removed == ["analytics_default", "analytics_p202611", "analytics_p202612"], \
        "without the predicate every partition is drift"
    assert filtered == [], filtered
