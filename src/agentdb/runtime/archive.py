"""Rollback that loses nothing: a dropped table's rows are archived, and restored on the way back up.

agentdb replaces Alembic's implementations of two operations (Alembic's own
extension point, ``Operations.implementation_for(..., replace=True)``), so every
migration gets this without writing anything special:

``op.drop_table(name)``
    When the table holds rows, they are first copied into
    ``agentdb_archive.<name>_<revision>_<id>`` and the copy is recorded in
    ``agentdb.archived_tables``; then the table is dropped as usual.  An empty
    table is simply dropped.  With ``purge`` set (``agentdb rollback --purge``)
    the rows are dropped for real.
``op.create_table(name, ...)``
    After the table is created, the newest unrestored archive of that table is
    copied back row for row (``OVERRIDING SYSTEM VALUE``, identity sequences
    moved past the restored keys), the archive table is dropped and its registry
    row marked restored.

Both run inside the migration's transaction, so archiving and dropping (or
creating and restoring) happen together or not at all.  In offline SQL mode
(``agentdb sql``) nothing can be counted and the plain operations are emitted.

.. warning::
   The archive is a *copy*: rows, not constraints, indexes or triggers.  It costs
   the time and disk of one ``CREATE TABLE ... AS`` of the table.  Archived rows
   can hold personal data; GDPR erasure must reach ``agentdb_archive`` too, and
   ``agentdb.archived_tables`` lists every copy that exists.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.operations import Operations, ops
from psycopg import sql

from agentdb.runtime.history import INTERNAL_SCHEMA

__all__ = [
    "ARCHIVE_SCHEMA",
    "REGISTRY_DDL",
    "REGISTRY_TABLE",
    "ArchiveScope",
    "archived_tables",
    "scope",
]

ARCHIVE_SCHEMA = "agentdb_archive"
REGISTRY_TABLE = "archived_tables"

_log = logging.getLogger("agentdb.runtime")

#: The archive schema and its registry; run lazily by the first archiving drop, and by migration 006.
REGISTRY_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {ARCHIVE_SCHEMA}",
    f"COMMENT ON SCHEMA {ARCHIVE_SCHEMA} IS "
    "'Rows of tables dropped by agentdb downgrades, kept until the table is created again or purged'",
    f"""
    CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.{REGISTRY_TABLE} (
        id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        table_schema   text NOT NULL,
        table_name     text NOT NULL,
        archive_table  text NOT NULL UNIQUE,
        revision       text,
        run_id         uuid,
        row_count      bigint NOT NULL CHECK (row_count >= 0),
        archived_at    timestamptz NOT NULL DEFAULT now(),
        restored_at    timestamptz,
        restored_rows  bigint
    )
    """,
    f"COMMENT ON TABLE {INTERNAL_SCHEMA}.{REGISTRY_TABLE} IS "
    "'Every table whose rows a downgrade archived instead of dropping, and when they were restored'",
]


@dataclass(frozen=True)
class ArchiveScope:
    """What the running migration step is, and what the archive did during it (for the run history)."""

    revision: str | None
    run_id: uuid.UUID | None
    purge: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    pending_restores: list[tuple[str, str]] = field(default_factory=list)


_SCOPE: ContextVar[ArchiveScope | None] = ContextVar("agentdb_archive_scope", default=None)


@contextlib.contextmanager
def scope(
    revision: str | None, run_id: uuid.UUID | None, connection: sa.Connection, *, purge: bool = False
) -> Iterator[ArchiveScope]:
    """Declare the migration step that the operations inside belong to.

    Collects what was archived or restored (for the run history).  Archived rows
    of tables the step created are restored when the step's body has finished,
    so rows the migration itself inserts (a seeded lookup table) win over their
    archived copies: archived rows that would violate a unique constraint are
    skipped and counted.
    """
    current = ArchiveScope(revision, run_id, purge)
    token = _SCOPE.set(current)
    try:
        yield current
        for schema, table in current.pending_restores:
            _restore(connection, current, schema, table)
    finally:
        _SCOPE.reset(token)


def _ensure_registry(connection: sa.Connection) -> None:
    exists = connection.execute(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{INTERNAL_SCHEMA}.{REGISTRY_TABLE}"}
    ).scalar()
    if not exists:
        connection.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA}"))
        for statement in REGISTRY_DDL:
            connection.execute(sa.text(statement))


def _raw(connection: sa.Connection, composed: sql.Composable, params: dict[str, Any] | None = None) -> Any:
    """Execute a psycopg-composed statement on the SQLAlchemy connection's DBAPI cursor."""
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(composed, params)
        return cursor.fetchall() if cursor.description else None
    finally:
        cursor.close()


