"""Shared by the kinds that change a live table in place (indexes, constraints, columns).

Every name a user gives is looked up in the catalogue (tables, columns, types)
or checked to be free (new indexes, constraints, columns); every SQL
expression a migration author gives (a default, a backfill, a CHECK, a
``USING``) is tried once at design time (``SELECT (expr) FROM table WHERE
false``, read-only, in the planning transaction) so that a typo is refused when
the change is planned, not half-way through it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from agentdb.errors import OnlineChangeRefused
from agentdb.online._sql import execute
from agentdb.online.catalog import TableInfo, relation_exists

__all__ = [
    "check_expression",
    "check_new_name",
    "check_options",
    "constraint_exists",
    "leaves",
    "sql_type",
]

_TYPMOD = re.compile(r"^\s*(\(\s*\d+\s*(,\s*\d+\s*)?\))?\s*((\[\])*)\s*$")


def check_options(table: str, kind: str, given: Mapping[str, Any], known: Mapping[str, Any],
                  required: Sequence[str]) -> None:
    unknown = set(given) - set(known)
    if unknown:
        raise OnlineChangeRefused(table, f"unknown option(s) {', '.join(sorted(unknown))}",
                                  hint=f"{kind} takes " + ", ".join(known))
    missing = [name for name in required if given.get(name) in (None, "", [], ())]
    if missing:
        raise OnlineChangeRefused(table, f"{kind} needs " + ", ".join(missing))


def check_new_name(info: TableInfo, name: Any, what: str) -> str:
    """A name for a new object: a non-empty string of at most 63 bytes (PostgreSQL would cut it silently)."""
    if not isinstance(name, str) or not name or len(name.encode()) > 63 or "\x00" in name:
        raise OnlineChangeRefused(info.qualified, f"{what} name {name!r} is not a name PostgreSQL keeps as given "
                                  "(1 to 63 bytes)")
    return name


def constraint_exists(connection: sa.Connection, info: TableInfo, name: str) -> bool:
    return bool(connection.execute(sa.text(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = :oid AND conname = :name)"
    ), {"oid": info.oid, "name": name}).scalar())


def free_relation_name(connection: sa.Connection, info: TableInfo, name: Any, what: str) -> str:
    checked = check_new_name(info, name, what)
    if relation_exists(connection, info.schema, checked):
        raise OnlineChangeRefused(info.qualified, f"a relation named {info.schema}.{checked} exists already")
    return checked


def sql_type(connection: sa.Connection, table: str, type_: Any) -> str:
    """A column type as PostgreSQL spells it: a SQLAlchemy type, or a type name PostgreSQL knows
    (``bigint``, ``numeric(12,2)``, ``text[]``); the name is resolved with ``to_regtype``, never pasted."""
    if isinstance(type_, type) and issubclass(type_, sa.types.TypeEngine):
        type_ = type_()
    if isinstance(type_, sa.types.TypeEngine):
        text = type_.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    elif isinstance(type_, str):
        text = type_
    else:
        raise OnlineChangeRefused(table, f"type {type_!r} is neither a SQLAlchemy type nor a type name")
    base, _, rest = text.partition("(")
    rest = "(" + rest if rest else ""
    base, bracket, tail = base.partition("[")
    rest = rest + ("[" + tail if bracket else "")
    found = connection.execute(sa.text(
        "SELECT pg_catalog.format_type(to_regtype(:name), NULL)"), {"name": base.strip()}).scalar()
    if found is None or not _TYPMOD.match(rest):
        raise OnlineChangeRefused(table, f"type {text!r} is not a type this database knows")
    return str(found) + rest.strip()


def check_expression(connection: sa.Connection, info: TableInfo, expression: Any, what: str,
                     *, cast: str | None = None) -> str:
    """Try a SQL expression over the table's columns once, reading nothing (``WHERE false``)."""
    if not isinstance(expression, str) or not expression.strip():
        raise OnlineChangeRefused(info.qualified, f"{what} must be a SQL expression (a string)")
    probe = sql.SQL("SELECT ({}){} FROM {} WHERE false").format(
        sql.SQL(expression), sql.SQL("::" + cast) if cast else sql.SQL(""),
        sql.Identifier(info.schema, info.name))
    savepoint = connection.begin_nested()
    try:
        execute(connection, probe)
    except DBAPIError as exc:
        savepoint.rollback()
        primary = getattr(getattr(exc.orig, "diag", None), "message_primary", None) or str(exc.orig)
        raise OnlineChangeRefused(info.qualified, f"{what} {expression!r} does not work here: {primary}") from None
    savepoint.rollback()
    return expression


def leaves(connection: sa.Connection, info: TableInfo) -> list[str]:
    """The leaf partitions of a partitioned table (names in its schema), in name order."""
    return [str(r[0]) for r in connection.execute(sa.text(
        "SELECT c.relname FROM pg_catalog.pg_partition_tree(CAST(:oid AS oid)) t "
        "JOIN pg_catalog.pg_class c ON c.oid = t.relid WHERE t.isleaf AND t.level = 1 ORDER BY 1"
    ), {"oid": info.oid})]
