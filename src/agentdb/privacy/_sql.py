"""Running psycopg-composed SQL on a SQLAlchemy connection, and reading the catalogue.

Statements run on the DBAPI cursor inside the transaction SQLAlchemy has
begun (so ``connection.commit()`` commits them), and errors come out as
SQLAlchemy's ``DBAPIError``, so :func:`agentdb.runtime.locks.retry_on_lock_timeout`
recognises a lock timeout in them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

__all__ = ["affected", "columns_of", "execute", "indexed_columns", "one", "primary_message", "relation_oid"]

Params = Mapping[str, Any] | Sequence[Any] | None


def _cursor(connection: sa.Connection) -> psycopg.Cursor[Any]:
    if not connection.in_transaction():
        connection.begin()
    dbapi = connection.connection.dbapi_connection
    assert isinstance(dbapi, psycopg.Connection)
    return dbapi.cursor()


def _run(connection: sa.Connection, statement: sql.Composable | str,
         params: Params) -> tuple[list[tuple[Any, ...]], int]:
    cursor = _cursor(connection)
    query: sql.Composed | sql.SQL = (
        statement if isinstance(statement, sql.Composed | sql.SQL) else sql.Composed([statement])
        if isinstance(statement, sql.Composable) else sql.SQL(statement))
    try:
        cursor.execute(query, params)
        rows = [tuple(r) for r in cursor.fetchall()] if cursor.description else []
        return rows, cursor.rowcount
    except psycopg.Error as exc:
        text = statement if isinstance(statement, str) else "<composed statement>"
        # The parameters are not handed to SQLAlchemy: they can be personal values or pseudonym keys.
        raise sa.exc.DBAPIError.instance(text, None, exc, psycopg.Error) from exc
    finally:
        cursor.close()


def execute(connection: sa.Connection, statement: sql.Composable | str, params: Params = None) -> list[tuple[Any, ...]]:
    """The rows of ``statement`` (empty when it returns none)."""
    return _run(connection, statement, params)[0]


def affected(connection: sa.Connection, statement: sql.Composable | str, params: Params = None) -> int:
    """The number of rows ``statement`` changed."""
    return max(_run(connection, statement, params)[1], 0)


def one(connection: sa.Connection, statement: sql.Composable | str, params: Params = None) -> Any:
    """The first column of the first row, or None."""
    rows = execute(connection, statement, params)
    return rows[0][0] if rows else None


def relation_oid(connection: sa.Connection, schema: str, name: str) -> int | None:
    """The oid of a table (plain or partitioned), names compared exactly as values, never pasted into SQL."""
    found = one(connection, "SELECT c.oid::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')", (schema, name))
    return int(found) if found is not None else None


def columns_of(connection: sa.Connection, oid: int) -> dict[str, str]:
    """column -> its type as ``format_type`` spells it."""
    return {str(name): str(kind) for name, kind in execute(
        connection, "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (oid,))}


def indexed_columns(connection: sa.Connection, oid: int) -> frozenset[str]:
    """Columns that lead a valid index of the table (what a lookup by that column can use)."""
    return frozenset(str(r[0]) for r in execute(
        connection, "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE i.indrelid = %s::oid AND i.indisvalid",
        (oid,)))


def primary_message(exc: BaseException) -> tuple[str | None, str]:
    """SQLSTATE and PostgreSQL's primary message: never the DETAIL line, which can quote row values."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    state = getattr(orig, "sqlstate", None)
    diag = getattr(orig, "diag", None)
    message = getattr(diag, "message_primary", None) or (str(orig).strip().splitlines() or ["?"])[0]
    return (state if isinstance(state, str) else None), str(message)
