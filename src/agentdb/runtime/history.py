"""The run history and the checksums of applied migrations.

agentdb's own tables live in the ``agentdb`` schema, apart from the
application's tables in ``public``:

``agentdb.alembic_version``
    Alembic's pointer to the current revision.
``agentdb.migration_runs``
    One row per migration applied or rolled back, failed attempts included:
    who, where, when, how long, and the sha256 of the file that ran.

A migration's success row is written inside the migration's own transaction,
so it exists exactly when the migration's changes do.  A failure row is
written after the rollback, in a transaction of its own.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

__all__ = [
    "INTERNAL_SCHEMA",
    "RUNS_TABLE",
    "VERSION_TABLE",
    "AppliedMigration",
    "RunRecord",
    "allow_maintain",
    "applied_migrations",
    "bootstrap",
    "file_checksum",
    "read_runs",
    "record_run",
]

INTERNAL_SCHEMA = "agentdb"
VERSION_TABLE = "alembic_version"
RUNS_TABLE = "migration_runs"

_BOOTSTRAP = [
    f"CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA}",
    f"COMMENT ON SCHEMA {INTERNAL_SCHEMA} IS 'agentdb internal tables: migration version and run history'",
    f"""
    CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.{RUNS_TABLE} (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id          uuid NOT NULL,
        revision        text NOT NULL,
        direction       text NOT NULL CONSTRAINT migration_runs_direction_check
                        CHECK (direction IN ('upgrade', 'downgrade', 'repair', 'maintain')),
        filename        text,
        description     text,
        checksum        text CHECK (checksum ~ '^[0-9a-f]{{64}}$'),
        started_at      timestamptz NOT NULL,
        finished_at     timestamptz NOT NULL,
        duration_ms     double precision NOT NULL CHECK (duration_ms >= 0),
        success         boolean NOT NULL,
        sqlstate        text,
        error           text,
        details         jsonb,
        db_user         text NOT NULL DEFAULT current_user,
        os_user         text,
        host            text,
        agentdb_version text NOT NULL
    )
    """,
    f"CREATE INDEX IF NOT EXISTS migration_runs_revision_idx ON {INTERNAL_SCHEMA}.{RUNS_TABLE} (revision, id)",
    f"COMMENT ON TABLE {INTERNAL_SCHEMA}.{RUNS_TABLE} IS "
    "'One row per migration applied or rolled back by agentdb, failed attempts included'",
]


def bootstrap(connection: sa.Connection) -> None:
    """Create the internal schema and the run history table if missing, and commit.

    Runs under the run lock, so concurrent first runs do not race on the catalogue.
    A history table made by an agentdb older than partition maintenance gets the
    direction ``maintain`` added to its CHECK (:func:`allow_maintain`).
    """
    exists = connection.execute(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{INTERNAL_SCHEMA}.{RUNS_TABLE}"}
    ).scalar()
    if not exists:
        for statement in _BOOTSTRAP:
            connection.execute(sa.text(statement))
    else:
        allow_maintain(connection)
    connection.commit()


def allow_maintain(connection: sa.Connection) -> bool:
    """Make an existing history table accept the direction ``maintain``; True when it had to change.

    Reads the CHECK constraint on ``direction`` from the catalogue and, when it does
    not name ``maintain``, replaces it in the caller's transaction (a short ACCESS
    EXCLUSIVE lock on the history table; the caller commits).
    """
    found = connection.execute(sa.text(
        "SELECT conname FROM pg_catalog.pg_constraint WHERE conrelid = CAST(:runs AS regclass) AND contype = 'c' "
        "AND pg_catalog.pg_get_constraintdef(oid) LIKE '%direction%' "
        "AND pg_catalog.pg_get_constraintdef(oid) NOT LIKE '%''maintain''%'"
    ), {"runs": f"{INTERNAL_SCHEMA}.{RUNS_TABLE}"}).scalars().all()
    if not found:
        return False
    drops = ", ".join(f'DROP CONSTRAINT "{name}"' for name in found)
    connection.execute(sa.text(
        f"ALTER TABLE {INTERNAL_SCHEMA}.{RUNS_TABLE} {drops}, ADD CONSTRAINT migration_runs_direction_check "
        "CHECK (direction IN ('upgrade', 'downgrade', 'repair', 'maintain'))"
    ))
    return True


def file_checksum(path: str | Path) -> str:
    """sha256 of a migration file, with line endings normalised to ``\\n``.

    Normalising means a checkout with CRLF line endings does not look like a
    changed migration; any other byte that changes, changes the checksum.
    """
    data = Path(path).read_bytes().replace(b"\r\n", b"\n")
    return hashlib.sha256(data).hexdigest()


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


@dataclass
class RunRecord:
    """One migration applied or rolled back (or attempted)."""

    run_id: uuid.UUID
    revision: str
    direction: str
    started_at: datetime
    finished_at: datetime
    success: bool
    filename: str | None = None
    description: str | None = None
    checksum: str | None = None
    sqlstate: str | None = None
    error: str | None = None
    details: dict[str, Any] | None = None
    os_user: str | None = field(default_factory=_os_user)
    host: str | None = field(default_factory=socket.gethostname)

    @property
    def duration_ms(self) -> float:
        """Milliseconds, rounded to 0.1 ms (finer is noise, and ``24.493000000000002`` is no figure to show)."""
        return round(max(0.0, (self.finished_at - self.started_at).total_seconds() * 1000.0), 1)


def record_run(connection: sa.Connection, record: RunRecord) -> None:
    """Insert a history row in the connection's current transaction (the caller commits)."""
    from agentdb import __version__

    connection.execute(
        sa.text(
            f"INSERT INTO {INTERNAL_SCHEMA}.{RUNS_TABLE} "  # noqa: S608 - constant identifiers
            "(run_id, revision, direction, filename, description, checksum, started_at, finished_at, "
            "duration_ms, success, sqlstate, error, details, os_user, host, agentdb_version) VALUES "
            "(:run_id, :revision, :direction, :filename, :description, :checksum, :started_at, :finished_at, "
            ":duration_ms, :success, :sqlstate, :error, CAST(:details AS jsonb), :os_user, :host, :version)"
        ),
        {
            "run_id": record.run_id,
            "revision": record.revision,
            "direction": record.direction,
            "filename": record.filename,
            "description": record.description,
            "checksum": record.checksum,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
            "duration_ms": record.duration_ms,
            "success": record.success,
            "sqlstate": record.sqlstate,
            "error": record.error,
            "details": json.dumps(record.details) if record.details else None,
            "os_user": record.os_user,
            "host": record.host,
            "version": __version__,
        },
    )


