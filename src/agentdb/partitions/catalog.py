"""Which tables agentdb keeps partitioned, and what their partitions are.

``agentdb.partitioned_tables`` holds one row per managed parent: the partition
key column, the interval (one month, the only one supported), how many future
months to keep ready (``premake``), and the retention (``NULL``: keep forever)
with what to do with partitions past it (``archive`` into ``agentdb_archive``,
``drop``, or only ``detach``).  :func:`register` writes it; the online
conversion calls it when a table becomes partitioned.

Every name a user gives is looked up in the catalogue (:func:`find_table`)
and then used by oid or as ``sql.Identifier`` of the names the catalogue
returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from agentdb.errors import PartitionTableInvalid
from agentdb.partitions import naming
from agentdb.partitions._sql import Conn, Table, execute, find_table, one, split_name
from agentdb.runtime.history import INTERNAL_SCHEMA

__all__ = [
    "BOUNDS_CONSTRAINT",
    "CATALOG_DDL",
    "CATALOG_TABLE",
    "RETENTION_ACTIONS",
    "ManagedTable",
    "Partition",
    "ensure_catalog",
    "managed_tables",
    "partitions_of",
    "register",
    "unregister",
]

CATALOG_TABLE = "partitioned_tables"
RETENTION_ACTIONS = ("archive", "drop", "detach")
#: The CHECK constraint that marks a standalone table as a month partition being filled by maintenance
#: (a drain of the DEFAULT partition); it proves the bounds, so ATTACH does not scan the table.
BOUNDS_CONSTRAINT = "agentdb_partition_bounds"
#: Serialises the creation of the catalogue by concurrent first callers: the first 8 bytes of
#: sha256("agentdb.partitions.catalog"), top bit cleared.
_CATALOG_LOCK_KEY = 0x2D89FECF017CCCD5

_CATALOG = sql.Identifier(INTERNAL_SCHEMA, CATALOG_TABLE)

#: The catalogue's definition; ``IF NOT EXISTS`` throughout, run by :func:`ensure_catalog`.
CATALOG_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA}",
    f"""
    CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.{CATALOG_TABLE} (
        table_schema       text NOT NULL,
        table_name         text NOT NULL,
        column_name        text NOT NULL,
        partition_interval interval NOT NULL DEFAULT '1 month' CHECK (partition_interval = interval '1 month'),
        premake            integer NOT NULL DEFAULT 4 CHECK (premake BETWEEN 0 AND 120),
        retention          interval CHECK (retention > interval '0'),
        retention_action   text NOT NULL DEFAULT 'archive' CHECK (retention_action IN ('archive', 'drop', 'detach')),
        created_at         timestamptz NOT NULL DEFAULT now(),
        updated_at         timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (table_schema, table_name)
    )
    """,
    f"COMMENT ON TABLE {INTERNAL_SCHEMA}.{CATALOG_TABLE} IS "
    "'Partitioned tables whose monthly partitions agentdb keeps ahead and retires (agentdb partitions maintain)'",
    f"COMMENT ON COLUMN {INTERNAL_SCHEMA}.{CATALOG_TABLE}.premake IS "
    "'How many months after the current one must have a partition, so no write lands in the DEFAULT partition'",
    f"COMMENT ON COLUMN {INTERNAL_SCHEMA}.{CATALOG_TABLE}.retention IS "
    "'Partitions whose upper bound is older than now() - retention are retired; NULL keeps them forever'",
]


def ensure_catalog(connection: Conn) -> None:
    """Create ``agentdb.partitioned_tables`` if missing, in the caller's transaction (the caller commits).

    A transaction-level advisory lock makes concurrent first calls wait for each
    other instead of failing on the catalogue's unique indexes.
    """
    if one(connection, sql.SQL("SELECT to_regclass({})").format(sql.Literal(f"{INTERNAL_SCHEMA}.{CATALOG_TABLE}"))):
        return
    execute(connection, sql.SQL("SELECT pg_advisory_xact_lock({})").format(sql.Literal(_CATALOG_LOCK_KEY)))
    for statement in CATALOG_DDL:
        execute(connection, sql.SQL(statement))  # constant text


@dataclass(frozen=True)
class ManagedTable:
    """One row of ``agentdb.partitioned_tables``, with the parent's oid when it still exists."""

    schema: str
    table: str
    column: str
    premake: int
    retention: str | None
    retention_action: str
    oid: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)

    @property
    def default_name(self) -> str:
        return naming.default_partition_name(self.table)

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.qualified, "column": self.column, "interval": "1 month", "premake": self.premake,
            "retention": self.retention, "retention_action": self.retention_action,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