def _archive_name(table: str, revision: str | None) -> str:
    suffix = f"_{revision or 'x'}_{uuid.uuid4().hex[:8]}"
    return table[: 63 - len(suffix)] + suffix


@Operations.implementation_for(ops.DropTableOp, replace=True)
def _drop_table(operations: Operations, operation: ops.DropTableOp) -> None:
    context = operations.migration_context
    current = _SCOPE.get()
    if not context.as_sql and current is not None:
        connection = context.connection
        assert connection is not None
        _archive(connection, current, operation.schema or "public", operation.table_name)
    kw: dict[str, Any] = {}
    if operation.if_exists is not None:
        kw["if_exists"] = operation.if_exists
    operations.impl.drop_table(operation.to_table(context), **kw)


def _archive(connection: sa.Connection, current: ArchiveScope, schema: str, table: str) -> None:
    """Copy the rows of ``schema.table`` into the archive (or count them as purged) before it is dropped."""
    source = sql.Identifier(schema, table)
    exists = _raw(connection, sql.SQL("SELECT to_regclass({})").format(sql.Literal(f"{schema}.{table}")))
    if not exists or exists[0][0] is None:
        return
    if current.purge:
        purged = _raw(connection, sql.SQL("SELECT count(*) FROM {}").format(source))[0][0]
        if purged:
            current.events.append({"purged": f"{schema}.{table}", "rows": purged})
            _log.warning("purged %d rows of %s.%s (--purge: not archived)", purged, schema, table)
        return
    has_rows = _raw(connection, sql.SQL("SELECT EXISTS (SELECT FROM {})").format(source))
    if not has_rows or not has_rows[0][0]:
        return
    _ensure_registry(connection)
    archive = _archive_name(table, current.revision)
    target = sql.Identifier(ARCHIVE_SCHEMA, archive)
    _raw(connection, sql.SQL("CREATE TABLE {} AS TABLE {}").format(target, source))
    count = _raw(connection, sql.SQL("SELECT count(*) FROM {}").format(target))[0][0]
    _raw(connection, sql.SQL(
        "INSERT INTO {} (table_schema, table_name, archive_table, revision, run_id, row_count) "
        "VALUES (%(schema)s, %(table)s, %(archive)s, %(revision)s, %(run)s, %(rows)s)"
    ).format(sql.Identifier(INTERNAL_SCHEMA, REGISTRY_TABLE)), {
        "schema": schema, "table": table, "archive": archive,
        "revision": current.revision, "run": current.run_id, "rows": count,
    })
    current.events.append({"archived": f"{schema}.{table}", "rows": count, "archive": f"{ARCHIVE_SCHEMA}.{archive}"})
    _log.info("archived %d rows of %s.%s in %s.%s", count, schema, table, ARCHIVE_SCHEMA, archive)


@Operations.implementation_for(ops.CreateTableOp, replace=True)
def _create_table(operations: Operations, operation: ops.CreateTableOp) -> sa.Table:
    context = operations.migration_context
    kw: dict[str, Any] = {}
    if operation.if_not_exists is not None:
        kw["if_not_exists"] = operation.if_not_exists
    table = operation.to_table(context)
    operations.impl.create_table(table, **kw)
    current = _SCOPE.get()
    if not context.as_sql and current is not None:
        current.pending_restores.append((operation.schema or "public", operation.table_name))
    return table


