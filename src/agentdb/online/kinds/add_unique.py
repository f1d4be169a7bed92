"""Add a UNIQUE constraint without a blocking build: a unique index CONCURRENTLY, then attached.

``CREATE UNIQUE INDEX CONCURRENTLY`` builds the index while reads and writes
go on (SHARE UPDATE EXCLUSIVE); ``ADD CONSTRAINT ... UNIQUE USING INDEX``
then turns it into the constraint, a catalogue change under the short
``lock_timeout``.  A duplicate makes the build fail and leaves an INVALID
index: it is dropped (``DROP INDEX CONCURRENTLY``) at once, and the failure
names the constraint.  PostgreSQL cannot attach an index to a partitioned
table's constraint (``USING INDEX``): for one, this kind refuses; a unique
index (``create_index`` with ``unique=True``) does the same job there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import OnlineChangeRefused
from agentdb.online.catalog import describe
from agentdb.online.kinds import _ddl
from agentdb.online.kinds.add_check import constraint_validated, drop_constraint_step
from agentdb.online.kinds.base import ChangeKind
from agentdb.online.kinds.create_index import index_body
from agentdb.online.plan import Phase, Step
from agentdb.online.settings import OnlineSettings

__all__ = ["AddUniqueKind"]


class AddUniqueKind(ChangeKind):
    name: ClassVar[str] = "add_unique"
    summary: ClassVar[str] = "add a UNIQUE constraint from a unique index built CONCURRENTLY"
    options: ClassVar[Mapping[str, Any]] = {"name": None, "columns": None}

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        qualified = f"{schema}.{table}"
        _ddl.check_options(qualified, cls.name, options, cls.options, ("name", "columns"))
        info = describe(connection, schema, table)
        if info.relkind == "p":
            raise OnlineChangeRefused(qualified, "it is partitioned: PostgreSQL cannot attach an index to a "
                                      "partitioned table's constraint", hint="use create_index with unique=True")
        name = _ddl.free_relation_name(connection, info, options["name"], "constraint and index")
        if _ddl.constraint_exists(connection, info, name):
            raise OnlineChangeRefused(qualified, f"it has a constraint named {name} already")
        columns = [options["columns"]] if isinstance(options["columns"], str) else list(options["columns"])
        for column in columns:
            info.column(str(column))
        return {"schema": schema, "table": table, "token": token, "name": name, "columns": columns,
                "unique": True, "method": "btree", "include": [], "where": None}

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        name = options.get("name")
        return isinstance(name, str) and constraint_validated(connection, schema, table, name) is True

    @classmethod
    def phases(cls, design: Mapping[str, Any], settings: OnlineSettings) -> tuple[Phase, ...]:
        schema, table, name = design["schema"], design["table"], design["name"]
        qualified = f"{schema}.{table}"
        drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name))
        build = Step(
            f"build the unique index {name} on {qualified} CONCURRENTLY (a duplicate fails it; its INVALID "
            "index is dropped)",
            (drop, index_body(design, sql.Identifier(schema, table), sql.Identifier(name), concurrently=True)),
            locks=(f"SHARE UPDATE EXCLUSIVE on {qualified} (reads and writes go on)",), concurrent=True,
            undo=(drop,),
        )
        attach = Step(
            f"make {name} the UNIQUE constraint {name} (catalogue only)",
            (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} UNIQUE USING INDEX {}").format(
                sql.Identifier(schema, table), sql.Identifier(name), sql.Identifier(name)),),
            locks=(f"SHARE UPDATE EXCLUSIVE on {qualified} (catalogue only)",), contended=True,
        )
        return (Phase("build", f"build {name} concurrently", steps=(build,)),
                Phase("attach", f"attach {name} as the constraint", steps=(attach,)))

    @classmethod
    def abort_steps(cls, design: Mapping[str, Any]) -> tuple[Step, ...]:
        schema, table, name = design["schema"], design["table"], design["name"]
        return (drop_constraint_step(schema, table, name),
                Step(f"drop the index {name} if it is left (built or INVALID)",
                     (sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)),),
                     locks=(f"SHARE UPDATE EXCLUSIVE on {schema}.{table}",), concurrent=True))

    @classmethod
    def objects(cls, design: Mapping[str, Any]) -> dict[str, list[str]]:
        return {"tables": [f"{design['schema']}.{design['name']}"]}