def _check_parent(connection: Conn, found: Table, column: str) -> None:
    """Refuse, naming the reason, a table that is not RANGE-partitioned on exactly ``column`` (timestamptz)."""
    if found.relkind != "p":
        raise PartitionTableInvalid(
            found.qualified, "it is a plain table, not a partitioned one",
            hint="convert it first (migration 007, agentdb.online)",
        )
    attribute = execute(connection, sql.SQL(
        "SELECT a.attnum, format_type(a.atttypid, a.atttypmod), a.atttypid = 'timestamptz'::regtype "
        "FROM pg_attribute a WHERE a.attrelid = {} AND a.attname = {} AND a.attnum > 0 AND NOT a.attisdropped"
    ).format(sql.Literal(found.oid), sql.Literal(column)))
    if not attribute:
        raise PartitionTableInvalid(found.qualified, f"it has no column {column!r}")
    attnum, type_name, is_timestamptz = attribute[0]
    key = execute(connection, sql.SQL(
        "SELECT p.partstrat::text, p.partnatts, p.partattrs[0] FROM pg_partitioned_table p WHERE p.partrelid = {}"
    ).format(sql.Literal(found.oid)))
    strategy, natts, first = key[0]
    if strategy != "r":
        kind = {"l": "LIST", "h": "HASH"}.get(strategy, strategy)
        raise PartitionTableInvalid(found.qualified, f"it is partitioned by {kind}, monthly partitions need RANGE")
    if natts != 1 or first != attnum:
        raise PartitionTableInvalid(found.qualified, f"its partition key is not the single column {column!r}")
    if not is_timestamptz:
        raise PartitionTableInvalid(
            found.qualified, f"column {column!r} is {type_name}; monthly partitions in UTC need timestamptz"
        )


_UNIT = r"(?:years?|mons?|months?|weeks?|days?|hours?|mins?|minutes?|secs?|seconds?)"
#: A positive interval in PostgreSQL's words: whole amounts of units, at least one of them not zero.
_INTERVAL = re.compile(rf"^\s*(?=.*[1-9])\d{{1,9}}\s*{_UNIT}(?:\s+\d{{1,9}}\s*{_UNIT})*\s*$", re.IGNORECASE)


def _interval_text(value: str | timedelta) -> str:
    if isinstance(value, timedelta):
        parts = [f"{value.days} days"] if value.days else []
        return " ".join([*parts, f"{value.seconds} seconds"] if value.seconds or not parts else parts)
    return value


def register(
    connection: Conn,
    table: str,
    column: str = "created_at",
    premake: int = 4,
    *,
    retention: str | timedelta | None = None,
    retention_action: str = "archive",
    schema: str | None = None,
) -> ManagedTable:
    """Manage ``table``'s monthly partitions from now on (insert or update its catalogue row).

    ``table`` may be ``"schema.table"``; it must exist and be partitioned by
    RANGE on ``column`` alone, a ``timestamptz``.  ``retention`` is a PostgreSQL
    interval (``'12 months'``) or a timedelta; ``None`` keeps partitions
    forever.  Runs in the caller's transaction; the caller commits.
    """
    found = find_table(connection, table, schema)
    _check_parent(connection, found, column)
    if not 0 <= premake <= 120:
        raise PartitionTableInvalid(found.qualified, f"premake {premake} is out of range", hint="0 to 120 months")
    if retention_action not in RETENTION_ACTIONS:
        raise PartitionTableInvalid(
            found.qualified, f"unknown retention action {retention_action!r}", hint=", ".join(RETENTION_ACTIONS)
        )
    retention_text = _interval_text(retention) if retention is not None else None
    if retention_text is not None and not _INTERVAL.match(retention_text):
        raise PartitionTableInvalid(
            found.qualified, f"invalid retention {retention_text!r}",
            hint="a positive interval of whole units, e.g. '12 months', '1 year 6 months' or '90 days'",
        )
    ensure_catalog(connection)
    execute(connection, sql.SQL(
        "INSERT INTO {} (table_schema, table_name, column_name, premake, retention, retention_action) "
        "VALUES ({}, {}, {}, {}, CAST({} AS interval), {}) "
        "ON CONFLICT (table_schema, table_name) DO UPDATE SET column_name = EXCLUDED.column_name, "
        "premake = EXCLUDED.premake, retention = EXCLUDED.retention, "
        "retention_action = EXCLUDED.retention_action, updated_at = now()"
    ).format(
        _CATALOG, sql.Literal(found.schema), sql.Literal(found.name), sql.Literal(column), sql.Literal(premake),
        sql.Literal(retention_text), sql.Literal(retention_action),
    ))
    return managed_tables(connection, found.name, schema=found.schema)[0]


