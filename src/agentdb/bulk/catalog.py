"""What the import and export need to know about a table, read from the catalogue.

A table name from a user is looked up in ``pg_class`` as a *value* (``schema.table``
or ``table`` in ``public``); what comes back -- the exact names, the column
types as ``format_type`` prints them, constraint expressions as
``pg_get_expr`` prints them -- is catalogue text, and only that is ever put
into SQL (as ``sql.Identifier`` for names).  ``analytics; drop table users``
is simply a table that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from psycopg import sql

from agentdb.bulk._sql import execute, one
from agentdb.errors import BulkTableInvalid

__all__ = [
    "INTERNAL_SCHEMAS",
    "Check",
    "Column",
    "ForeignKey",
    "TableInfo",
    "UniqueKey",
    "find_table",
    "personal_columns",
]

#: Schemas whose tables are agentdb's or PostgreSQL's own: never imported into or exported from.
INTERNAL_SCHEMAS = frozenset({"agentdb", "agentdb_archive", "pg_catalog", "information_schema", "pg_toast"})
_TIME_TYPES = frozenset({"timestamp with time zone", "timestamp without time zone", "date"})


@dataclass(frozen=True)
class Column:
    name: str
    attnum: int
    #: ``format_type(atttypid, atttypmod)``: ``bigint``, ``character varying(20)``, ``jsonb``, ``text[]``.
    type: str
    notnull: bool
    has_default: bool
    #: ``a`` (GENERATED ALWAYS AS IDENTITY), ``d`` (BY DEFAULT) or empty.
    identity: str
    generated: bool
    #: ``typcategory``: ``S`` string, ``A`` array, ``U`` user (json, jsonb), ``N`` numeric, ``D`` date/time...
    category: str
    #: ``json`` or ``jsonb`` (element type of nothing else).
    json: bool
    #: The default expression as the catalogue prints it (``now()``, ``'{}'::jsonb``), if any.
    default: str | None = None

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.name)

    @property
    def plain_text(self) -> bool:
        """``text``: every input is valid, nothing to check."""
        return self.type == "text"


@dataclass(frozen=True)
class Check:
    name: str
    expression: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class UniqueKey:
    name: str
    columns: tuple[str, ...]
    primary: bool
    nulls_not_distinct: bool


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    ref_oid: int
    ref_schema: str
    ref_table: str
    ref_columns: tuple[str, ...]
    match_full: bool

    @property
    def ref_ident(self) -> sql.Identifier:
        return sql.Identifier(self.ref_schema, self.ref_table)


@dataclass
class TableInfo:
    oid: int
    schema: str
    name: str
    #: ``r`` a plain table, ``p`` a partitioned one.
    relkind: str
    columns: dict[str, Column]
    checks: list[Check] = field(default_factory=list)
    uniques: list[UniqueKey] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    #: The RANGE partition key column of a partitioned table (a single timestamp column), else None.
    partition_key: str | None = None
    #: The partitioned table's DEFAULT partition (oid, name), if it has one.
    default_partition: tuple[int, str] | None = None

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def partitioned(self) -> bool:
        return self.relkind == "p"

    def names(self) -> set[str]:
        """Every name the table's messages may quote: table, columns, constraints (not values)."""
        found = {self.name, self.qualified, *self.columns}
        found |= {c.name for c in self.checks} | {u.name for u in self.uniques} | {f.name for f in self.foreign_keys}
        found |= {f.ref_table for f in self.foreign_keys}
        if self.default_partition:
            found.add(self.default_partition[1])
        return found

    def time_columns(self) -> list[str]:
        return [c.name for c in self.columns.values() if c.type in _TIME_TYPES]


def _split(table: str) -> tuple[str, str]:
    schema, dot, name = table.partition(".")
    if not dot:
        schema, name = "public", table
    return schema, name


def find_table(connection: sa.Connection, table: str) -> TableInfo:
    """The table a user named (``table`` or ``schema.table``), with its columns and constraints.

    Raises :class:`~agentdb.errors.BulkTableInvalid` when there is no such
    table (a view, a sequence, an agentdb or system table included).
    """
    schema, name = _split(table.strip())
    if not name or not schema:
        raise BulkTableInvalid(table, "an empty name is no table")
    if schema in INTERNAL_SCHEMAS or schema.startswith("pg_"):
        raise BulkTableInvalid(table, f"tables of schema {schema} are not imported or exported",
                               hint="name an application table, e.g. analytics or public.users")
    rows = execute(connection, sql.SQL(
        "SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = {} AND c.relname = {}"
    ).format(sql.Literal(schema), sql.Literal(name)))
    if not rows:
        raise BulkTableInvalid(table, "there is no such table", hint="names are exact: schema.table or table")
    oid, found_schema, found_name, relkind = rows[0]
    if relkind not in ("r", "p"):
        kinds = {"v": "a view", "m": "a materialized view", "S": "a sequence", "f": "a foreign table",
                 "i": "an index", "I": "an index", "c": "a composite type"}
        raise BulkTableInvalid(table, f"it is {kinds.get(str(relkind), 'not a table')}")
    info = TableInfo(int(oid), str(found_schema), str(found_name), str(relkind), _columns(connection, int(oid)))
    _constraints(connection, info)
    if info.partitioned:
        _partitioning(connection, info)
    return info


