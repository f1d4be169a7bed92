"""Helpers for the data-model tests: a connection, rows to point at, and a precise rejection check.

Not a test module (no ``test_`` prefix); imported by ``test_model_*.py``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import tuple_row

__all__ = [
    "connect", "insert", "make_artist", "make_model_version", "make_track", "make_user", "rejected", "spotify_id",
]


def connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection: each statement is its own transaction, like an application's."""
    return psycopg.connect(url, autocommit=True)


def spotify_id() -> str:
    """A fresh, valid 22-character base-62 Spotify id."""
    return uuid.uuid4().hex[:22]


def _insert(conn: psycopg.Connection[Any], table: str, values: dict[str, Any]) -> int:
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    row = conn.cursor(row_factory=tuple_row).execute(query, list(values.values())).fetchone()
    assert row is not None
    return int(row[0])


def make_user(conn: psycopg.Connection[Any], **values: Any) -> int:
    defaults = {"email": f"u{uuid.uuid4().hex[:10]}@example.com", "display_name": "Test User"}
    return _insert(conn, "users", {**defaults, **values})


def make_artist(conn: psycopg.Connection[Any], **values: Any) -> int:
    return _insert(conn, "artists", {"name": "Test Artist", **values})


def make_track(conn: psycopg.Connection[Any], **values: Any) -> int:
    return _insert(conn, "tracks", {"title": "Test Track", "duration_ms": 180_000, **values})


def make_model_version(conn: psycopg.Connection[Any], **values: Any) -> int:
    defaults = {"name": "track-recommender", "version": uuid.uuid4().hex[:8], "framework": "pytorch"}
    return _insert(conn, "model_versions", {**defaults, **values})


def insert(conn: psycopg.Connection[Any], table: str, **values: Any) -> int:
    """Insert one row into ``table`` and return its id."""
    return _insert(conn, table, values)


@contextlib.contextmanager
def rejected(error: type[psycopg.Error], constraint: str | None = None) -> Iterator[None]:
    """Expect the block to fail with ``error`` raised by ``constraint`` (when given), and nothing else."""
    with pytest.raises(error) as caught:
        yield
    if constraint is not None:
        assert caught.value.diag.constraint_name == constraint
