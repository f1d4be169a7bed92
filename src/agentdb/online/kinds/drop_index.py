"""Drop an index without blocking reads and writes: ``DROP INDEX CONCURRENTLY``.

On a plain table the drop waits (SHARE UPDATE EXCLUSIVE) for the transactions
using the index, and blocks no one.  PostgreSQL 15 and 16 cannot drop a
partitioned table's index concurrently: there the drop takes ACCESS EXCLUSIVE
on the table and its partitions for a catalogue change (and the files'
unlinking), under the short ``lock_timeout`` with retries.  An index that
backs a constraint (primary key, unique) is refused: drop the constraint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import OnlineChangeRefused
from agentdb.online.catalog import describe
from agentdb.online.kinds import _ddl
from agentdb.online.kinds.base import ChangeKind
from agentdb.online.kinds.create_index import index_exists
from agentdb.online.plan import Phase, Step
from agentdb.online.settings import OnlineSettings

__all__ = ["DropIndexKind"]


class DropIndexKind(ChangeKind):
    name: ClassVar[str] = "drop_index"
    summary: ClassVar[str] = "drop an index CONCURRENTLY (a partitioned table's under a short lock_timeout)"
    options: ClassVar[Mapping[str, Any]] = {"name": None}

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        qualified = f"{schema}.{table}"
        _ddl.check_options(qualified, cls.name, options, cls.options, ("name",))
        info = describe(connection, schema, table)
        found = next((i for i in info.indexes if i.name == options["name"]), None)
        if found is None:
            raise OnlineChangeRefused(qualified, f"it has no index {options['name']!r}")
        if found.constraint_type is not None:
            raise OnlineChangeRefused(qualified, f"index {found.name} backs a constraint",
                                      hint="drop the constraint instead")
        return {"schema": schema, "table": table, "token": token, "name": found.name,
                "partitioned": info.relkind == "p", "definition": found.method_and_columns}

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        name = options.get("name")
        return isinstance(name, str) and index_exists(connection, schema, table, name) is None

    @classmethod
    def phases(cls, design: Mapping[str, Any], settings: OnlineSettings) -> tuple[Phase, ...]:
        schema, table, name = design["schema"], design["table"], design["name"]
        index = sql.Identifier(schema, name)
        if design["partitioned"]:
            step = Step(f"drop index {name} of {schema}.{table} and its partitions' indexes",
                        (sql.SQL("DROP INDEX IF EXISTS {}").format(index),),
                        locks=(f"ACCESS EXCLUSIVE on {schema}.{table} and its partitions (catalogue only; "
                               "PostgreSQL cannot drop a partitioned index concurrently)",), contended=True)
        else:
            step = Step(f"drop index {name} of {schema}.{table} CONCURRENTLY",
                        (sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(index),),
                        locks=(f"SHARE UPDATE EXCLUSIVE on {schema}.{table} (waits for its users; blocks no one)",),
                        concurrent=True)
        return (Phase("drop", f"drop {name}", steps=(step,)),)

    @classmethod
    def abort_steps(cls, design: Mapping[str, Any]) -> tuple[Step, ...]:
        return ()  # nothing is created; the one step either dropped the index or did nothing