def _columns(connection: sa.Connection, oid: int) -> dict[str, Column]:
    rows = execute(connection, sql.SQL(
        "SELECT a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef, "
        "a.attidentity::text, a.attgenerated <> '', t.typcategory::text, "
        "a.atttypid IN ('json'::regtype, 'jsonb'::regtype), pg_get_expr(d.adbin, d.adrelid) "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = {} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    ).format(sql.Literal(oid)))
    return {str(r[0]): Column(str(r[0]), int(r[1]), str(r[2]), bool(r[3]), bool(r[4]), str(r[5] or ""),
                              bool(r[6]), str(r[7]), bool(r[8]), None if r[9] is None else str(r[9])) for r in rows}


def _names_of(columns: dict[str, Column], attnums: list[int] | None) -> tuple[str, ...] | None:
    by_num = {c.attnum: c.name for c in columns.values()}
    if attnums is None or any(n not in by_num for n in attnums):
        return None  # an expression (attnum 0) or a system column: not something a file can carry
    return tuple(by_num[n] for n in attnums)


def _constraints(connection: sa.Connection, info: TableInfo) -> None:
    for name, expression, keys in execute(connection, sql.SQL(
        "SELECT conname, pg_get_expr(conbin, conrelid), conkey::int[] FROM pg_constraint "
        "WHERE conrelid = {} AND contype = 'c' ORDER BY conname"
    ).format(sql.Literal(info.oid))):
        columns = _names_of(info.columns, list(keys or []))
        if columns is not None and expression:
            info.checks.append(Check(str(name), str(expression), columns))
    for name, keys, primary, nnd in execute(connection, sql.SQL(
        "SELECT ic.relname, i.indkey::int[], i.indisprimary, i.indnullsnotdistinct FROM pg_index i "
        "JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = {} AND i.indisunique "
        "AND i.indpred IS NULL AND i.indexprs IS NULL ORDER BY NOT i.indisprimary, ic.relname"
    ).format(sql.Literal(info.oid))):
        columns = _names_of(info.columns, [int(k) for k in keys or []])
        if columns:
            constraint = one(connection, sql.SQL(
                "SELECT conname FROM pg_constraint WHERE conindid = (SELECT oid FROM pg_class WHERE relname = {} "
                "AND relnamespace = {}::regnamespace) AND conrelid = {}"
            ).format(sql.Literal(name), sql.Literal(info.schema), sql.Literal(info.oid)))
            info.uniques.append(UniqueKey(str(constraint or name), columns, bool(primary), bool(nnd)))
    for name, keys, ref_oid, ref_schema, ref_table, ref_keys, match in execute(connection, sql.SQL(
        "SELECT k.conname, k.conkey::int[], k.confrelid::int8, n.nspname, c.relname, k.confkey::int[], "
        "k.confmatchtype::text FROM pg_constraint k JOIN pg_class c ON c.oid = k.confrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE k.conrelid = {} AND k.contype = 'f' AND k.conparentid = 0 ORDER BY k.conname"
    ).format(sql.Literal(info.oid))):
        columns = _names_of(info.columns, list(keys or []))
        ref_columns = _names_of(_columns(connection, int(ref_oid)), list(ref_keys or []))
        if columns and ref_columns:
            info.foreign_keys.append(ForeignKey(str(name), columns, int(ref_oid), str(ref_schema), str(ref_table),
                                                ref_columns, match == "f"))


def _partitioning(connection: sa.Connection, info: TableInfo) -> None:
    """The partition key (RANGE on one timestamp column: the contract's monthly scheme) and DEFAULT partition."""
    row = execute(connection, sql.SQL(
        "SELECT p.partstrat::text, p.partnatts, a.attname, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_partitioned_table p LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid "
        "AND a.attnum = p.partattrs[0] WHERE p.partrelid = {}"
    ).format(sql.Literal(info.oid)))
    if row:
        strategy, natts, column, type_ = row[0]
        if strategy == "r" and int(natts) == 1 and column and type_ in _TIME_TYPES:
            info.partition_key = str(column)
    default = execute(connection, sql.SQL(
        "SELECT c.oid::int8, c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partdefid "
        "WHERE p.partrelid = {}"
    ).format(sql.Literal(info.oid)))
    if default:
        info.default_partition = (int(default[0][0]), str(default[0][1]))


def personal_columns(info: TableInfo) -> dict[str, Any]:
    """The columns of ``info`` the personal-data registry declares personal: name -> its declaration.

    Tables outside ``public`` or unknown to the schema declaration have none
    the registry knows of.
    """
    if info.schema != "public":
        return {}
    from agentdb.schema.personal_data import registry

    return {d.column: d for d in registry() if d.table == info.name and d.pii.personal}
