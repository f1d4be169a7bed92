"""Split a column into several, expand/contract: both application versions read and write meanwhile.

``into`` gives each new column its type and its expression over the old
column (``{"first_name": ("text", "split_part(display_name, ' ', 1)")}``),
``merge_back`` the expression that gives the old column from the new ones
(``first_name || ' ' || last_name``).  Expand adds the new columns, a trigger
computes the new columns when the old version writes the old one and the old
column when the new version writes the new ones, and a backfill fills the
existing rows; contract (``agentdb online complete``) drops the trigger and
the old column.  See :mod:`agentdb.online.kinds._expand`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa

from agentdb.errors import OnlineChangeRefused
from agentdb.online.catalog import TableInfo, describe
from agentdb.online.kinds import _ddl, _expand

__all__ = ["SplitColumnKind", "new_columns"]


def new_columns(connection: sa.Connection, info: TableInfo, into: Any, what: str
                ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``{name: (type, expression)}`` checked: the columns to add, and name -> expression (cast to its type)."""
    if not isinstance(into, Mapping) or not into:
        raise OnlineChangeRefused(info.qualified, f"{what} must map each new column to (type, expression)")
    add, forward = [], {}
    for name, spec in into.items():
        if not isinstance(spec, tuple | list) or len(spec) != 2:
            raise OnlineChangeRefused(info.qualified, f"{what}[{name!r}] must be (type, expression)")
        column = _ddl.check_new_name(info, name, "column")
        type_ = _ddl.sql_type(connection, info.qualified, spec[0])
        _ddl.check_expression(connection, info, spec[1], f"the expression of {column}", cast=type_)
        add.append({"name": column, "type": type_, "default": None, "comment": None})
        forward[column] = f"({spec[1]})::{type_}"
    return add, forward


class SplitColumnKind(_expand.ExpandKind):
    name: ClassVar[str] = "split_column"
    summary: ClassVar[str] = "split a column into several, expand/contract: both application versions work"
    options: ClassVar[Mapping[str, Any]] = {"column": None, "into": None, "merge_back": None}
    abortable_until_complete: ClassVar[bool] = True

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        qualified = f"{schema}.{table}"
        _ddl.check_options(qualified, cls.name, options, cls.options, ("column", "into", "merge_back"))
        info = describe(connection, schema, table)
        old = info.column(str(options["column"]))
        add, forward = new_columns(connection, info, options["into"], "into")
        merge_back = str(options["merge_back"])
        design = _expand.expand_design(info, token, add=add, forward=forward,
                                       backward={old.name: f"({merge_back})::{old.type}"}, old_columns=[old.name],
                                       not_null=[], contract={"drop": [old.name]})
        _check_over_new(connection, info, add, merge_back, old.type)
        return design

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        columns = _expand.column_state(connection, schema, table)
        into = options.get("into") or {}
        return str(options.get("column")) not in columns and all(name in columns for name in into)


def _check_over_new(connection: sa.Connection, info: TableInfo, add: list[dict[str, Any]], expression: str,
                    type_: str) -> None:
    """Try an expression over columns that do not exist yet: over a row of NULLs of their types."""
    from psycopg import sql
    from sqlalchemy.exc import DBAPIError

    from agentdb.online._sql import execute

    probe = sql.SQL("SELECT ({})::{} FROM (SELECT {}) AS s").format(
        sql.SQL(expression), sql.SQL(type_), sql.SQL(", ").join(
            sql.SQL("NULL::{} AS {}").format(sql.SQL(c["type"]), sql.Identifier(c["name"])) for c in add))
    savepoint = connection.begin_nested()
    try:
        execute(connection, probe)
    except DBAPIError as exc:
        savepoint.rollback()
        primary = getattr(getattr(exc.orig, "diag", None), "message_primary", None) or str(exc.orig)
        raise OnlineChangeRefused(info.qualified, f"the expression {expression!r} does not work over the new "
                                  f"columns: {primary}") from None
    savepoint.rollback()
