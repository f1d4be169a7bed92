"""The import ledger ``agentdb.imports``: what was imported, from which file (by sha256), how far it got.

One row per import run of a file into a table.  Exactly once: a file whose
sha256 has a ``done`` row for that table is not imported again (``force``
imports it once more, in a new row); the partial unique indexes let the
database itself refuse a second ``done`` row, or a second unfinished one.
With batches, each batch's rows and the row's checkpoint (records, byte
offset and line after the batch, rejects-file size) commit in one
transaction, so after a crash -- ``kill -9`` included -- the same command
resumes right after the last committed batch: no row twice, none missing.

The row holds no value of the file: its name (no directory), size, hash,
counts, who ran it (database user, OS user, host) and PostgreSQL's primary
message if it failed.  :data:`DDL` creates it (:func:`ensure_ledger`, on a
database below revision 008); migration 008 holds the same statements written
out, and ``tests/test_bulk_migration.py`` fails when the two differ.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from psycopg import sql

from agentdb.bulk._sql import execute, one

__all__ = [
    "DDL",
    "LEDGER_TABLE",
    "LedgerEntry",
    "ensure_ledger",
]

SCHEMA = "agentdb"
LEDGER_TABLE = "imports"
_LEDGER = sql.Identifier(SCHEMA, LEDGER_TABLE)
#: Serialises the creation of the ledger by concurrent first imports: first 8 bytes of sha256("agentdb.bulk.ledger").
_DDL_LOCK_KEY = 0x1C5E0B7A2F9D4431

#: The ledger's definition, idempotent; migration 008's statements, one for one.
DDL: list[str] = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.{LEDGER_TABLE} (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name        text NOT NULL,
    file_sha256       text NOT NULL CHECK (file_sha256 ~ '^[0-9a-f]{{64}}$'),
    file_name         text NOT NULL,
    file_bytes        bigint NOT NULL CHECK (file_bytes >= 0),
    format            text NOT NULL CHECK (format IN ('csv', 'tsv', 'jsonl')),
    status            text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    forced            boolean NOT NULL DEFAULT false,
    rows_read         bigint NOT NULL DEFAULT 0 CHECK (rows_read >= 0),
    rows_loaded       bigint NOT NULL DEFAULT 0 CHECK (rows_loaded >= 0),
    rows_rejected     bigint NOT NULL DEFAULT 0 CHECK (rows_rejected >= 0),
    rows_skipped      bigint NOT NULL DEFAULT 0 CHECK (rows_skipped >= 0),
    checkpoint_rows   bigint NOT NULL DEFAULT 0 CHECK (checkpoint_rows >= 0),
    checkpoint_offset bigint NOT NULL DEFAULT 0 CHECK (checkpoint_offset >= 0),
    checkpoint_line   bigint NOT NULL DEFAULT 0 CHECK (checkpoint_line >= 0),
    rejects_bytes     bigint NOT NULL DEFAULT 0 CHECK (rejects_bytes >= 0),
    options           jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    sqlstate          text,
    error             text,
    started_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    db_user           text NOT NULL DEFAULT current_user,
    os_user           text,
    host              text,
    pid               integer,
    agentdb_version   text NOT NULL,
    CONSTRAINT imports_rows_add_up CHECK (rows_read = rows_loaded + rows_rejected + rows_skipped),
    CONSTRAINT imports_finished CHECK ((status = 'running') = (finished_at IS NULL))
)""",
    f"CREATE UNIQUE INDEX IF NOT EXISTS imports_done_once_key ON {SCHEMA}.{LEDGER_TABLE} "
    "(table_name, file_sha256) WHERE status = 'done' AND NOT forced",
    f"CREATE UNIQUE INDEX IF NOT EXISTS imports_one_unfinished_key ON {SCHEMA}.{LEDGER_TABLE} "
    "(table_name, file_sha256) WHERE status <> 'done'",
    f"CREATE INDEX IF NOT EXISTS imports_started_at_idx ON {SCHEMA}.{LEDGER_TABLE} (started_at)",
    f"REVOKE ALL ON {SCHEMA}.{LEDGER_TABLE} FROM PUBLIC",
    f"COMMENT ON TABLE {SCHEMA}.{LEDGER_TABLE} IS 'Bulk imports (agentdb import): one row per import run of a file "
    "into a table, by sha256, with its counts and checkpoint; no values of the file'",
    f"COMMENT ON COLUMN {SCHEMA}.{LEDGER_TABLE}.table_name IS 'The table imported into, schema-qualified'",
    f"COMMENT ON COLUMN {SCHEMA}.{LEDGER_TABLE}.file_sha256 IS 'sha256 of the file as given (compressed bytes "
    "for a compressed file): the same file is imported once unless forced'",
    f"COMMENT ON COLUMN {SCHEMA}.{LEDGER_TABLE}.file_name IS 'The file name without its directory; - for stdin'",
    f"COMMENT ON COLUMN {SCHEMA}.{LEDGER_TABLE}.status IS 'running (or killed while running: resumable), "
    "done, or failed (resumable from its checkpoint)'",
    f"COMMENT ON COLUMN {SCHEMA}.{LEDGER_TABLE}.forced IS 'Imported again although a done row existed (--force)'",
    f"COMMENT ON COLUMN {SCHEMA}.{LEDGER_TABLE}.rows_read IS 'Records read = rows_loaded + rows_rejected + "
    "rows_skipped, always'",
    f"COMMENT ON COLUMN {SCHEMA}.{LEDGER_TABLE}.checkpoint_rows IS 'Records of the file committed so far (batches)'",
    f"COMMENT ON COLUMN {SCHEMA}.{LEDGER_TABLE}.checkpoint_offset IS 'Byte offset in the decompressed file right "
    "after the last committed batch: where a resumed import starts'",
    f"COMMENT ON COLUMN {SCHEMA}.{LEDGER_TABLE}.checkpoint_line IS 'Line number at checkpoint_offset'",
    f"COMMENT ON COLUMN {SCHEMA}.{LEDGER_TABLE}.rejects_bytes IS 'Size of the rejects file at the checkpoint'",
    f"COMMENT ON COLUMN {SCHEMA}.{LEDGER_TABLE}.error IS 'Why it failed, one line: SQLSTATE and primary "
    "message, values masked'",
]



