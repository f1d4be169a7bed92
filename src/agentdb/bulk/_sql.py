"""Running psycopg-composed SQL and COPY on a SQLAlchemy connection, and reading PostgreSQL's errors safely.

Statements are composed with :mod:`psycopg.sql` (names as ``sql.Identifier``,
values as ``sql.Literal``) and run on the DBAPI cursor of a SQLAlchemy
connection, after SQLAlchemy has begun its transaction, so SQLAlchemy's
``commit()``/``begin_nested()`` drive the transaction and savepoints, and an
error comes out as SQLAlchemy's ``DBAPIError`` that
:func:`agentdb.runtime.locks.retry_on_lock_timeout` recognises.

PostgreSQL's messages can quote row values (``invalid input syntax for type
bigint: "x"``, the DETAIL of a unique violation).  :func:`safe_reason` keeps
the SQLSTATE and the primary message with every quoted value masked, unless it
is a name the caller knows (a column, table or constraint); DETAIL is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import psycopg
import psycopg.errors
import sqlalchemy as sa
from psycopg import pq, sql
from psycopg.rows import tuple_row
from sqlalchemy.exc import DBAPIError

__all__ = [
    "Row",
    "Statement",
    "copy_in",
    "copy_line_of",
    "copy_out",
    "dbapi",
    "error_of",
    "execute",
    "execute_count",
    "one",
    "safe_reason",
    "sqlstate_of",
]

Row: TypeAlias = tuple[Any, ...]
Statement: TypeAlias = sql.SQL | sql.Composed


def dbapi(connection: sa.Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under ``connection``, with SQLAlchemy's transaction begun."""
    if not connection.in_transaction():
        connection.begin()
    raw = connection.connection.dbapi_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


def _wrap(exc: psycopg.Error, statement: Statement, raw: psycopg.Connection[Any]) -> DBAPIError:
    try:
        text = statement.as_string(raw)
    except Exception:  # a broken connection cannot quote: the text only serves debugging
        text = "<statement>"
    wrapped = DBAPIError.instance(text, None, exc, psycopg.Error)
    assert isinstance(wrapped, DBAPIError)
    return wrapped


def execute(connection: sa.Connection, statement: Statement) -> list[Row]:
    """Run ``statement`` in the connection's transaction and return its rows (empty when it returns none)."""
    raw = dbapi(connection)
    cursor = raw.cursor(row_factory=tuple_row)
    try:
        cursor.execute(statement)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    except psycopg.Error as exc:
        raise _wrap(exc, statement, raw) from exc
    finally:
        cursor.close()


def execute_count(connection: sa.Connection, statement: Statement) -> int:
    """Run ``statement`` and return its row count (rows inserted, updated...)."""
    raw = dbapi(connection)
    cursor = raw.cursor()
    try:
        cursor.execute(statement)
        return cursor.rowcount
    except psycopg.Error as exc:
        raise _wrap(exc, statement, raw) from exc
    finally:
        cursor.close()


def one(connection: sa.Connection, statement: Statement) -> Any:
    """The first column of the first row, or None."""
    rows = execute(connection, statement)
    return rows[0][0] if rows else None


def copy_in(connection: sa.Connection, statement: Statement, blocks: Iterable[bytes | memoryview]) -> int:
    """``COPY ... FROM STDIN`` fed with ``blocks`` of raw bytes, as they are; the number of rows copied.

    The blocks go to the server unparsed: PostgreSQL's COPY parser is the one
    that reads them, which is what makes the clean path as fast as ``\\copy``.
    """
    raw = dbapi(connection)
    cursor = raw.cursor()
    try:
        with cursor.copy(statement) as copy:
            for block in blocks:
                copy.write(block)
        return cursor.rowcount
    except psycopg.Error as exc:
        raise _wrap(exc, statement, raw) from exc
    finally:
        cursor.close()


def copy_out(connection: sa.Connection, statement: Statement, write: Callable[[bytes], object],
             block_size: int = 1 << 20) -> int:
    """``COPY ... TO STDOUT``, its output handed to ``write`` in blocks of about ``block_size`` bytes; rows copied.

    PostgreSQL sends one message per row.  psycopg's ``Copy`` iterator costs
    some microseconds per message in Python (a generator and a wait per row),
    which doubles the time of a fast COPY; the messages are read here straight
    from libpq (``PQgetCopyData``, blocking) and gathered into large blocks.
    """
    raw = dbapi(connection)
    pgconn = raw.pgconn
    try:
        pgconn.send_query(statement.as_bytes(raw))
        result = pgconn.get_result()
        if result is None or result.status != pq.ExecStatus.COPY_OUT:
            error = _drain(pgconn, result, raw)
            raise error if error is not None else psycopg.OperationalError("COPY TO did not start")
        buffer = bytearray()
        get = pgconn.get_copy_data
        while True:
            size, data = get(0)
            if size < 0:
                break
            buffer += data
            if len(buffer) >= block_size:
                write(bytes(buffer))
                buffer.clear()
        if buffer:
            write(bytes(buffer))
        final = pgconn.get_result()
        error = _drain(pgconn, final, raw)
        if error is not None:
            raise error
        assert final is not None
        return int(final.command_tuples or 0)
    except psycopg.Error as exc:
        raise _wrap(exc, statement, raw) from exc


def _drain(pgconn: Any, result: Any, raw: psycopg.Connection[Any]) -> psycopg.Error | None:
    """The error of ``result`` (if it is one), after reading every remaining result of the query."""
    error = None
    if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
        error = psycopg.errors.error_from_result(result, encoding=raw.info.encoding)
    while pgconn.get_result() is not None:
        pass
    return error


def error_of(exc: BaseException) -> psycopg.Error | None:
    """The psycopg error in ``exc`` (itself, or wrapped by SQLAlchemy)."""
    if isinstance(exc, psycopg.Error):
        return exc
    if isinstance(exc, DBAPIError) and isinstance(exc.orig, psycopg.Error):
        return exc.orig
    return None


def sqlstate_of(exc: BaseException) -> str | None:
    error = error_of(exc)
    return error.sqlstate if error is not None else None


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_BYTES = re.compile(r"0x[0-9a-fA-F]{2}(?: 0x[0-9a-fA-F]{2})*")
_COPY_CONTEXT = re.compile(r"COPY [^,]+, line (\d+)(?:, column ([^:]+))?")


def safe_reason(message: str, names: Iterable[str] = ()) -> str:
    """PostgreSQL's primary message with every double-quoted value masked, except the ``names`` given.

    ``value "123456789012345678901" is out of range for type bigint`` becomes
    ``value "..." is out of range for type bigint``; ``null value in column
    "email" of relation "users"`` keeps its names; the bytes of an encoding
    error (``0xe9 0x20``) become ``0x..``.  Only the first line is kept: the
    DETAIL and CONTEXT lines can quote whole rows.
    """
    known = set(names) | {"UTF8"}
    text = (message or "").strip()
    first = text.splitlines()[0] if text else ""
    first = _QUOTED.sub(lambda m: m.group(0) if m.group(1) in known else '"..."', first)
    return _BYTES.sub("0x..", first)


def copy_line_of(exc: BaseException) -> tuple[int | None, str | None]:
    """The record number (1-based, in the COPY stream) and column of a COPY error, from its CONTEXT line."""
    error = error_of(exc)
    context = error.diag.context if error is not None else None
    match = _COPY_CONTEXT.search(context or "")
    if match is None:
        return None, None
    return int(match.group(1)), (match.group(2) or None)
