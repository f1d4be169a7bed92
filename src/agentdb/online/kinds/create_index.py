"""Create an index without blocking writes: ``CREATE INDEX CONCURRENTLY``, also on a partitioned table.

A plain table gets ``CREATE [UNIQUE] INDEX CONCURRENTLY`` (SHARE UPDATE
EXCLUSIVE: reads and writes go on; it waits for transactions older than it).
PostgreSQL 15 and 16 cannot build a partitioned table's index concurrently, so
for one the index is created ``ON ONLY`` the parent (catalogue only, INVALID),
built ``CONCURRENTLY`` on each partition, and each partition's index attached;
the parent's index is valid once every partition's is attached, and
partitions created later get theirs automatically.

A build that fails (a duplicate for a unique index, a lock timeout, a
cancel) leaves an INVALID index behind, which is dropped (``DROP INDEX
CONCURRENTLY``) before the step is retried or the failure reported; abort
drops whatever the change built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import OnlineChangeRefused
from agentdb.online.catalog import describe
from agentdb.online.kinds import _ddl
from agentdb.online.kinds._rebuild import fit, partition_key_columns
from agentdb.online.kinds.base import ChangeKind
from agentdb.online.plan import Phase, Step
from agentdb.online.settings import OnlineSettings

__all__ = ["CreateIndexKind", "index_exists"]

_METHODS = {"btree", "hash", "gist", "gin", "brin", "spgist"}


def index_exists(connection: sa.Connection, schema: str, table: str, name: str) -> bool | None:
    """True: a valid index ``name`` of the table; False: an INVALID one; None: none."""
    found = connection.execute(sa.text(
        "SELECT i.indisvalid FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relname = :name AND i.indrelid = to_regclass(pg_catalog.format("
        "'%I.%I', CAST(:schema AS text), CAST(:table AS text)))"
    ), {"schema": schema, "table": table, "name": name}).first()
    return None if found is None else bool(found[0])


def index_body(design: Mapping[str, Any], table: sql.Composable, name: sql.Composable, *,
               concurrently: bool, only: bool = False, if_not_exists: bool = False) -> sql.Composed:
    return sql.SQL("CREATE {unique}INDEX {conc}{ine}{name} ON {only}{table} USING {method} ({columns}){include}{where}"
                   ).format(
        unique=sql.SQL("UNIQUE " if design["unique"] else ""),
        conc=sql.SQL("CONCURRENTLY " if concurrently else ""),
        ine=sql.SQL("IF NOT EXISTS " if if_not_exists else ""), name=name,
        only=sql.SQL("ONLY " if only else ""), table=table, method=sql.SQL(design["method"]),
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in design["columns"]),
        include=sql.SQL(" INCLUDE ({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in design["include"]))
        if design["include"] else sql.SQL(""),
        where=sql.SQL(" WHERE ({})").format(sql.SQL(design["where"])) if design["where"] else sql.SQL(""),
    )


class CreateIndexKind(ChangeKind):
    name: ClassVar[str] = "create_index"
    summary: ClassVar[str] = "create an index CONCURRENTLY (per partition, then attached, on a partitioned table)"
    options: ClassVar[Mapping[str, Any]] = {"name": None, "columns": None, "unique": False, "method": "btree",
                                            "where": None, "include": ()}

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        qualified = f"{schema}.{table}"
        _ddl.check_options(qualified, cls.name, options, cls.options, ("name", "columns"))
        info = describe(connection, schema, table)
        name = _ddl.free_relation_name(connection, info, options["name"], "index")
        columns = options["columns"]
        columns = [columns] if isinstance(columns, str) else list(columns)
        include = list(options.get("include") or ())
        for column in [*columns, *include]:
            info.column(str(column))
        method = str(options.get("method") or "btree")
        if method not in _METHODS:
            raise OnlineChangeRefused(qualified, f"unknown index method {method!r}",
                                      hint="one of " + ", ".join(sorted(_METHODS)))
        where = options.get("where")
        if where is not None:
            _ddl.check_expression(connection, info, where, "the index predicate", cast="boolean")
        unique = bool(options.get("unique"))
        design: dict[str, Any] = {
            "schema": schema, "table": table, "token": token, "name": name, "columns": columns,
            "include": include, "method": method, "where": where, "unique": unique,
            "partitioned": info.relkind == "p", "partitions": [],
        }
        if info.relkind == "p":
            key = info.partition_key or ""
            if unique and any(c not in columns for c in partition_key_columns(connection, info)):
                raise OnlineChangeRefused(qualified, f"a unique index of a partitioned table must include its "
                                          f"partition key ({key})")
            design["partitions"] = [
                {"table": leaf, "index": _partition_index_name(leaf, table, name, token)}
                for leaf in _ddl.leaves(connection, info)]
            for entry in design["partitions"]:
                _ddl.free_relation_name(connection, info, entry["index"], "index")
        return design

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        name = options.get("name")
        return isinstance(name, str) and index_exists(connection, schema, table, name) is True

    @classmethod
    def phases(cls, design: Mapping[str, Any], settings: OnlineSettings) -> tuple[Phase, ...]:
        schema, table, name = design["schema"], design["table"], design["name"]
        qualified = f"{schema}.{table}"
        target = sql.Identifier(schema, table)
        if not design["partitioned"]:
            build = Step(
                f"build index {name} on {qualified} CONCURRENTLY",
                (sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)),
                 index_body(design, target, sql.Identifier(name), concurrently=True)),
                locks=(f"SHARE UPDATE EXCLUSIVE on {qualified} (reads and writes go on; waits for older "
                       "transactions)",),
                concurrent=True,
                undo=(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)),),
            )
            return (Phase("build", f"build {name} concurrently", steps=(build,)),)
        steps = [Step(
            f"create index {name} ON ONLY {qualified} (catalogue only; INVALID until every partition's is attached)",
            (index_body(design, target, sql.Identifier(name), concurrently=False, only=True, if_not_exists=True),),
            locks=(f"SHARE on {qualified} (catalogue only)",), contended=True,
        )]
        for entry in design["partitions"]:
            leaf = sql.Identifier(schema, entry["table"])
            drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, entry["index"]))
            steps.append(Step(
                f"build index {entry['index']} on partition {schema}.{entry['table']} CONCURRENTLY",
                (drop, index_body(design, leaf, sql.Identifier(entry["index"]), concurrently=True)),
                locks=(f"SHARE UPDATE EXCLUSIVE on {schema}.{entry['table']} (reads and writes go on)",),
                concurrent=True, undo=(drop,),
            ))
        attach = [Step(
            f"attach {entry['index']} to {name}",
            (sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
                sql.Identifier(schema, name), sql.Identifier(schema, entry["index"])),),
            locks=(f"SHARE UPDATE EXCLUSIVE on {qualified} and {schema}.{entry['table']} (catalogue only)",),
            contended=True,
        ) for entry in design["partitions"]]
        attach.append(Step(
            f"check that {name} is valid (a partition created meanwhile would leave it INVALID)",
            (sql.SQL(
                "DO $$ BEGIN IF NOT (SELECT indisvalid FROM pg_catalog.pg_index WHERE indexrelid = {}::regclass) "
                "THEN RAISE EXCEPTION 'index % is not valid: a partition has no attached index', {}; END IF; END $$"
            ).format(sql.Literal(f"{sql.Identifier(schema, name).as_string(None)}"), sql.Literal(name)),),
            locks=("none",),
        ))
        return (Phase("build", f"create {name} on the parent and build it on each partition concurrently",
                      steps=tuple(steps)),
                Phase("attach", "attach each partition's index", steps=tuple(attach)))

    @classmethod
    def abort_steps(cls, design: Mapping[str, Any]) -> tuple[Step, ...]:
        schema, name = design["schema"], design["name"]
        if not design["partitioned"]:
            drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name))
            return (Step(f"drop index {name} (built or INVALID)", (drop,), locks=(
                f"SHARE UPDATE EXCLUSIVE on {schema}.{design['table']}",), concurrent=True),)
        steps = [Step(
            f"drop the parent index {name} (with the partitions' indexes attached to it)",
            (sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(schema, name)),),
            locks=(f"ACCESS EXCLUSIVE on {schema}.{design['table']} and its partitions (catalogue only)",),
            contended=True,
        )]
        for entry in design["partitions"]:
            steps.append(Step(
                f"drop index {entry['index']} of partition {entry['table']} if it is left",
                (sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, entry["index"])),),
                locks=(f"SHARE UPDATE EXCLUSIVE on {schema}.{entry['table']}",), concurrent=True,
            ))
        return tuple(steps)

    @classmethod
    def objects(cls, design: Mapping[str, Any]) -> dict[str, list[str]]:
        schema = design["schema"]
        return {"tables": [f"{schema}.{design['name']}"]
                + [f"{schema}.{entry['index']}" for entry in design["partitions"]]}

    @classmethod
    def notes(cls, design: Mapping[str, Any]) -> tuple[str, ...]:
        notes = ["CREATE INDEX CONCURRENTLY waits for every transaction older than it to end, and scans the "
                 "table twice; reads and writes go on"]
        if design["partitioned"]:
            notes.append(f"{len(design['partitions'])} partitions, one concurrent build each")
        return tuple(notes)


def _partition_index_name(leaf: str, table: str, name: str, token: str) -> str:
    """A partition's index named the way PostgreSQL names the ones it makes itself (``analytics_p202611`` +
    ``_event_type_created_at_idx`` from ``analytics_event_type_created_at_idx``), so that building the index
    again (a downgrade, then an upgrade) gives the same names; the change's token only when that would not fit."""
    suffix = name[len(table) + 1:] if name.startswith(f"{table}_") else name
    if len(suffix.encode()) > 40:
        suffix = f"{token}_idx"
    return fit(leaf, f"_{suffix}")
