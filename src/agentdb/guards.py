"""The bulk-change guard: one statement may not change too many people's rows of ``users``, ``consent``, ``audit_log``.

Statement-level ``AFTER UPDATE`` and ``AFTER DELETE`` triggers with a transition table
(``REFERENCING OLD TABLE``) count the *users* whose rows the statement
changed (``users.id``, ``consent.user_id``, ``audit_log.subject_user_id``; a
row with no subject counts as one) and raises SQLSTATE :data:`SQLSTATE`
(``YB001``) when that exceeds the limit.  Counting people, not rows, is what
lets erasure run: deleting or pseudonymising *one* user's rows, however many
audit rows that user has, touches one user and is never refused.  ``TRUNCATE``
of these tables is refused too.

Opt in, for one transaction::

    BEGIN;
    SET LOCAL agentdb.allow_bulk_change = on;
    DELETE FROM consent WHERE purpose = 'marketing';
    COMMIT;

The limit is the setting ``agentdb.bulk_change_limit`` (default
:data:`DEFAULT_LIMIT`), set like any setting: ``ALTER DATABASE agent SET
agentdb.bulk_change_limit = 500`` (new sessions), ``ALTER ROLE ... SET``, or
``SET [LOCAL]`` in a session.

What is recorded, and where:

* every refusal: a ``LOG`` line in the server log (table, operation, counts,
  limit, role, application), and PostgreSQL's own ``ERROR`` line;
* in ``event_logs``: refusals raised inside :func:`guarded` (a
  ``bulk_change.refused`` row, written on a separate connection after the
  refused transaction has rolled back).  A refusal in plain SQL, outside
  :func:`guarded`, is **not** in ``event_logs``: PostgreSQL has no autonomous
  transactions, and a row the refused transaction inserted is rolled back with
  it (``dblink`` could escape that, but the embedded server has no dblink).

The trigger function ``public.guard_bulk_change()`` and its triggers are
declared, as they are now, in :mod:`agentdb.schema.entities`; migration 005
carries the definition it created, so changing them here takes a new
migration (``agentdb new --autogenerate``).  This module is what applications
use at run time.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb
from sqlalchemy.dialects.postgresql import JSONB

from agentdb.errors import BulkChangeRefused
from agentdb.schema.entities import DEFAULT_LIMIT, GUARD_SQLSTATE, GUARDED_TABLES

__all__ = [
    "DEFAULT_LIMIT",
    "EVENT_TYPE",
    "GUARDED_TABLES",
    "SQLSTATE",
    "guarded",
    "record_refusal",
    "refusal_of",
]

#: The SQLSTATE of a refusal (class ``YB``: implementation-defined, unused by PostgreSQL).
SQLSTATE = GUARD_SQLSTATE
#: ``event_logs.event_type`` of a recorded refusal.
EVENT_TYPE = "bulk_change.refused"


def _psycopg_error(exc: BaseException) -> psycopg.Error | None:
    if isinstance(exc, psycopg.Error):
        return exc
    if isinstance(exc, sa.exc.DBAPIError) and isinstance(exc.orig, psycopg.Error):
        return exc.orig
    return None


def refusal_of(exc: BaseException) -> BulkChangeRefused | None:
    """The guard's refusal carried by ``exc`` (a psycopg or SQLAlchemy error), else ``None``."""
    error = _psycopg_error(exc)
    if error is None or error.sqlstate != SQLSTATE:
        return None
    try:
        detail: dict[str, Any] = json.loads(error.diag.message_detail or "{}")
    except ValueError:
        detail = {}
    return BulkChangeRefused(
        str(detail.get("table") or error.diag.table_name or "?"), str(detail.get("operation") or "?"),
        detail.get("users"), detail.get("rows"), int(detail.get("limit") or 0),
    )


def _details(refusal: BulkChangeRefused) -> dict[str, Any]:
    return {"table": refusal.table, "operation": refusal.operation, "users": refusal.users, "rows": refusal.rows,
            "limit": refusal.limit, "sqlstate": SQLSTATE}


_INSERT = (
    "INSERT INTO public.event_logs (level, source, event_type, message, details, user_id, request_id) "
    "VALUES ('warning', %(source)s, %(event_type)s, %(message)s, %(details)s, %(user_id)s, %(request_id)s) "
    "RETURNING id"
)


def record_refusal(
    connection: psycopg.Connection[Any] | sa.Connection, refusal: BulkChangeRefused, *, source: str = "db.guard",
    user_id: int | None = None, request_id: str | None = None,
) -> int:
    """Write the ``event_logs`` row of ``refusal`` on a *new* connection to the same database, and commit it.

    A new connection, because ``connection`` may still be inside a transaction
    (the refusal rolled back a savepoint only) whose rollback would take the
    record with it.
    """
    params = {"source": source, "event_type": EVENT_TYPE, "message": refusal.message, "user_id": user_id,
              "request_id": request_id}
    if isinstance(connection, sa.Connection):
        with connection.engine.connect() as side:
            statement = sa.text(_INSERT.replace("%(", ":").replace(")s", ""))
            statement = statement.bindparams(sa.bindparam("details", type_=JSONB))
            event_id = int(side.execute(statement, {**params, "details": _details(refusal)}).scalar_one())
            side.commit()
            return event_id
    info = connection.info
    conninfo = psycopg.conninfo.make_conninfo(
        "", **info.get_parameters(), **({"password": info.password} if info.password else {}),
    )
    with psycopg.connect(conninfo, autocommit=True) as side:
        row = side.execute(_INSERT, {**params, "details": Jsonb(_details(refusal))}).fetchone()
        assert row is not None
        return int(row[0])


C = TypeVar("C", psycopg.Connection[Any], sa.Connection)


@contextlib.contextmanager
def guarded(
    connection: C, *, source: str = "db.guard", user_id: int | None = None, request_id: str | None = None,
) -> Iterator[C]:
    """Run a block of writes; a bulk-change refusal inside it is recorded in ``event_logs`` and re-raised.

    ::

        with agentdb.guarded(conn) as conn, conn.transaction():
            conn.execute("DELETE FROM consent WHERE purpose = %s", ["marketing"])

    raises :class:`~agentdb.errors.BulkChangeRefused` (with
    ``event_log_id``) instead of the database error; any other error passes
    through unchanged.  Works with a psycopg or a SQLAlchemy connection.
    """
    try:
        yield connection
    except Exception as exc:
        refusal = refusal_of(exc)
        if refusal is None:
            raise
        refusal.event_log_id = record_refusal(
            connection, refusal, source=source, user_id=user_id, request_id=request_id,
        )
        raise refusal from exc
