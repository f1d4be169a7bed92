"""The ``event_logs`` record of an import into, or an export of, a table with personal columns.

Who (database user, OS user, host), which table, which columns, how many rows,
the file's sha256 and the ledger id: never a value, never the file's path.
Written in the same transaction as the import's last rows, so it exists
exactly when they do; an export's record is written after its snapshot.
"""

from __future__ import annotations

import getpass
import json
import socket
from typing import Any

import sqlalchemy as sa
from psycopg import sql

from agentdb.bulk._sql import execute, one

__all__ = ["SOURCE", "record"]

SOURCE = "agentdb.bulk"
_EVENT_LOGS = sql.Identifier("public", "event_logs")


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def record(connection: sa.Connection, event_type: str, message: str, details: dict[str, Any]) -> int | None:
    """Insert the event (in the caller's transaction); None when the database has no ``event_logs``."""
    if not one(connection, sql.SQL("SELECT to_regclass('public.event_logs') IS NOT NULL")):
        return None
    details = {**details, "db_user": one(connection, sql.SQL("SELECT current_user")), "os_user": _os_user(),
               "host": socket.gethostname()}
    rows = execute(connection, sql.SQL(
        "INSERT INTO {} (level, source, event_type, message, details) VALUES ('info', {}, {}, {}, {}::jsonb) "
        "RETURNING id"
    ).format(_EVENT_LOGS, sql.Literal(SOURCE), sql.Literal(event_type), sql.Literal(message),
             sql.Literal(json.dumps(details, default=str))))
    return int(rows[0][0])
