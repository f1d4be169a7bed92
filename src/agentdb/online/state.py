"""The persisted state of online changes: ``agentdb.online_changes``, and the per-table lock.

One row per change: its kind, table, phase and step, checkpoint, rows done and
estimated, timings per phase, settings, the design it follows (names of every
object it creates), who started it and from which migration file.  Every
phase's effects are committed in the same transaction as the row's new phase,
so the row always says exactly what exists; a crash loses at most the
transaction in flight.

One change per table at a time: a unique index allows one unfinished row per
table, and the process driving a change holds a session-level advisory lock
keyed by the table's name (not its oid, which the swap changes) for as long as
it drives it.  Whether that lock is held is how :func:`agentdb.online.status`
tells a running change from one left behind by a crash.

:data:`DDL` is the one definition of the table: the engine runs it when the
table is missing, and migration 007 can run the same statements.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from agentdb.runtime.history import INTERNAL_SCHEMA

__all__ = [
    "ACTIVE",
    "DDL",
    "LOCK_NAMESPACE",
    "STATE_TABLE",
    "ChangeRecord",
    "ensure_table",
    "find_active",
    "insert_change",
    "load",
    "lock_holder",
    "read_changes",
    "release_table_lock",
    "table_lock_key",
    "try_table_lock",
    "update",
]

STATE_TABLE = "online_changes"
#: Statuses of a change that still holds its table.
ACTIVE = ("running", "paused", "failed", "cut_over")

DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA}",
    f"""
    CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.{STATE_TABLE} (
        id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        token              text NOT NULL UNIQUE CHECK (token ~ '^[0-9a-f]{{8}}$'),
        kind               text NOT NULL,
        table_schema       text NOT NULL,
        table_name         text NOT NULL,
        status             text NOT NULL CHECK (status IN
                               ('running', 'paused', 'failed', 'cut_over', 'completed', 'aborted')),
        phase              text NOT NULL,
        step               integer NOT NULL DEFAULT 0 CHECK (step >= 0),
        requested          text CHECK (requested IN ('pause', 'abort')),
        checkpoint         jsonb,
        rows_done          bigint NOT NULL DEFAULT 0 CHECK (rows_done >= 0),
        rows_estimated     bigint,
        batch_size         integer,
        waiting            text,
        timings            jsonb NOT NULL DEFAULT '{{}}'::jsonb,
        lock_hold_ms       double precision,
        design             jsonb NOT NULL,
        settings           jsonb NOT NULL,
        error              text,
        db_user            text NOT NULL DEFAULT current_user,
        os_user            text,
        host               text,
        client_pid         integer,
        backend_pid        integer,
        revision           text,
        migration_file     text,
        migration_checksum text CHECK (migration_checksum ~ '^[0-9a-f]{{64}}$'),
        created_at         timestamptz NOT NULL DEFAULT now(),
        updated_at         timestamptz NOT NULL DEFAULT now(),
        finished_at        timestamptz
    )
    """,
    f"CREATE UNIQUE INDEX IF NOT EXISTS online_changes_one_per_table_key ON {INTERNAL_SCHEMA}.{STATE_TABLE} "
    "(table_schema, table_name) WHERE status IN ('running', 'paused', 'failed', 'cut_over')",
    f"COMMENT ON TABLE {INTERNAL_SCHEMA}.{STATE_TABLE} IS "
    "'Online changes (agentdb.online): phase, checkpoint and progress of each, so that they resume after a crash'",
]

#: First key of the two-key advisory lock of a table's online change (second key: hash of its name).
LOCK_NAMESPACE = 0x0A6E_0C11
#: Serialises the creation of the state table by concurrent first runs.
_DDL_LOCK = 0x0A6E_0C10


def ensure_table(connection: sa.Connection) -> None:
    """Create ``agentdb.online_changes`` if missing, and commit."""
    if connection.in_transaction():
        connection.commit()
    exists = connection.execute(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{INTERNAL_SCHEMA}.{STATE_TABLE}"}
    ).scalar()
    if not exists:
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK})
        for statement in DDL:
            connection.execute(sa.text(statement))
    connection.commit()


def table_lock_key(schema: str, table: str) -> tuple[int, int]:
    """The advisory lock keys of a table's online change: stable across the swap, positive 32-bit ints."""
    digest = hashlib.sha256(f"{schema}.{table}".encode()).digest()
    return LOCK_NAMESPACE, int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def try_table_lock(connection: sa.Connection, schema: str, table: str) -> bool:
    """Take the table's session-level advisory lock if free; it outlives commits, until released or disconnect."""
    k1, k2 = table_lock_key(schema, table)
    got = bool(connection.execute(sa.text("SELECT pg_try_advisory_lock(:k1, :k2)"), {"k1": k1, "k2": k2}).scalar())
    connection.commit()
    return got


