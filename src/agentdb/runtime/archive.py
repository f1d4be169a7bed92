"""Rollback that loses nothing: a dropped table's rows are archived, and restored on the way back up.

agentdb replaces Alembic's implementations of two operations (Alembic's own
extension point, ``Operations.implementation_for(..., replace=True)``), so every
migration gets this without writing anything special:

``op.drop_table(name)``
    When the table holds rows, they are first copied into
    ``agentdb_archive.<name>_<revision>_<id>`` and the copy is recorded in
    ``agentdb.archived_tables`` (with the position of the table's identity and
    serial sequences); then the table is dropped as usual.  An empty table is
    simply dropped.  With ``purge`` set (``agentdb rollback --purge``) the rows
    are dropped for real.
``op.create_table(name, ...)``
    When the migration step's body has finished, the newest unrestored archive
    of every table the step created is put back: the archive is the truth, so
    rows the migration itself wrote into those tables (a seeded lookup table)
    are deleted first, then the archived rows are inserted exactly as they were
    (``OVERRIDING SYSTEM VALUE``, parents before children, user triggers such
    as the audit log not fired, generated columns computed again), the
    sequences are put back where they were, the archive table is dropped and
    its registry row marked restored.

Both run inside the migration step's transaction, so archiving and dropping (or
creating and restoring) happen together or not at all: a restore that cannot
complete raises :class:`~agentdb.errors.RestoreFailed` and leaves the archive as
it was.  In offline SQL mode (``agentdb sql``) nothing can be counted and the
plain operations are emitted.  Nothing here logs: what was archived, purged or
restored is appended to :attr:`ArchiveScope.events`, and the runner reports it
once the step has committed (a dry run only reports what it would do).

Whenever the archive holds rows, ``agentdb.archived_tables`` lists them: the
first archiving drop creates it, below migration 006 too, and 006's downgrade
keeps it while rows are kept.  Its owner-only view ``public.rollback_archive``
is 006's, so it exists from 006 on: agentdb's bookkeeping stays in its own
schemas, and a downgrade to R leaves exactly R's application schema.

.. warning::
   The archive is a *copy*: rows, not constraints, indexes or triggers.  It costs
   the time and disk of one ``CREATE TABLE ... AS`` of the table, under the
   ``ACCESS EXCLUSIVE`` lock the drop needs anyway, taken before the copy (so
   no write slips in between) and held until the step commits: readers and
   writers of the table wait that long.  Columns of types that
   are not built in (enums, domains, extension types) are kept as text, so a
   downgrade can drop those types; they are cast back on restore.  A partitioned
   table is archived whole when its parent is dropped, and restored through the
   parent into the partitions the migration made; a partition dropped on its own
   is archived on its own, and comes back only when ``op.create_table`` makes it
   again.  A restore replaces what the migration wrote into the tables it
   created, so a row of another table that points at such a row stops the
   restore (:class:`~agentdb.errors.RestoreFailed`) instead of being cascaded
   to.  The restore holds the ``ACCESS EXCLUSIVE`` lock of every table the step
   created until the step commits, like the migration itself.  Archived rows
   can hold personal data; GDPR erasure must reach ``agentdb_archive`` too, and
   ``agentdb.archived_tables`` lists every copy that exists.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa
from alembic.operations import Operations, ops
from psycopg import sql
from psycopg.types.json import Jsonb

from agentdb.errors import RestoreFailed
from agentdb.runtime.history import INTERNAL_SCHEMA
from agentdb.runtime.locks import LOCK_NOT_AVAILABLE, sqlstate_of

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

#: The current definition of the archive schema and its registry, run by the first archiving drop.
#: Migration 006 carries its own copy (a migration is what its file says); tests keep the two equal.
REGISTRY_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {ARCHIVE_SCHEMA}",
    f"COMMENT ON SCHEMA {ARCHIVE_SCHEMA} IS "
    "'Rows of tables dropped by agentdb downgrades, kept until the table is created again or purged'",
    f"REVOKE ALL ON SCHEMA {ARCHIVE_SCHEMA} FROM PUBLIC",
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
        restored_rows  bigint,
        sequences      jsonb
    )
    """,
    f"COMMENT ON TABLE {INTERNAL_SCHEMA}.{REGISTRY_TABLE} IS "
    "'Every table whose rows a downgrade archived instead of dropping, and when they were restored'",
    f"COMMENT ON COLUMN {INTERNAL_SCHEMA}.{REGISTRY_TABLE}.sequences IS "
    "'Position of the table''s identity and serial sequences when archived: column -> last_value, is_called'",
]

