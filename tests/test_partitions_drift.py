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


def _diffs(connection: sa.Connection, *, predicate: bool) -> list[Any]:
    """Autogenerate as agentdb configures it (``predicate``), or with the managed-partition predicate taken out."""
    options = configure_options()
    if not predicate:
        options.pop("include_name")
        options.pop("include_object")
    context = MigrationContext.configure(connection, opts=options)
    diffs = list(compare_metadata(context, metadata))
    connection.rollback()
    return diffs


def test_autogenerate_sees_no_drift_from_managed_partitions(migrated_url: str) -> None:
    """At head, 007 has partitioned analytics and registered it; maintenance adds months: none of it is drift."""
    maintain_partitions(database_url=migrated_url, now=NOW)
    engine = sa.create_engine(sa.make_url(migrated_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as connection:
            as_configured = _diffs(connection, predicate=True)
            bare = _diffs(connection, predicate=False)
    finally:
        engine.dispose()
    removed = sorted(d[1].name for d in bare if isinstance(d, tuple) and d[0] == "remove_table")
    assert "analytics_default" in removed and "analytics_p202611" in removed, \
        "without the predicate every partition is drift"
    assert as_configured == [], as_configured