def release_table_lock(connection: sa.Connection, schema: str, table: str) -> None:
    if connection.in_transaction():
        connection.rollback()
    k1, k2 = table_lock_key(schema, table)
    connection.execute(sa.text("SELECT pg_advisory_unlock(:k1, :k2)"), {"k1": k1, "k2": k2})
    connection.commit()


def lock_holder(connection: sa.Connection, schema: str, table: str) -> int | None:
    """The backend pid driving a change of this table now, or None."""
    k1, k2 = table_lock_key(schema, table)
    return connection.execute(sa.text(
        "SELECT pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) "
        "AND classid = :k1 AND objid = :k2 AND objsubid = 2 LIMIT 1"
    ), {"k1": k1, "k2": k2}).scalar()


@dataclass
class ChangeRecord:
    """One row of ``agentdb.online_changes``."""

    id: int
    token: str
    kind: str
    table_schema: str
    table_name: str
    status: str
    phase: str
    step: int
    requested: str | None
    checkpoint: dict[str, Any] | None
    rows_done: int
    rows_estimated: int | None
    batch_size: int | None
    waiting: str | None
    timings: dict[str, Any]
    lock_hold_ms: float | None
    design: dict[str, Any]
    settings: dict[str, Any]
    error: str | None
    db_user: str
    os_user: str | None
    host: str | None
    client_pid: int | None
    backend_pid: int | None
    revision: str | None
    migration_file: str | None
    migration_checksum: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def table(self) -> str:
        return f"{self.table_schema}.{self.table_name}"