def ensure_ledger(connection: sa.Connection) -> None:
    """Create ``agentdb.imports`` if missing, in the caller's transaction (the caller commits)."""
    if one(connection, sql.SQL("SELECT to_regclass({})").format(sql.Literal(f"{SCHEMA}.{LEDGER_TABLE}"))):
        return
    execute(connection, sql.SQL("SELECT pg_advisory_xact_lock({})").format(sql.Literal(_DDL_LOCK_KEY)))
    for statement in DDL:
        execute(connection, sql.SQL(statement))  # constant text


@dataclass
class LedgerEntry:
    id: int
    status: str
    rows_read: int
    rows_loaded: int
    rows_rejected: int
    rows_skipped: int
    checkpoint_rows: int
    checkpoint_offset: int
    checkpoint_line: int
    rejects_bytes: int
    started_at: datetime
    finished_at: datetime | None
    options: dict[str, Any]

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> LedgerEntry:
        numbers = [int(v) for v in row[2:10]]
        return cls(int(row[0]), str(row[1]), numbers[0], numbers[1], numbers[2], numbers[3], numbers[4], numbers[5],
                   numbers[6], numbers[7], row[10], row[11], dict(row[12] or {}))


_COLUMNS = sql.SQL(
    "id, status, rows_read, rows_loaded, rows_rejected, rows_skipped, checkpoint_rows, checkpoint_offset, "
    "checkpoint_line, rejects_bytes, started_at, finished_at, options")