_REGISTRY = sql.Identifier(INTERNAL_SCHEMA, REGISTRY_TABLE)


@dataclass(frozen=True)
class ArchiveScope:
    """What the running migration step is, and what the archive did during it.

    :attr:`events` is the record of the step (run history, reports, the CLI):
    one dict per table, ``{"archived": "schema.table", "rows": n, "archive":
    "agentdb_archive.x"}``, ``{"purged": ..., "rows": n}`` or ``{"restored": ...,
    "rows": n, "archive": ..., "skipped": 0, "replaced": m}`` where ``replaced``
    counts the rows the migration had written that the archived rows replaced.
    Nothing is logged here: a dry run must not sound as if it happened.
    """

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

    When the step's body has finished, the archived rows of the tables it
    created are restored (see the module docstring), still inside the step's
    transaction: a failure raises :class:`~agentdb.errors.RestoreFailed` and
    the step rolls back with the archive untouched.
    """
    current = ArchiveScope(revision, run_id, purge)
    token = _SCOPE.set(current)
    try:
        yield current
        if current.pending_restores:
            _restore(connection, current)
    finally:
        _SCOPE.reset(token)


def _raw(connection: sa.Connection, composed: sql.Composable, params: dict[str, Any] | None = None) -> Any:
    """Execute a psycopg-composed statement on the SQLAlchemy connection's DBAPI cursor.

    Errors come out as SQLAlchemy's ``DBAPIError``, like those of any other
    statement of the migration, so a lock timeout (55P03) is retried by the runner.
    """
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(composed, params)
        return cursor.fetchall() if cursor.description else cursor.rowcount
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(
            composed.as_string(dbapi), params, exc, psycopg.Error  # type: ignore[arg-type]
        ) from exc
    finally:
        cursor.close()


def _oid(connection: sa.Connection, schema: str, table: str) -> int | None:
    """The table's oid, or None when there is no such table (names compared exactly, no quoting rules)."""
    found = _raw(connection, sql.SQL(
        "SELECT c.oid::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p')"
    ), {"schema": schema, "table": table})
    return int(found[0][0]) if found else None


def _ensure_registry(connection: sa.Connection) -> None:
    """Create the archive schema and its registry where missing (in agentdb's schemas only, at any revision)."""
    registry = _oid(connection, INTERNAL_SCHEMA, REGISTRY_TABLE)
    if registry is None:
        _raw(connection, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(INTERNAL_SCHEMA)))
        for statement in REGISTRY_DDL:
            _raw(connection, sql.SQL(statement))  # constant text
    elif not _raw(connection, sql.SQL(
        "SELECT FROM pg_attribute WHERE attrelid = %(oid)s::oid AND attname = 'sequences' AND NOT attisdropped"
    ), {"oid": registry}):
        # A registry made by an older agentdb: add the column (the lock is brief, the table small).
        _raw(connection, sql.SQL("ALTER TABLE {} ADD COLUMN sequences jsonb").format(_REGISTRY))


def _archive_name(table: str, revision: str | None) -> str:
    suffix = f"_{revision or 'x'}_{uuid.uuid4().hex[:8]}"
    return table[: 63 - len(suffix)] + suffix