_COLUMNS = (
    "id, token, kind, table_schema, table_name, status, phase, step, requested, checkpoint, rows_done, "
    "rows_estimated, batch_size, waiting, timings, lock_hold_ms, design, settings, error, db_user, os_user, host, "
    "client_pid, backend_pid, revision, migration_file, migration_checksum, created_at, updated_at, finished_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM {INTERNAL_SCHEMA}.{STATE_TABLE}"  # noqa: S608 - constants only


def _record(row: Any) -> ChangeRecord:
    return ChangeRecord(**dict(row._mapping))


def _exists(connection: sa.Connection) -> bool:
    return bool(connection.execute(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{INTERNAL_SCHEMA}.{STATE_TABLE}"}
    ).scalar())


def load(connection: sa.Connection, change_id: int, *, for_update: bool = False) -> ChangeRecord | None:
    query = _SELECT + " WHERE id = :id" + (" FOR UPDATE" if for_update else "")
    row = connection.execute(sa.text(query), {"id": change_id}).first()
    return _record(row) if row is not None else None


def find_active(connection: sa.Connection, schema: str, table: str) -> ChangeRecord | None:
    if not _exists(connection):
        return None
    row = connection.execute(sa.text(
        _SELECT + " WHERE table_schema = :schema AND table_name = :table AND status IN "
        "('running', 'paused', 'failed', 'cut_over')"
    ), {"schema": schema, "table": table}).first()
    return _record(row) if row is not None else None


def read_changes(connection: sa.Connection, *, include_finished: bool = False, limit: int = 50
                 ) -> list[ChangeRecord]:
    if not _exists(connection):
        return []
    where = "" if include_finished else " WHERE status IN ('running', 'paused', 'failed', 'cut_over')"
    rows = connection.execute(sa.text(_SELECT + where + " ORDER BY id DESC LIMIT :limit"), {"limit": limit})
    return [_record(r) for r in rows]


def who() -> dict[str, Any]:
    """Who drives a change: OS user, host and process id (the database user is current_user)."""
    try:
        os_user: str | None = getpass.getuser()
    except (KeyError, OSError):
        os_user = None
    return {"os_user": os_user, "host": socket.gethostname(), "client_pid": os.getpid()}


_JSON_COLUMNS = {"checkpoint", "timings", "design", "settings"}


def insert_change(connection: sa.Connection, values: dict[str, Any]) -> int:
    """Insert a change row (in the caller's transaction) and return its id."""
    names = sorted(values)
    placeholders = ", ".join(
        f"CAST(:{n} AS jsonb)" if n in _JSON_COLUMNS else f":{n}" for n in names
    )
    params = {n: json.dumps(values[n]) if n in _JSON_COLUMNS else values[n] for n in names}
    query = (f"INSERT INTO {INTERNAL_SCHEMA}.{STATE_TABLE} ({', '.join(names)}) "  # noqa: S608 - our column names
             f"VALUES ({placeholders}) RETURNING id")
    return int(connection.execute(sa.text(query), params).scalar_one())


_UPDATABLE = {
    "status", "phase", "step", "requested", "checkpoint", "rows_done", "rows_estimated", "batch_size", "waiting",
    "lock_hold_ms", "error", "os_user", "host", "client_pid", "backend_pid", "finished_at",
}


def update(connection: sa.Connection, change_id: int, *, timing: tuple[str, str] | None = None,
           **values: Any) -> str | None:
    """Update a change row in the caller's transaction; returns its ``requested`` flag (pause/abort/None).

    ``timing=(phase, "started"|"finished")`` stamps that phase's time in ``timings``.
    """
    return _update(connection, change_id, timing, values)[0]


def update_batch(connection: sa.Connection, change_id: int, **values: Any) -> tuple[str | None, dict[str, Any]]:
    """:func:`update` for a batch's checkpoint: also returns the stored settings, which :func:`set_settings`
    may have changed while the change runs (the driver takes them up before its next batch)."""
    return _update(connection, change_id, None, values)


def set_settings(connection: sa.Connection, change_id: int, settings: dict[str, Any]) -> None:
    """Store new settings for a change, in the caller's transaction."""
    connection.execute(sa.text(
        f"UPDATE {INTERNAL_SCHEMA}.{STATE_TABLE} SET settings = CAST(:settings AS jsonb), "  # noqa: S608
        "updated_at = clock_timestamp() WHERE id = :id"), {"id": change_id, "settings": json.dumps(settings)})


def _update(connection: sa.Connection, change_id: int, timing: tuple[str, str] | None,
            values: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The update of :func:`update`; returns the row's ``requested`` flag and its settings."""
    unknown = set(values) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sets = ["updated_at = clock_timestamp()"]
    params: dict[str, Any] = {"id": change_id}
    for name, value in values.items():
        if name in _JSON_COLUMNS:
            sets.append(f"{name} = CAST(:{name} AS jsonb)")
            params[name] = json.dumps(value) if value is not None else None
        else:
            sets.append(f"{name} = :{name}")
            params[name] = value
    if timing is not None:
        # timings -> {phase: {started_at, finished_at, seconds}}; a resumed phase keeps its first start.
        sets.append(
            "timings = jsonb_set(timings, ARRAY[CAST(:t_phase AS text)], CASE CAST(:t_what AS text) "
            "WHEN 'started' THEN jsonb_build_object('started_at', clock_timestamp()) "
            "  || coalesce(timings -> CAST(:t_phase AS text), '{}'::jsonb) "
            "ELSE coalesce(timings -> CAST(:t_phase AS text), '{}'::jsonb) "
            "  || jsonb_build_object('finished_at', clock_timestamp(), 'seconds', round(extract(epoch FROM "
            "clock_timestamp() - coalesce((timings -> CAST(:t_phase AS text) ->> 'started_at')::timestamptz, "
            "clock_timestamp()))::numeric, 3)) END)"
        )
        params["t_phase"], params["t_what"] = timing
    query = (f"UPDATE {INTERNAL_SCHEMA}.{STATE_TABLE} SET {', '.join(sets)} "  # noqa: S608 - our column names
             "WHERE id = :id RETURNING requested, settings")
    requested, settings = connection.execute(sa.text(query), params).one()
    return requested, dict(settings)