def lock_key(table: str, sha256: str) -> int:
    """The advisory lock of one file's import into one table (a bigint from sha256, top bit cleared)."""
    digest = hashlib.sha256(f"agentdb.bulk:{table}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFFFFFFFFFFFFFF


def try_lock(connection: sa.Connection, key: int) -> bool:
    """Take the session-level advisory lock ``key`` if free (released by :func:`unlock` or the session's end)."""
    return bool(one(connection, sql.SQL("SELECT pg_try_advisory_lock({})").format(sql.Literal(key))))


def unlock(connection: sa.Connection, key: int) -> None:
    execute(connection, sql.SQL("SELECT pg_advisory_unlock({})").format(sql.Literal(key)))


def holder(connection: sa.Connection, key: int) -> int | None:
    pid = one(connection, sql.SQL(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND classid = {} AND objid = {} LIMIT 1"
    ).format(sql.Literal((key >> 32) & 0xFFFFFFFF), sql.Literal(key & 0xFFFFFFFF)))
    return int(pid) if pid is not None else None


def find(connection: sa.Connection, table: str, sha256: str) -> tuple[LedgerEntry | None, LedgerEntry | None]:
    """(the last ``done`` import of this file into this table, the unfinished one) -- either may be None."""
    rows = execute(connection, sql.SQL("SELECT {} FROM {} WHERE table_name = {} AND file_sha256 = {} "
                                       "ORDER BY id DESC").format(_COLUMNS, _LEDGER, sql.Literal(table),
                                                                  sql.Literal(sha256)))
    entries = [LedgerEntry.of(r) for r in rows]
    done = next((e for e in entries if e.status == "done"), None)
    unfinished = next((e for e in entries if e.status != "done"), None)
    return done, unfinished


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def start(connection: sa.Connection, *, table: str, sha256: str, file_name: str, file_bytes: int, format: str,
          options: dict[str, Any], forced: bool) -> int:
    """Insert the ``running`` row of a new import (the caller commits, so a crash leaves a trace)."""
    from agentdb import __version__

    return int(one(connection, sql.SQL(
        "INSERT INTO {} (table_name, file_sha256, file_name, file_bytes, format, status, forced, options, os_user, "
        "host, pid, agentdb_version) VALUES ({}, {}, {}, {}, {}, 'running', {}, {}::jsonb, {}, {}, {}, {}) "
        "RETURNING id"
    ).format(_LEDGER, sql.Literal(table), sql.Literal(sha256), sql.Literal(file_name), sql.Literal(file_bytes),
             sql.Literal(format), sql.Literal(forced), sql.Literal(json.dumps(options)), sql.Literal(_os_user()),
             sql.Literal(socket.gethostname()), sql.Literal(os.getpid()), sql.Literal(__version__))))


def resume(connection: sa.Connection, entry_id: int, options: dict[str, Any]) -> None:
    execute(connection, sql.SQL(
        "UPDATE {} SET status = 'running', finished_at = NULL, error = NULL, sqlstate = NULL, pid = {}, "
        "os_user = {}, host = {}, options = {}::jsonb, updated_at = now() WHERE id = {}"
    ).format(_LEDGER, sql.Literal(os.getpid()), sql.Literal(_os_user()), sql.Literal(socket.gethostname()),
             sql.Literal(json.dumps(options)), sql.Literal(entry_id)))


@dataclass
class Counts:
    """Running totals of an import, as the ledger keeps them."""

    read: int = 0
    loaded: int = 0
    rejected: int = 0
    skipped: int = 0
    offset: int = 0
    line: int = 0
    rejects_bytes: int = 0


def checkpoint(connection: sa.Connection, entry_id: int, counts: Counts, *, status: str = "running",
               sqlstate: str | None = None, error: str | None = None) -> None:
    """Write the totals and checkpoint in the caller's transaction (with the batch's rows: one commit)."""
    execute(connection, sql.SQL(
        "UPDATE {} SET status = {}, rows_read = {}, rows_loaded = {}, rows_rejected = {}, rows_skipped = {}, "
        "checkpoint_rows = {}, checkpoint_offset = {}, checkpoint_line = {}, rejects_bytes = {}, sqlstate = {}, "
        "error = {}, updated_at = now(), finished_at = CASE WHEN {} = 'running' THEN NULL ELSE now() END "
        "WHERE id = {}"
    ).format(_LEDGER, sql.Literal(status), sql.Literal(counts.read), sql.Literal(counts.loaded),
             sql.Literal(counts.rejected), sql.Literal(counts.skipped), sql.Literal(counts.read),
             sql.Literal(counts.offset), sql.Literal(counts.line), sql.Literal(counts.rejects_bytes),
             sql.Literal(sqlstate), sql.Literal(error), sql.Literal(status), sql.Literal(entry_id)))