def unregister(connection: Conn, table: str, schema: str | None = None) -> bool:
    """Stop managing ``table`` (its partitions stay as they are); whether it was managed.  The caller commits."""
    schema_name, table_name = split_name(table, schema)
    if not _catalog_exists(connection):
        return False
    rows = execute(connection, sql.SQL(
        "DELETE FROM {} WHERE table_schema = {} AND table_name = {} RETURNING 1"
    ).format(_CATALOG, sql.Literal(schema_name), sql.Literal(table_name)))
    return bool(rows)


def _catalog_exists(connection: Conn) -> bool:
    return bool(one(connection, sql.SQL("SELECT to_regclass({}) IS NOT NULL").format(
        sql.Literal(f"{INTERNAL_SCHEMA}.{CATALOG_TABLE}"))))


def managed_tables(connection: Conn, table: str | None = None, *, schema: str | None = None) -> list[ManagedTable]:
    """The catalogue's rows (all, or the one for ``table``), oldest first; empty when there is no catalogue.

    :attr:`ManagedTable.oid` is None for a registered table that no longer exists.
    """
    if not _catalog_exists(connection):
        return []
    where: sql.Composable = sql.SQL("")
    if table is not None:
        schema_name, table_name = split_name(table, schema)
        where = sql.SQL("WHERE m.table_schema = {} AND m.table_name = {} ").format(
            sql.Literal(schema_name), sql.Literal(table_name))
    rows = execute(connection, sql.SQL(
        "SELECT m.table_schema, m.table_name, m.column_name, m.premake, m.retention::text, m.retention_action, "
        "(SELECT c.oid::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        " WHERE n.nspname = m.table_schema AND c.relname = m.table_name AND c.relkind = 'p'), "
        "m.created_at, m.updated_at FROM {} m {}ORDER BY m.created_at, m.table_schema, m.table_name"
    ).format(_CATALOG, where))
    return [
        ManagedTable(schema=r[0], table=r[1], column=r[2], premake=int(r[3]), retention=r[4], retention_action=r[5],
                     oid=int(r[6]) if r[6] is not None else None, created_at=r[7], updated_at=r[8])
        for r in rows
    ]


@dataclass(frozen=True)
class Partition:
    """A partition of a parent as the catalogue describes it (bounds in UTC when the key is timestamptz).

    ``lower``/``upper`` are None for MINVALUE/MAXVALUE and for the DEFAULT
    partition.  ``state`` is ``attached``, ``detach pending`` (a ``DETACH ...
    CONCURRENTLY`` that was interrupted) or ``draining`` (a standalone table that
    maintenance is filling from the DEFAULT partition and will attach).
    """

    schema: str
    name: str
    oid: int
    is_default: bool
    bounds: str
    lower: datetime | None
    upper: datetime | None
    state: str
    rows_estimate: int | None
    size_bytes: int

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def _is_timestamptz_key(connection: Conn, parent_oid: int) -> bool:
    return bool(one(connection, sql.SQL(
        "SELECT a.atttypid = 'timestamptz'::regtype FROM pg_partitioned_table p "
        "JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
        "WHERE p.partrelid = {} AND p.partnatts = 1"
    ).format(sql.Literal(parent_oid))))


