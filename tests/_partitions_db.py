"""Helpers for the partition tests: a partitioned table shaped like ``analytics``, built in a fresh database.

Not a test module (no ``test_`` prefix); imported by ``test_partitions_*.py``.
Until migration 007 converts the real ``analytics``, the tests build their own
partitioned table following the contract's names (``<table>_pYYYYMM``,
``<table>_default``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from agentdb.partitions import naming

__all__ = ["NOW", "build", "count", "partition_names", "rows", "scalar"]

#: The moment the tests maintain for (``maintain_partitions(now=NOW)``).
NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


def build(url: str, *, default: bool = True, months: tuple[datetime, ...] = (), table: str = "analytics") -> None:
    """``users`` and a ``table`` like ``analytics``: identity, FK to users, CHECK, indexes, RANGE on created_at."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                     "email text NOT NULL)")
        conn.execute(sql.SQL(
            "CREATE TABLE {} (id bigint GENERATED ALWAYS AS IDENTITY, "
            "user_id bigint REFERENCES users (id) ON DELETE SET NULL, "
            "event_type text NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_.]{{0,63}}$'), "
            "properties jsonb NOT NULL DEFAULT '{{}}'::jsonb, "
            "created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, created_at)) "
            "PARTITION BY RANGE (created_at)").format(sql.Identifier(table)))
        conn.execute(sql.SQL("CREATE INDEX ON {} (user_id)").format(sql.Identifier(table)))
        conn.execute(sql.SQL("CREATE INDEX ON {} USING brin (created_at)").format(sql.Identifier(table)))
        for month in months:
            start, end = naming.month_bounds(month)
            conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(naming.partition_name(table, month)), sql.Identifier(table),
                sql.Literal(start), sql.Literal(end)))
        if default:
            conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(
                sql.Identifier(naming.default_partition_name(table)), sql.Identifier(table)))
        conn.execute("INSERT INTO users (email) SELECT 'u' || g || '@example.org' FROM generate_series(1, 5) g")


def rows(url: str, query: str | sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def scalar(url: str, query: str | sql.Composable, params: Any = None) -> Any:
    found = rows(url, query, params)
    return found[0][0] if found else None


def count(url: str, table: str) -> int:
    return int(scalar(url, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))))


def partition_names(url: str, parent: str = "analytics") -> list[str]:
    """The partitions attached to ``parent``, by name."""
    return [r[0] for r in rows(
        url, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass ORDER BY 1", (parent,))]