def _sequences(connection: sa.Connection, oid: int) -> list[tuple[str, int, int]]:
    """The identity and serial sequences the table owns: (column, sequence oid, increment)."""
    rows = _raw(connection, sql.SQL(
        "SELECT a.attname, s.seqrelid::int8, s.seqincrement FROM pg_depend d "
        "JOIN pg_sequence s ON s.seqrelid = d.objid "
        "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
        "AND d.refobjid = %(oid)s::oid AND d.deptype IN ('a', 'i') ORDER BY a.attnum"
    ), {"oid": oid})
    return [(str(name), int(seq), int(increment)) for name, seq, increment in rows]


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
    oid = _oid(connection, schema, table)
    if oid is None:
        return
    source = sql.Identifier(schema, table)
    # The drop's own lock, taken before the copy: under a weaker one a write committed between the copy and
    # the drop would be in neither.  Waits for open writers, under lock_timeout (the runner retries).
    _raw(connection, sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(source))
    if current.purge:
        purged = _raw(connection, sql.SQL("SELECT count(*) FROM {}").format(source))[0][0]
        if purged:
            current.events.append({"purged": f"{schema}.{table}", "rows": purged})
        return
    if not _raw(connection, sql.SQL("SELECT EXISTS (SELECT FROM {})").format(source))[0][0]:
        return
    _ensure_registry(connection)
    archive = _archive_name(table, current.revision)
    # Columns of types that are not built in are kept as text: the downgrade may drop the type right after.
    columns = _raw(connection, sql.SQL(
        "SELECT a.attname, t.typnamespace <> 'pg_catalog'::regnamespace FROM pg_attribute a "
        "JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = %(oid)s::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    ), {"oid": oid})
    select = sql.SQL(", ").join(
        sql.SQL("CAST({0} AS text) AS {0}").format(sql.Identifier(name)) if as_text else sql.Identifier(name)
        for name, as_text in columns
    )
    count = _raw(connection, sql.SQL("CREATE TABLE {} AS SELECT {} FROM {}").format(
        sql.Identifier(ARCHIVE_SCHEMA, archive), select, source))
    positions: dict[str, Any] = {}
    for column, sequence, _increment in _sequences(connection, oid):
        (state,) = _raw(connection, sql.SQL(
            "SELECT jsonb_build_object('last_value', s.last_value, 'is_called', s.is_called) FROM {} s"
        ).format(_sequence_name(connection, sequence)))
        positions[column] = state[0]
    _raw(connection, sql.SQL(
        "INSERT INTO {} (table_schema, table_name, archive_table, revision, run_id, row_count, sequences) "
        "VALUES (%(schema)s, %(table)s, %(archive)s, %(revision)s, %(run)s, %(rows)s, %(sequences)s)"
    ).format(_REGISTRY), {
        "schema": schema, "table": table, "archive": archive, "revision": current.revision,
        "run": current.run_id, "rows": count, "sequences": Jsonb(positions) if positions else None,
    })
    current.events.append({"archived": f"{schema}.{table}", "rows": count, "archive": f"{ARCHIVE_SCHEMA}.{archive}"})


def _sequence_name(connection: sa.Connection, sequence: int) -> sql.Identifier:
    ((schema, name),) = _raw(connection, sql.SQL(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = %(oid)s::oid"
    ), {"oid": sequence})
    return sql.Identifier(schema, name)


@Operations.implementation_for(ops.CreateTableOp, replace=True)
def _create_table(operations: Operations, operation: ops.CreateTableOp) -> sa.Table:
    context = operations.migration_context
    current = _SCOPE.get()
    schema = operation.schema or "public"
    kw: dict[str, Any] = {}
    existed = False
    if operation.if_not_exists is not None:
        kw["if_not_exists"] = operation.if_not_exists
        if operation.if_not_exists and not context.as_sql and current is not None:
            # A table that was already there is not the migration's to replace: its rows are not touched.
            assert context.connection is not None
            existed = _oid(context.connection, schema, operation.table_name) is not None
    table = operation.to_table(context)
    operations.impl.create_table(table, **kw)
    if not context.as_sql and current is not None and not existed:
        current.pending_restores.append((schema, operation.table_name))
    return table


@dataclass
class _Restore:
    """One table of the step to put back from its newest unrestored archive."""

    schema: str
    table: str
    oid: int
    entry_id: int
    archive: str
    sequences: dict[str, Any]
    written: int = 0
    restored: int = 0

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def archive_name(self) -> str:
        return f"{ARCHIVE_SCHEMA}.{self.archive}"


def _restore(connection: sa.Connection, current: ArchiveScope) -> None:
    """Put the archived rows of the tables this step created back, replacing what the migration wrote.

    Runs in the step's transaction, on tables the step created (their
    ``ACCESS EXCLUSIVE`` lock is already ours).  Foreign-key checks read the
    referenced rows of existing tables (``FOR KEY SHARE``), which can wait on a
    writer holding ``FOR UPDATE``: that lock timeout is left to the runner's retry.
    """
    if _oid(connection, INTERNAL_SCHEMA, REGISTRY_TABLE) is None:
        return
    restores: list[_Restore] = []
    for schema, table in dict.fromkeys(current.pending_restores):
        oid = _oid(connection, schema, table)
        if oid is None:  # created and dropped again by the same step
            continue
        found = _raw(connection, sql.SQL(
            "SELECT id, archive_table, coalesce(to_jsonb(r) -> 'sequences', '{{}}'::jsonb) FROM {} r "
            "WHERE table_schema = %(schema)s AND table_name = %(table)s AND restored_at IS NULL "
            "ORDER BY id DESC LIMIT 1 FOR UPDATE"
        ).format(_REGISTRY), {"schema": schema, "table": table})
        if found:
            entry_id, archive, sequences = found[0]
            restores.append(_Restore(schema, table, oid, int(entry_id), str(archive), dict(sequences or {})))
    if not restores:
        return
    working = restores[0]
    try:
        ordered = _parents_first(connection, restores)
        for working in ordered:
            if _oid(connection, ARCHIVE_SCHEMA, working.archive) is None:
                raise RestoreFailed(working.name, working.archive_name, None, "the archive table does not exist",
                                    revision=current.revision)
            # The restored rows are old rows, not new writes: no audit row, no timestamp trigger, no guard.
            # DISABLE TRIGGER USER is owner-only and keeps the foreign-key triggers.
            _raw(connection, sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(_ident(working)))
        oids = [r.oid for r in ordered]
        for working in reversed(ordered):  # children first: their rows may reference the parents' seeded rows
            working.written = _raw(connection, sql.SQL("SELECT count(*) FROM {}").format(_ident(working)))[0][0]
            if working.written:
                _refuse_outside_references(connection, current, working, oids)
                _raw(connection, sql.SQL("DELETE FROM {}").format(_ident(working)))
        for working in ordered:
            working.restored = _insert(connection, working)
            _set_sequences(connection, working)
        for working in ordered:
            _raw(connection, sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(_ident(working)))
            _raw(connection, sql.SQL("DROP TABLE {}").format(sql.Identifier(ARCHIVE_SCHEMA, working.archive)))
            _raw(connection, sql.SQL(
                "UPDATE {} SET restored_at = now(), restored_rows = %(rows)s WHERE id = %(id)s"
            ).format(_REGISTRY), {"rows": working.restored, "id": working.entry_id})
    except sa.exc.DBAPIError as exc:
        state = sqlstate_of(exc)
        if state == LOCK_NOT_AVAILABLE:
            raise
        diag = getattr(exc.orig, "diag", None)
        reason = getattr(diag, "message_primary", None) or str(exc.orig).strip().splitlines()[0]
        raise RestoreFailed(working.name, working.archive_name, state, reason, revision=current.revision) from exc
    for done in ordered:
        current.events.append({"restored": done.name, "rows": done.restored, "skipped": 0,
                               "replaced": done.written, "archive": done.archive_name})


def _ident(restore: _Restore) -> sql.Identifier:
    return sql.Identifier(restore.schema, restore.table)


def _parents_first(connection: sa.Connection, restores: Sequence[_Restore]) -> list[_Restore]:
    """The tables in an order where every table comes after those it references (creation order otherwise)."""
    edges = _raw(connection, sql.SQL(
        "SELECT DISTINCT conrelid::int8, confrelid::int8 FROM pg_constraint WHERE contype = 'f' "
        "AND conrelid::int8 = ANY(%(oids)s) AND confrelid::int8 = ANY(%(oids)s) AND conrelid <> confrelid"
    ), {"oids": [r.oid for r in restores]})
    parents: dict[int, set[int]] = {r.oid: set() for r in restores}
    for child, parent in edges:
        parents[int(child)].add(int(parent))
    ordered: list[_Restore] = []
    placed: set[int] = set()
    remaining = list(restores)
    while remaining:
        ready = [r for r in remaining if parents[r.oid] <= placed] or remaining[:1]  # a cycle: creation order
        ordered.append(ready[0])
        placed.add(ready[0].oid)
        remaining.remove(ready[0])
    return ordered


def _refuse_outside_references(
    connection: sa.Connection, current: ArchiveScope, restore: _Restore, restoring: list[int]
) -> None:
    """Refuse to delete the rows the migration wrote when rows of another table point at them.

    Deleting them would fail, or silently cascade to (or null) rows outside the
    restore; the migration that made those references needs a human.
    """
    keys = _raw(connection, sql.SQL(
        "SELECT n.nspname, c.relname, "
        "ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i) "
        "      JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i), "
        "ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i) "
        "      JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i) "
        "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE k.contype = 'f' AND k.confrelid = %(oid)s::oid AND NOT k.conrelid::int8 = ANY(%(restoring)s)"
    ), {"oid": restore.oid, "restoring": restoring})
    for schema, table, columns, referenced in keys:
        match = sql.SQL(" AND ").join(
            sql.SQL("p.{} = c.{}").format(sql.Identifier(parent), sql.Identifier(child))
            for child, parent in zip(columns, referenced, strict=True)
        )
        if _raw(connection, sql.SQL("SELECT EXISTS (SELECT FROM {} c WHERE EXISTS (SELECT FROM {} p WHERE {}))").format(
            sql.Identifier(schema, table), _ident(restore), match,
        ))[0][0]:
            raise RestoreFailed(
                restore.name, restore.archive_name, None,
                f"rows of {schema}.{table} reference rows the migration wrote into {restore.name}, which the "
                "archived rows replace", revision=current.revision,
            )


def _insert(connection: sa.Connection, restore: _Restore) -> int:
    """Insert the archived rows as they were; returns how many."""
    target = _raw(connection, sql.SQL(
        "SELECT attname, atttypid::int8, format_type(atttypid, atttypmod), attgenerated <> '' FROM pg_attribute "
        "WHERE attrelid = %(oid)s::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    ), {"oid": restore.oid})
    kept = dict(_raw(connection, sql.SQL(
        "SELECT attname, atttypid::int8 FROM pg_attribute "
        "WHERE attrelid = %(oid)s::oid AND attnum > 0 AND NOT attisdropped"
    ), {"oid": _oid(connection, ARCHIVE_SCHEMA, restore.archive)}))
    names: list[sql.Composable] = []
    values: list[sql.Composable] = []
    for name, type_oid, type_sql, generated in target:
        if generated or name not in kept:
            continue  # computed again, or a column the archived table did not have: its default
        names.append(sql.Identifier(name))
        # A column archived as text (enum, domain, extension type) is cast back to the column's type;
        # format_type() is the catalogue's own spelling of it, quoted where needed.
        values.append(sql.Identifier(name) if kept[name] == type_oid else
                      sql.SQL("CAST({} AS {})").format(sql.Identifier(name), sql.SQL(type_sql)))
    return int(_raw(connection, sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}").format(
        _ident(restore), sql.SQL(", ").join(names), sql.SQL(", ").join(values),
        sql.Identifier(ARCHIVE_SCHEMA, restore.archive),
    )))


def _set_sequences(connection: sa.Connection, restore: _Restore) -> None:
    """Put each owned sequence back where it was when archived, and never behind a restored key."""
    for column, sequence, increment in _sequences(connection, restore.oid):
        extreme = _raw(connection, sql.SQL("SELECT {}({}) FROM {}").format(
            sql.SQL("max" if increment > 0 else "min"), sql.Identifier(column), _ident(restore)))[0][0]
        saved = restore.sequences.get(column)
        value, called = (int(saved["last_value"]), bool(saved["is_called"])) if saved else (None, True)
        if extreme is not None:
            following = value if value is not None and not called else (
                value + increment if value is not None else None)
            if following is None or (following <= extreme if increment > 0 else following >= extreme):
                value, called = int(extreme), True
        if value is not None:
            _raw(connection, sql.SQL("SELECT setval(%(seq)s::oid::regclass, %(value)s, %(called)s)"),
                 {"seq": sequence, "value": value, "called": called})


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