def _restore(connection: sa.Connection, current: ArchiveScope, schema: str, table: str) -> None:
    registry = _raw(connection, sql.SQL("SELECT to_regclass({})").format(
        sql.Literal(f"{INTERNAL_SCHEMA}.{REGISTRY_TABLE}")))
    if not registry or registry[0][0] is None:
        return
    found = _raw(connection, sql.SQL(
        "SELECT id, archive_table, row_count FROM {} WHERE table_schema = %(schema)s AND table_name = %(table)s "
        "AND restored_at IS NULL ORDER BY id DESC LIMIT 1 FOR UPDATE"
    ).format(sql.Identifier(INTERNAL_SCHEMA, REGISTRY_TABLE)), {"schema": schema, "table": table})
    if not found:
        return
    entry_id, archive, expected = found[0]
    columns = _raw(connection, sql.SQL(
        "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = {}::regclass AND a.attnum > 0 "
        "AND NOT a.attisdropped AND a.attgenerated = '' AND a.attname IN ("
        "SELECT b.attname FROM pg_attribute b WHERE b.attrelid = {}::regclass AND b.attnum > 0 "
        "AND NOT b.attisdropped) ORDER BY a.attnum"
    ).format(sql.Literal(f"{schema}.{table}"), sql.Literal(f"{ARCHIVE_SCHEMA}.{archive}")))
    names = [sql.Identifier(row[0]) for row in columns]
    target = sql.Identifier(schema, table)
    before = _raw(connection, sql.SQL("SELECT count(*) FROM {}").format(target))[0][0]
    # The rows come back as they were, so user triggers (audit, timestamps) must not treat them as new
    # writes.  DISABLE TRIGGER USER is owner-only (a session variable would let any client skip the audit)
    # and keeps the foreign-key triggers; the table was created in this transaction, so its lock is ours.
    _raw(connection, sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(target))
    _raw(connection, sql.SQL(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} ON CONFLICT DO NOTHING"
    ).format(target, sql.SQL(", ").join(names), sql.SQL(", ").join(names), sql.Identifier(ARCHIVE_SCHEMA, archive)))
    _raw(connection, sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(target))
    restored = _raw(connection, sql.SQL("SELECT count(*) FROM {}").format(target))[0][0] - before
    skipped = expected - restored
    identities = _raw(connection, sql.SQL(
        "SELECT attname FROM pg_attribute WHERE attrelid = {}::regclass AND attidentity <> '' AND NOT attisdropped"
    ).format(sql.Literal(f"{schema}.{table}")))
    for (column,) in identities or []:
        _raw(connection, sql.SQL(
            "SELECT setval(pg_get_serial_sequence({}, {}), GREATEST((SELECT max({}) FROM {}), 1))"
        ).format(sql.Literal(f"{schema}.{table}"), sql.Literal(column), sql.Identifier(column), target))
    _raw(connection, sql.SQL("DROP TABLE {}").format(sql.Identifier(ARCHIVE_SCHEMA, archive)))
    _raw(connection, sql.SQL("UPDATE {} SET restored_at = now(), restored_rows = %(rows)s WHERE id = %(id)s").format(
        sql.Identifier(INTERNAL_SCHEMA, REGISTRY_TABLE)), {"rows": restored, "id": entry_id})
    current.events.append({"restored": f"{schema}.{table}", "rows": restored, "skipped": skipped,
                           "archive": f"{ARCHIVE_SCHEMA}.{archive}"})
    log = _log.warning if skipped else _log.info
    log("restored %d of %d archived rows into %s.%s (%d already there)", restored, expected, schema, table, skipped)


def archived_tables(connection: sa.Connection, *, include_restored: bool = False) -> list[dict[str, Any]]:
    """The archive registry, newest first."""
    exists = connection.execute(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{INTERNAL_SCHEMA}.{REGISTRY_TABLE}"}
    ).scalar()
    if not exists:
        return []
    query = (
        "SELECT id, table_schema, table_name, archive_table, revision, run_id::text AS run_id, row_count, "  # noqa: S608
        f"archived_at, restored_at, restored_rows FROM {INTERNAL_SCHEMA}.{REGISTRY_TABLE}"
    )
    if not include_restored:
        query += " WHERE restored_at IS NULL"
    return [dict(r) for r in connection.execute(sa.text(query + " ORDER BY id DESC")).mappings()]