def partitions_of(connection: Conn, parent_oid: int, *, include_draining: bool = True) -> list[Partition]:
    """The partitions of a parent, in bound order with the DEFAULT partition last.

    With ``include_draining``, also the standalone tables that maintenance is
    filling to attach as month partitions (named for the parent's months and
    marked by :data:`BOUNDS_CONSTRAINT`).
    """
    # The bound text is rendered in the session's time zone with its offset, so the cast back is exact.
    cast = _is_timestamptz_key(connection, parent_oid)
    lower = sql.SQL("(regexp_match(b.bound, $$FROM \\('([^']*)'\\)$$))[1]::timestamptz") if cast else sql.SQL("NULL")
    upper = sql.SQL("(regexp_match(b.bound, $$TO \\('([^']*)'\\)$$))[1]::timestamptz") if cast else sql.SQL("NULL")
    rows = execute(connection, sql.SQL(
        "SELECT b.nspname, b.relname, b.oid::int8, b.bound = 'DEFAULT', b.bound, {lower}, {upper}, "
        "CASE WHEN b.inhdetachpending THEN 'detach pending' ELSE 'attached' END, b.reltuples, b.size "
        "FROM (SELECT n.nspname, c.relname, c.oid, pg_get_expr(c.relpartbound, c.oid) AS bound, "
        "      i.inhdetachpending, CASE WHEN c.reltuples >= 0 THEN c.reltuples::int8 END AS reltuples, "
        "      pg_total_relation_size(c.oid) AS size "
        "      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = {parent}) b"
    ).format(lower=lower, upper=upper, parent=sql.Literal(parent_oid)))
    found = [
        Partition(schema=r[0], name=r[1], oid=int(r[2]), is_default=bool(r[3]), bounds=r[4], lower=r[5], upper=r[6],
                  state=r[7], rows_estimate=None if r[8] is None else int(r[8]), size_bytes=int(r[9]))
        for r in rows
    ]
    if include_draining and cast:
        found.extend(_draining(connection, parent_oid))
    return sorted(found, key=_bound_order)


def _bound_order(partition: Partition) -> tuple[int, datetime, str]:
    """Bound order: MINVALUE first, then by lower bound, the DEFAULT partition last (the fixed lock order)."""
    if partition.is_default:
        return (2, datetime.max.replace(tzinfo=None), partition.name)
    if partition.lower is None:
        return (0, datetime.min, partition.name)
    return (1, partition.lower.replace(tzinfo=None), partition.name)


def _draining(connection: Conn, parent_oid: int) -> list[Partition]:
    """Standalone tables named for one of the parent's months and carrying :data:`BOUNDS_CONSTRAINT`."""
    parent = execute(connection, sql.SQL(
        "SELECT c.relname, c.relnamespace::int8 FROM pg_class c WHERE c.oid = {}").format(sql.Literal(parent_oid)))
    parent_name, namespace = parent[0]
    rows = execute(connection, sql.SQL(
        "SELECT n.nspname, c.relname, c.oid::int8, CASE WHEN c.reltuples >= 0 THEN c.reltuples::int8 END, "
        "pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'c' AND k.conname = {} "
        "WHERE c.relnamespace = {} AND c.relkind = 'r' AND NOT c.relispartition"
    ).format(sql.Literal(BOUNDS_CONSTRAINT), sql.Literal(namespace)))
    result = []
    for schema, name, oid, reltuples, size in rows:
        month = naming.parse_partition_name(parent_name, name)
        if month is None:
            continue
        start, end = naming.month_bounds(month)
        result.append(Partition(
            schema=schema, name=name, oid=int(oid), is_default=False,
            bounds=f"FOR VALUES FROM ('{start:%Y-%m-%d %H:%M:%S}+00') TO ('{end:%Y-%m-%d %H:%M:%S}+00')",
            lower=start, upper=end,
            state="draining", rows_estimate=None if reltuples is None else int(reltuples), size_bytes=int(size),
        ))
    return result
