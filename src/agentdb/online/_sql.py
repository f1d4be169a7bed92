"""Running psycopg-composed SQL on a SQLAlchemy connection.

The engine composes every statement with :mod:`psycopg.sql` (identifiers from
the catalogue, values as literals) and runs it on a SQLAlchemy connection, so
that errors arrive as :class:`sqlalchemy.exc.DBAPIError` and the runner's one
lock-retry helper (:func:`agentdb.runtime.locks.retry_on_lock_timeout`) can
retry them, with SAVEPOINTs and transactions managed by SQLAlchemy.

A statement is rendered completely on the client (values inlined as quoted
literals) and handed to the driver with no parameters; ``%`` is doubled
because psycopg still scans the text for placeholders.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import sqlalchemy as sa
from psycopg import sql

__all__ = ["Result", "execute", "render", "rows", "scalar"]

#: The result of a statement with any number of columns.
Result: TypeAlias = sa.CursorResult[*tuple[Any, ...]]


def render(statement: sql.Composable, connection: sa.Connection | None = None) -> str:
    """The SQL text of ``statement`` (quoted with the connection's encoding when one is given)."""
    context = None
    if connection is not None:
        context = connection.connection.driver_connection
    return statement.as_string(context)


def execute(connection: sa.Connection, statement: sql.Composable) -> Result:
    """Run one composed statement; the connection's transaction (autobegun if needed) is the caller's."""
    text = render(statement, connection)
    return connection.exec_driver_sql(text.replace("%", "%%"), ())


def rows(connection: sa.Connection, statement: sql.Composable) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in execute(connection, statement)]


def scalar(connection: sa.Connection, statement: sql.Composable) -> Any:
    return execute(connection, statement).scalar()
