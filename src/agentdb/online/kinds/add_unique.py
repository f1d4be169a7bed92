"""Add a UNIQUE constraint without a blocking build: a unique index CONCURRENTLY, then attached.

``CREATE UNIQUE INDEX CONCURRENTLY`` builds the index while reads and writes
go on (SHARE UPDATE EXCLUSIVE); ``ADD CONSTRAINT ... UNIQUE USING INDEX``
then turns it into the constraint, a catalogue change under the short
``lock_timeout``.  A duplicate makes the build fail and leaves an INVALID
index: it is dropped (``DROP INDEX CONCURRENTLY``) at once, and the failure
names the constraint.

On a partitioned table the result is a unique *index*, not a named
constraint: PostgreSQL cannot ``ADD CONSTRAINT ... USING INDEX`` on a
partitioned table, and ``ADD CONSTRAINT ... UNIQUE`` would build every
partition's index under a lock that blocks writes.  The index is built as
``create_index`` builds one (:mod:`agentdb.online.kinds.create_index`):
created ``ON ONLY`` the parent, built ``CONCURRENTLY`` on each partition,
each partition's index attached; the valid unique index on the parent
enforces uniqueness across partitions and foreign keys can reference it.
PostgreSQL's rule applies: the key must include the partition key's columns
(rows with equal keys are then in the same partition), which is checked when
the change is planned, and so are duplicates (one read of the table under
ACCESS SHARE), so that neither leaves anything half-built.  A duplicate
written after that fails its partition's build, whose INVALID index is
dropped at once; ``abort`` drops the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import OnlineChangeRefused
from agentdb.online._sql import scalar
from agentdb.online.catalog import TableInfo, describe
from agentdb.online.kinds import _ddl
from agentdb.online.kinds._rebuild import partition_key_columns
from agentdb.online.kinds.add_check import constraint_validated, drop_constraint_step
from agentdb.online.kinds.base import ChangeKind
from agentdb.online.kinds.create_index import CreateIndexKind, index_body, index_exists
from agentdb.online.plan import Phase, Step
from agentdb.online.settings import OnlineSettings

__all__ = ["AddUniqueKind"]

#: Duplicates counted at design time, at most (the refusal says "at least" beyond it).
_DUPLICATES_SHOWN = 1000


class AddUniqueKind(ChangeKind):
    name: ClassVar[str] = "add_unique"
    summary: ClassVar[str] = ("add a UNIQUE constraint from a unique index built CONCURRENTLY (on a partitioned "
                              "table: the unique index, per partition)")
    options: ClassVar[Mapping[str, Any]] = {"name": None, "columns": None}

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        qualified = f"{schema}.{table}"
        _ddl.check_options(qualified, cls.name, options, cls.options, ("name", "columns"))
        info = describe(connection, schema, table)
        name = _ddl.free_relation_name(connection, info, options["name"], "constraint and index")
        if _ddl.constraint_exists(connection, info, name):
            raise OnlineChangeRefused(qualified, f"it has a constraint named {name} already")
        columns = [options["columns"]] if isinstance(options["columns"], str) else list(options["columns"])
        for column in columns:
            info.column(str(column))
        if info.relkind == "p":
            return cls._partitioned_design(connection, info, name, [str(c) for c in columns], token)
        return {"schema": schema, "table": table, "token": token, "name": name, "columns": columns,
                "unique": True, "method": "btree", "include": [], "where": None}

    @classmethod
    def _partitioned_design(cls, connection: sa.Connection, info: TableInfo, name: str, columns: list[str],
                            token: str) -> dict[str, Any]:
        """Refuse what PostgreSQL would refuse, or what would fail a partition's build, before anything is built;
        then the design of ``create_index`` with ``unique=True``."""
        key = partition_key_columns(connection, info)
        if None in key:
            raise OnlineChangeRefused(info.qualified, f"its partition key ({info.partition_key}) is an expression: "
                                      "PostgreSQL allows no unique key on such a partitioned table")
        missing = [c for c in key if c not in columns]
        if missing:
            raise OnlineChangeRefused(
                info.qualified, f"a unique key of a partitioned table must include its partition key: "
                f"{', '.join(str(c) for c in missing)} missing from ({', '.join(columns)})",
                hint=f"add {', '.join(str(c) for c in missing)} to the columns")
        keys = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        # One read of the table (ACCESS SHARE); NULLs are distinct in a unique index.
        duplicates = int(scalar(connection, sql.SQL(
            "SELECT count(*) FROM (SELECT FROM {} WHERE {} GROUP BY {} HAVING count(*) > 1 LIMIT {}) AS d"
        ).format(sql.Identifier(info.schema, info.name),
                 sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in columns),
                 keys, sql.Literal(_DUPLICATES_SHOWN))))
        if duplicates:
            many = f"at least {duplicates}" if duplicates >= _DUPLICATES_SHOWN else str(duplicates)
            raise OnlineChangeRefused(info.qualified, f"{many} value(s) of ({', '.join(columns)}) occur more than "
                                      f"once; {name} cannot be unique", hint="remove the duplicates first")
        design = CreateIndexKind.design(connection, info.schema, info.name,
                                        {"name": name, "columns": columns, "unique": True}, token)
        return design

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        name = options.get("name")
        if not isinstance(name, str):
            return False
        if constraint_validated(connection, schema, table, name) is True:
            return True
        partitioned = connection.execute(sa.text(
            "SELECT c.relkind = 'p' FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relname = :table"
        ), {"schema": schema, "table": table}).scalar()
        return bool(partitioned) and index_exists(connection, schema, table, name) is True

    @classmethod
    def phases(cls, design: Mapping[str, Any], settings: OnlineSettings) -> tuple[Phase, ...]:
        schema, table, name = design["schema"], design["table"], design["name"]
        qualified = f"{schema}.{table}"
        if design.get("partitioned"):
            build, attach = CreateIndexKind.phases(design, settings)
            return (
                dataclasses.replace(build, summary=f"create the unique index {name} ON ONLY {qualified} and build "
                                    "it on each partition concurrently (a duplicate fails a partition's build; its "
                                    "INVALID index is dropped)"),
                dataclasses.replace(attach, summary=f"attach each partition's index: the valid unique index {name} "
                                    f"on {qualified} is the result (PostgreSQL cannot ADD CONSTRAINT ... USING INDEX "
                                    "on a partitioned table)"),
            )
        drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name))
        build_step = Step(
            f"build the unique index {name} on {qualified} CONCURRENTLY (a duplicate fails it; its INVALID "
            "index is dropped)",
            (drop, index_body(design, sql.Identifier(schema, table), sql.Identifier(name), concurrently=True)),
            locks=(f"SHARE UPDATE EXCLUSIVE on {qualified} (reads and writes go on)",), concurrent=True,
            undo=(drop,),
        )
        attach_step = Step(
            f"make {name} the UNIQUE constraint {name} (catalogue only)",
            (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} UNIQUE USING INDEX {}").format(
                sql.Identifier(schema, table), sql.Identifier(name), sql.Identifier(name)),),
            locks=(f"SHARE UPDATE EXCLUSIVE on {qualified} (catalogue only)",), contended=True,
        )
        return (Phase("build", f"build {name} concurrently", steps=(build_step,)),
                Phase("attach", f"attach {name} as the constraint", steps=(attach_step,)))

    @classmethod
    def abort_steps(cls, design: Mapping[str, Any]) -> tuple[Step, ...]:
        if design.get("partitioned"):
            return CreateIndexKind.abort_steps(design)
        schema, table, name = design["schema"], design["table"], design["name"]
        return (drop_constraint_step(schema, table, name),
                Step(f"drop the index {name} if it is left (built or INVALID)",
                     (sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)),),
                     locks=(f"SHARE UPDATE EXCLUSIVE on {schema}.{table}",), concurrent=True))

    @classmethod
    def objects(cls, design: Mapping[str, Any]) -> dict[str, list[str]]:
        if design.get("partitioned"):
            return CreateIndexKind.objects(design)
        return {"tables": [f"{design['schema']}.{design['name']}"]}

    @classmethod
    def notes(cls, design: Mapping[str, Any]) -> tuple[str, ...]:
        if not design.get("partitioned"):
            return ()
        return (f"{design['schema']}.{design['table']} is partitioned: the result is the unique index "
                f"{design['name']} on it, not a named constraint (PostgreSQL cannot ADD CONSTRAINT ... USING INDEX "
                "on a partitioned table); it enforces uniqueness across partitions and foreign keys can reference it",
                *CreateIndexKind.notes(design))
