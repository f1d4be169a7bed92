"""Running psycopg-composed SQL on a SQLAlchemy or psycopg connection, and the catalogue look-ups shared here.

Every statement of this package is composed with :mod:`psycopg.sql`: names as
``sql.Identifier``, values as ``sql.Literal``.  Nothing is passed as separate
parameters, so the text is never parsed for ``%`` placeholders, and a name
that contains ``%`` stays a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import psycopg
import sqlalchemy as sa
from psycopg import sql
from psycopg.rows import tuple_row
from sqlalchemy.exc import DBAPIError

from agentdb.errors import PartitionTableInvalid

__all__ = ["Conn", "Statement", "Table", "execute", "find_table", "one", "split_name"]

#: A connection given by a caller: SQLAlchemy (the runner, the commands) or psycopg (the online engine).
Conn: TypeAlias = sa.Connection | psycopg.Connection[Any]
Row: TypeAlias = tuple[Any, ...]
#: A statement composed with :mod:`psycopg.sql`.
Statement: TypeAlias = sql.SQL | sql.Composed


def execute(connection: Conn, statement: Statement) -> list[Row]:
    """Run ``statement`` in the connection's current transaction; its rows (empty when it returns none).

    On a SQLAlchemy connection the statement runs on the DBAPI cursor, after
    SQLAlchemy has begun its transaction (so its ``commit()`` is the one that
    commits), and an error comes out as SQLAlchemy's ``DBAPIError``, like any
    other statement's: :func:`agentdb.runtime.locks.retry_on_lock_timeout`
    recognises a lock timeout (55P03) in it.
    """
    if isinstance(connection, psycopg.Connection):
        with connection.cursor(row_factory=tuple_row) as result:
            result.execute(statement)
            return result.fetchall() if result.description else []
    if not connection.in_transaction():
        connection.begin()
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor(row_factory=tuple_row)  # whatever row factory the connection was given
    try:
        cursor.execute(statement)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    except psycopg.Error as exc:
        raise DBAPIError.instance(
            statement.as_string(dbapi), None, exc, psycopg.Error  # type: ignore[arg-type]
        ) from exc
    finally:
        cursor.close()


def one(connection: Conn, statement: Statement) -> Any:
    """The first column of the first row, or None."""
    rows = execute(connection, statement)
    return rows[0][0] if rows else None


@dataclass(frozen=True)
class Table:
    """A table named by a user, found in the catalogue: its oid and exact schema and name."""

    oid: int
    schema: str
    name: str
    #: ``r`` (plain) or ``p`` (partitioned).
    relkind: str

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def split_name(table: str, schema: str | None = None) -> tuple[str, str]:
    """``(schema, table)`` from ``"table"`` or ``"schema.table"`` (no quoting rules: names are compared exactly)."""
    if schema is None and "." in table:
        schema, _, table = table.partition(".")
    if not table or not (schema or "public"):
        raise PartitionTableInvalid(f"{schema or 'public'}.{table}", "an empty name is no table")
    return schema or "public", table


def find_table(connection: Conn, table: str, schema: str | None = None) -> Table:
    """The table a user named, looked up in ``pg_class``; :class:`PartitionTableInvalid` when there is none.

    The name is compared with the catalogue as a value, never pasted into SQL.
    """
    schema_name, table_name = split_name(table, schema)
    rows = execute(connection, sql.SQL(
        "SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = {} AND c.relname = {} AND c.relkind IN ('r', 'p')"
    ).format(sql.Literal(schema_name), sql.Literal(table_name)))
    if not rows:
        raise PartitionTableInvalid(f"{schema_name}.{table_name}", "there is no such table")
    oid, found_schema, found_name, relkind = rows[0]
    return Table(int(oid), str(found_schema), str(found_name), str(relkind))
