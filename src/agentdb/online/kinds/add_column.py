"""Add a column to a busy table: a default or a backfill expression, and NOT NULL without a blocking scan.

The column is added as a catalogue change: with a constant ``default`` it
is a "fast default" (existing rows read it without a rewrite); a
``server_default`` SQL expression (``now()``, ``gen_random_uuid()``) is set
for new rows only, and existing rows get it by the batched backfill, never by
a rewrite under ACCESS EXCLUSIVE.  A ``backfill`` expression over the row's
own columns (``(properties->>'ms_played')::int``) fills existing rows in
batches, and a trigger fills the rows the application writes meanwhile
without the column.  ``nullable=False`` then adds ``CHECK (col IS NOT NULL)
NOT VALID``, validates it (SHARE UPDATE EXCLUSIVE), sets NOT NULL (proven by
the check: no scan) and drops the check.  ``complete`` drops the trigger,
once the application writes the column itself.  See
:mod:`agentdb.online.kinds._expand`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import OnlineChangeRefused
from agentdb.online.catalog import describe
from agentdb.online.kinds import _ddl, _expand

__all__ = ["AddColumnKind"]


class AddColumnKind(_expand.ExpandKind):
    name: ClassVar[str] = "add_column"
    summary: ClassVar[str] = "add a column with a default or a batched backfill, NOT NULL via a validated check"
    options: ClassVar[Mapping[str, Any]] = {"column": None, "type": None, "default": None, "server_default": None,
                                            "backfill": None, "nullable": True, "comment": None}
    abortable_until_complete: ClassVar[bool] = True

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        qualified = f"{schema}.{table}"
        _ddl.check_options(qualified, cls.name, options, cls.options, ("column", "type"))
        info = describe(connection, schema, table)
        column = _ddl.check_new_name(info, options["column"], "column")
        type_ = _ddl.sql_type(connection, qualified, options["type"])
        default = options.get("default")
        server_default = options.get("server_default")
        backfill = options.get("backfill")
        if default is not None and server_default is not None:
            raise OnlineChangeRefused(qualified, "give default (a value) or server_default (SQL), not both")
        literal = None
        if default is not None:
            if not isinstance(default, str | int | float | bool):
                raise OnlineChangeRefused(qualified, f"default {default!r} is not a plain value",
                                          hint="use server_default for a SQL expression")
            literal = sql.SQL("CAST({} AS {})").format(sql.Literal(default), sql.SQL(type_)).as_string(None)
            _ddl.check_expression(connection, info, literal, "the default")
        if server_default is not None:
            _ddl.check_expression(connection, info, server_default, "server_default", cast=type_)
        if backfill is not None:
            _ddl.check_expression(connection, info, backfill, "the backfill expression", cast=type_)
        not_null = [] if options.get("nullable", True) else [column]
        if not_null and literal is None and server_default is None and backfill is None:
            raise OnlineChangeRefused(qualified, f"a NOT NULL column {column} needs a default, a server_default "
                                      "or a backfill for the rows that exist")
        default_sql = literal if literal is not None else server_default
        contract: dict[str, Any] = {}
        if backfill is not None:
            # Until the contraction the trigger fills every row the old version writes from the expression
            # (falling back to the default); a DEFAULT set now would fill those rows first, so it is set at the
            # contraction, when the application writes the column itself.
            fill = f"coalesce(({backfill})::{type_}, ({default_sql})::{type_})" if default_sql else backfill
            forward = {column: f"({fill})::{type_}"}
            add = [{"name": column, "type": type_, "default": None, "comment": options.get("comment")}]
            if default_sql:
                contract = {"set_default": [column, default_sql]}
        elif server_default is not None:
            # New rows get the SQL default at once; existing ones get it by the batched backfill.
            forward = {column: f"({server_default})::{type_}"}
            add = [{"name": column, "type": type_, "default": None, "set_default": server_default,
                    "comment": options.get("comment")}]
        else:
            forward = {}  # a constant default (a "fast default": existing rows read it, no rewrite) or none
            add = [{"name": column, "type": type_, "default": literal, "comment": options.get("comment")}]
        return _expand.expand_design(info, token, add=add, forward=forward, backward={}, old_columns=[],
                                     not_null=not_null, contract=contract)

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        found = _expand.column_state(connection, schema, table).get(str(options.get("column")))
        return found is not None and (bool(options.get("nullable", True)) or found[1])

    @classmethod
    def rows_estimate(cls, connection: sa.Connection, design: Mapping[str, Any]) -> int:
        from agentdb.online.kinds._rebuild import estimate_rows

        return estimate_rows(connection, design["schema"], design["table"]) if design["forward"] else 0

    @classmethod
    def objects(cls, design: Mapping[str, Any]) -> dict[str, list[str]]:
        return _expand.expand_objects(design) if design["forward"] else {}
