"""Add a foreign key without a scan under a blocking lock: ``NOT VALID``, then ``VALIDATE``.

``ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID`` takes SHARE ROW EXCLUSIVE on
both tables for a catalogue change (short ``lock_timeout``, retries); new
writes are checked from then on.  ``VALIDATE CONSTRAINT`` scans under SHARE
UPDATE EXCLUSIVE (and ROW SHARE on the referenced table): writes go on.
PostgreSQL 15 and 16 cannot add a NOT VALID foreign key to a partitioned
table, so there it is added NOT VALID and validated on each partition, then
added to the parent, which adopts the partitions' valid constraints without
scanning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import OnlineChangeRefused
from agentdb.online.catalog import describe, find_table
from agentdb.online.kinds import _ddl
from agentdb.online.kinds.add_check import constraint_validated, drop_constraint_step, validate_step
from agentdb.online.kinds.base import ChangeKind
from agentdb.online.plan import Phase, Step
from agentdb.online.settings import OnlineSettings

__all__ = ["AddForeignKeyKind"]

_ACTIONS = {"NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT"}


class AddForeignKeyKind(ChangeKind):
    name: ClassVar[str] = "add_foreign_key"
    summary: ClassVar[str] = "add a FOREIGN KEY NOT VALID, then VALIDATE it while writes go on"
    options: ClassVar[Mapping[str, Any]] = {"name": None, "columns": None, "references": None,
                                            "referenced_columns": None, "on_delete": "NO ACTION",
                                            "on_update": "NO ACTION"}

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        qualified = f"{schema}.{table}"
        _ddl.check_options(qualified, cls.name, options, cls.options, ("name", "columns", "references"))
        info = describe(connection, schema, table)
        name = _ddl.check_new_name(info, options["name"], "constraint")
        if _ddl.constraint_exists(connection, info, name):
            raise OnlineChangeRefused(qualified, f"it has a constraint named {name} already")
        columns = [options["columns"]] if isinstance(options["columns"], str) else list(options["columns"])
        for column in columns:
            info.column(str(column))
        ref_schema, ref_table = find_table(connection, str(options["references"]))
        referenced = describe(connection, ref_schema, ref_table)
        ref_columns = options.get("referenced_columns")
        if ref_columns is None:
            key = referenced.primary_key
            if key is None:
                raise OnlineChangeRefused(qualified, f"{referenced.qualified} has no primary key to reference")
            ref_columns = list(key.columns)
        ref_columns = [ref_columns] if isinstance(ref_columns, str) else list(ref_columns)
        for column in ref_columns:
            referenced.column(str(column))
        if len(ref_columns) != len(columns):
            raise OnlineChangeRefused(qualified, "columns and referenced_columns differ in number")
        actions = {}
        for option in ("on_delete", "on_update"):
            action = str(options.get(option) or "NO ACTION").upper()
            if action not in _ACTIONS:
                raise OnlineChangeRefused(qualified, f"{option} {action!r} is not one of "
                                          + ", ".join(sorted(_ACTIONS)))
            actions[option] = action
        design: dict[str, Any] = {
            "schema": schema, "table": table, "token": token, "name": name, "columns": columns,
            "ref_schema": ref_schema, "ref_table": ref_table, "ref_columns": ref_columns, **actions,
            "partitions": _ddl.leaves(connection, info) if info.relkind == "p" else None,
        }
        return design

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        name = options.get("name")
        return isinstance(name, str) and constraint_validated(connection, schema, table, name) is True

    @classmethod
    def _definition(cls, design: Mapping[str, Any]) -> sql.Composed:
        return sql.SQL("FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE {} ON UPDATE {}").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in design["columns"]),
            sql.Identifier(design["ref_schema"], design["ref_table"]),
            sql.SQL(", ").join(sql.Identifier(c) for c in design["ref_columns"]),
            sql.SQL(design["on_delete"]), sql.SQL(design["on_update"]))

    @classmethod
    def _add(cls, design: Mapping[str, Any], table: str, *, not_valid: bool) -> Step:
        schema, name = design["schema"], design["name"]
        referenced = f"{design['ref_schema']}.{design['ref_table']}"
        return Step(
            f"add foreign key {name} to {schema}.{table}" + (" NOT VALID" if not_valid else
                                                             ", adopting the partitions' validated constraints"),
            (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}{}").format(
                sql.Identifier(schema, table), sql.Identifier(name), cls._definition(design),
                sql.SQL(" NOT VALID" if not_valid else "")),),
            locks=(f"SHARE ROW EXCLUSIVE on {schema}.{table} and {referenced} (catalogue only)",), contended=True,
        )

    @classmethod
    def phases(cls, design: Mapping[str, Any], settings: OnlineSettings) -> tuple[Phase, ...]:
        schema, table, name = design["schema"], design["table"], design["name"]
        if design["partitions"] is None:
            return (Phase("add", f"add {name} NOT VALID", steps=(cls._add(design, table, not_valid=True),)),
                    Phase("validate", f"validate {name}", steps=(validate_step(schema, table, name),)))
        leaves = design["partitions"]
        return (
            Phase("add", f"add {name} NOT VALID to each partition",
                  steps=tuple(cls._add(design, leaf, not_valid=True) for leaf in leaves)),
            Phase("validate", f"validate {name} on each partition, then add it to {schema}.{table}",
                  steps=(*[validate_step(schema, leaf, name) for leaf in leaves],
                         cls._add(design, table, not_valid=False))),
        )

    @classmethod
    def abort_steps(cls, design: Mapping[str, Any]) -> tuple[Step, ...]:
        schema, table, name = design["schema"], design["table"], design["name"]
        extra = f" and {design['ref_schema']}.{design['ref_table']}"
        steps = [drop_constraint_step(schema, table, name, extra)]
        steps += [drop_constraint_step(schema, leaf, name, extra) for leaf in design["partitions"] or []]
        return tuple(steps)