def _has_runs_table(connection: sa.Connection) -> bool:
    return bool(
        connection.execute(
            sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{INTERNAL_SCHEMA}.{RUNS_TABLE}"}
        ).scalar()
    )


def read_runs(connection: sa.Connection, limit: int | None = None) -> list[dict[str, Any]]:
    """The run history, newest first."""
    if not _has_runs_table(connection):
        return []
    query = (
        f"SELECT id, run_id::text AS run_id, revision, direction, filename, description, checksum, "  # noqa: S608
        "started_at, finished_at, duration_ms, success, sqlstate, error, details, "
        "db_user, os_user, host, agentdb_version "
        f"FROM {INTERNAL_SCHEMA}.{RUNS_TABLE} ORDER BY id DESC"
    )
    if limit is not None:
        query += " LIMIT :limit"
    rows = connection.execute(sa.text(query), {"limit": limit}).mappings()
    # Rows written before durations were rounded hold more digits than mean anything.
    return [{**row, "duration_ms": round(row["duration_ms"], 1)} for row in rows]


@dataclass(frozen=True)
class AppliedMigration:
    """The last successful upgrade (or repair) recorded for a revision that is still applied."""

    revision: str
    checksum: str | None
    filename: str | None
    applied_at: datetime
    db_user: str
    os_user: str | None


def applied_migrations(connection: sa.Connection) -> dict[str, AppliedMigration]:
    """Revisions whose most recent successful history row is an upgrade or a repair.

    A revision rolled back later (its last successful row is a downgrade) is not
    in the result; one applied again after that is.
    """
    if not _has_runs_table(connection):
        return {}
    rows = connection.execute(
        sa.text(
            "SELECT revision, direction, checksum, filename, finished_at, db_user, os_user FROM ("  # noqa: S608
            "SELECT DISTINCT ON (revision) revision, direction, checksum, filename, finished_at, db_user, os_user "
            f"FROM {INTERNAL_SCHEMA}.{RUNS_TABLE} WHERE success ORDER BY revision, id DESC) last "
            "WHERE direction IN ('upgrade', 'repair')"
        )
    )
    return {
        r[0]: AppliedMigration(revision=r[0], checksum=r[2], filename=r[3], applied_at=r[4], db_user=r[5], os_user=r[6])
        for r in rows
    }
