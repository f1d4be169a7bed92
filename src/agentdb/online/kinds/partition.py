"""Partition a plain table by month, online -- and the way back.

``partition``
    ``analytics`` becomes RANGE-partitioned on ``created_at`` (a
    ``timestamptz``), one partition per calendar month in UTC, named and
    bounded as :mod:`agentdb.partitions.naming` says: a partition for every
    month that holds rows, ``premake`` months ahead of the current one, and a
    DEFAULT partition for anything else (partition maintenance drains it).
    Indexes and key constraints are created on the empty partitioned table, so
    every partition gets its own, attached to the parent's, and no index is
    ever built on a live table.  Foreign keys are added after the copy, NOT
    VALID on each partition, validated one partition at a time (SHARE UPDATE
    EXCLUSIVE: writers go on), then added on the parent, which adopts the
    partitions' valid constraints without scanning (PostgreSQL 15 and 16
    cannot add a NOT VALID foreign key to a partitioned table).  At completion
    the table is registered with partition maintenance.

``unpartition``
    The reverse, for migration 007's downgrade: a partitioned table becomes a
    plain one with the parent's columns, indexes, constraints, foreign keys,
    triggers, grants and comments; indexes or constraints defined on single
    partitions only are not carried over.

.. note::
   Identity: the new table gets an identity column with the source's
   sequence options, and the cut-over sets its sequence to the source's.  On
   PostgreSQL 15 and 16 a partition does not inherit the parent's identity,
   so rows must be inserted through the parent (``analytics``), as the
   application does; an INSERT straight into a partition must give the id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import OnlineChangeRefused
from agentdb.online._sql import rows
from agentdb.online.catalog import describe, relation_exists
from agentdb.online.kinds import _rebuild as rebuild
from agentdb.online.plan import Phase, Step
from agentdb.online.settings import OnlineSettings
from agentdb.partitions.naming import add_months, default_partition_name, month_bounds, partition_name

__all__ = ["PartitionKind", "UnpartitionKind"]

class PartitionKind(rebuild.RebuildKind):
    name: ClassVar[str] = "partition"
    summary: ClassVar[str] = "convert a plain table to RANGE partitions by month of a timestamptz column"
    options: ClassVar[Mapping[str, Any]] = {"column": "created_at", "premake": 4}

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        unknown = set(options) - set(cls.options)
        if unknown:
            raise OnlineChangeRefused(f"{schema}.{table}", f"unknown option(s) {', '.join(sorted(unknown))}",
                                      hint="partition takes column and premake")
        column_name = str(options.get("column", cls.options["column"]))
        premake = options.get("premake", cls.options["premake"])
        info = describe(connection, schema, table)
        problems = rebuild.common_problems(info)
        if info.relkind != "r":
            problems.insert(0, "it is already partitioned")
        column = info.column(column_name)
        if column.type != "timestamp with time zone":
            problems.append(f"column {column.name} is {column.type}, not timestamp with time zone")
        if not column.not_null:
            problems.append(f"column {column.name} allows NULL (a partition key must not)")
        for index in info.indexes:
            if index.unique and column.name not in index.columns:
                problems.append(f"unique index {index.name} does not include {column.name} "
                                "(a partitioned table's unique keys must)")
        for trigger in info.triggers:
            if trigger.row_level and trigger.transition_tables:
                problems.append(f"row trigger {trigger.name} uses transition tables (not allowed on partitions)")
        for fk in info.foreign_keys:
            if not fk.validated:
                problems.append(f"foreign key {fk.name} is NOT VALID; validate it first")
        if not isinstance(premake, int) or isinstance(premake, bool) or not 0 <= premake <= 120:
            problems.append(f"premake {premake!r} is not a whole number of months from 0 to 120")
        if problems:
            raise OnlineChangeRefused(info.qualified, "; ".join(problems))
        assert isinstance(premake, int)
        design = rebuild.base_design(connection, info, token)
        # Reads the whole table once, under ACCESS SHARE: which months hold rows.
        found = rows(connection, sql.SQL(
            "SELECT DISTINCT date_trunc('month', {c}, 'UTC') FROM {t} WHERE {c} > '-infinity' AND {c} < 'infinity'"
        ).format(c=sql.Identifier(column.name), t=sql.Identifier(schema, table)))
        now = connection.execute(sa.text("SELECT now()")).scalar_one()
        months = {month_bounds(r[0])[0] for r in found}
        months |= {add_months(now, n) for n in range(premake + 1)}
        partitions = []
        for month in sorted(months):
            start, end = month_bounds(month)
            partitions.append({"name": partition_name(table, start), "from": start.isoformat(),
                               "to": end.isoformat()})
        default = default_partition_name(table)
        for name in [p["name"] for p in partitions] + [default]:
            if relation_exists(connection, schema, name):
                raise OnlineChangeRefused(info.qualified, f"a relation named {schema}.{name} is in the way")
        design["partitioning"] = {"column": column.name, "premake": premake, "partitions": partitions,
                                  "default": default}
        return design

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        column = str(options.get("column", cls.options["column"]))
        return bool(connection.execute(sa.text(
            "SELECT pg_catalog.pg_get_partkeydef(c.oid) = "
            "  pg_catalog.format('RANGE (%s)', pg_catalog.quote_ident(CAST(:column AS text))) "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relname = :table AND c.relkind = 'p'"
        ), {"schema": schema, "table": table, "column": column}).scalar())

    @classmethod
    def _partition_statements(cls, design: Mapping[str, Any]) -> list[sql.Composable]:
        schema = design["schema"]
        parent = sql.Identifier(schema, design["new_table"])
        info = rebuild.source_info(design)
        out: list[sql.Composable] = []
        part = design["partitioning"]
        for p in part["partitions"]:
            name = sql.Identifier(schema, p["name"])
            out.append(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                name, parent, sql.Literal(p["from"]), sql.Literal(p["to"])))
            out.append(sql.SQL("COMMENT ON TABLE {} IS {}").format(name, sql.Literal(
                f"Partition of {design['table']} for {p['from'][:7]} (UTC); managed by agentdb")))
        default = sql.Identifier(schema, part["default"])
        out.append(sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(default, parent))
        out.append(sql.SQL("COMMENT ON TABLE {} IS {}").format(default, sql.Literal(
            f"DEFAULT partition of {design['table']}: rows of months that have no partition yet; "
            "drained by agentdb partition maintenance")))
        if info.owner != design["run_as"]:
            for p in [*part["partitions"], {"name": part["default"]}]:
                out.append(sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                    sql.Identifier(schema, p["name"]), sql.Identifier(info.owner)))
        return out

    @classmethod
    def _leaves(cls, design: Mapping[str, Any]) -> list[str]:
        part = design["partitioning"]
        return [p["name"] for p in part["partitions"]] + [part["default"]]

    @classmethod
    def _foreign_key_steps(cls, design: Mapping[str, Any]) -> list[Step]:
        return rebuild.partitioned_foreign_key_steps(design, [(design["schema"], leaf) for leaf in cls._leaves(design)])

    @classmethod
    def phases(cls, design: Mapping[str, Any], settings: OnlineSettings) -> tuple[Phase, ...]:
        column = design["partitioning"]["column"]
        partition_by = sql.SQL("RANGE ({})").format(sql.Identifier(column))
        create = Step(
            f"create the new partitioned table {design['schema']}.{design['new_table']} with "
            f"{len(design['partitioning']['partitions'])} monthly partitions and a DEFAULT one, its indexes, "
            "constraints, comments and grants",
            tuple(rebuild.create_statements(design, partition_by, cls._partition_statements(design))),
            locks=("none on application tables (new objects only)",),
        )
        return _phases(design, settings, create, cls._foreign_key_steps(design), cls._register_step(design))

    @classmethod
    def _register_step(cls, design: Mapping[str, Any]) -> Step:
        part = design["partitioning"]
        schema, table = design["schema"], design["table"]

        def register(connection: sa.Connection) -> None:
            from agentdb.partitions import register as register_table

            register_table(connection, table, part["column"], part["premake"], schema=schema)

        return Step(
            f"register {schema}.{table} with partition maintenance (premake {part['premake']})",
            (), locks=("none (a row in agentdb.partitioned_tables)",), call=register,
        )

    @classmethod
    def notes(cls, design: Mapping[str, Any]) -> tuple[str, ...]:
        info = rebuild.source_info(design)
        part = design["partitioning"]
        notes = [
            f"rows written during the change for a month without a partition go to {part['default']}; "
            "partition maintenance drains it",
            "the old table is kept until completion, then dropped (keep_old keeps it in agentdb_archive)",
        ]
        if info.foreign_keys:
            notes.append("adding the foreign keys and, at completion, dropping the old table's take brief locks on "
                         + ", ".join(sorted({fk.referenced or "?" for fk in info.foreign_keys})))
        return tuple(notes)


class UnpartitionKind(rebuild.RebuildKind):
    name: ClassVar[str] = "unpartition"
    summary: ClassVar[str] = "convert a partitioned table back to a plain table"
    options: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        if options:
            raise OnlineChangeRefused(f"{schema}.{table}", f"unknown option(s) {', '.join(sorted(options))}",
                                      hint="unpartition takes no options")
        info = describe(connection, schema, table)
        problems = rebuild.common_problems(info)
        if info.relkind != "p":
            problems.insert(0, "it is not partitioned")
        if problems:
            raise OnlineChangeRefused(info.qualified, "; ".join(problems))
        design = rebuild.base_design(connection, info, token)
        design["partitions"] = [name for name, _bound in info.partitions]
        return design

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        relkind = connection.execute(sa.text(
            "SELECT c.relkind::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relname = :table"
        ), {"schema": schema, "table": table}).scalar()
        return relkind == "r"

    @classmethod
    def _foreign_key_steps(cls, design: Mapping[str, Any]) -> list[Step]:
        schema = design["schema"]
        new = sql.Identifier(schema, design["new_table"])
        new_name = f"{schema}.{design['new_table']}"
        info = rebuild.source_info(design)
        steps: list[Step] = []
        for fk in info.foreign_keys:
            steps.append(Step(
                f"add foreign key {fk.name} NOT VALID to {new_name}",
                (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
                    new, sql.Identifier(fk.name), sql.SQL(rebuild.fk_definition(fk))),),
                locks=(f"SHARE ROW EXCLUSIVE on {new_name} and {fk.referenced} (catalogue only)",),
                contended=True,
            ))
            if fk.validated:
                steps.append(Step(
                    f"validate foreign key {fk.name} on {new_name}",
                    (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(new, sql.Identifier(fk.name)),),
                    locks=(f"SHARE UPDATE EXCLUSIVE on {new_name} (reads and writes go on)",
                           f"ROW SHARE on {fk.referenced}"),
                ))
        steps.append(Step(
            f"ANALYZE {new_name}", (sql.SQL("ANALYZE {}").format(new),),
            locks=(f"SHARE UPDATE EXCLUSIVE on {new_name} (reads and writes go on)",),
        ))
        return steps

    @classmethod
    def _unregister_step(cls, design: Mapping[str, Any]) -> Step:
        schema, table = design["schema"], design["table"]

        def unregister(connection: sa.Connection) -> None:
            from agentdb.partitions import unregister as unregister_table

            unregister_table(connection, table, schema=schema)

        return Step(f"stop partition maintenance of {schema}.{table}", (),
                    locks=("none (a row of agentdb.partitioned_tables)",), call=unregister)

    @classmethod
    def phases(cls, design: Mapping[str, Any], settings: OnlineSettings) -> tuple[Phase, ...]:
        create = Step(
            f"create the new plain table {design['schema']}.{design['new_table']} with its indexes, constraints, "
            "comments and grants",
            tuple(rebuild.create_statements(design, None, [])),
            locks=("none on application tables (new objects only)",),
        )
        return _phases(design, settings, create, cls._foreign_key_steps(design), cls._unregister_step(design))

    @classmethod
    def notes(cls, design: Mapping[str, Any]) -> tuple[str, ...]:
        return (
            "indexes and constraints defined on single partitions only are not carried over",
            f"the old partitioned table and its {len(design['partitions'])} partitions are dropped at completion",
        )


def _phases(design: Mapping[str, Any], settings: OnlineSettings, create: Step, constraints: list[Step],
            finish: Step) -> tuple[Phase, ...]:
    qualified = f"{design['schema']}.{design['table']}"
    new_name = f"{design['schema']}.{design['new_table']}"
    return (
        Phase("start", f"create {new_name} and capture every write of {qualified} into it",
              steps=(create, rebuild.start_capture_step(design))),
        Phase("copy", f"copy the rows of {qualified} in key order, in batches", sort="copy",
              copy=rebuild.copy_spec(design)),
        Phase("constraints", "add and validate the foreign keys, refresh statistics", steps=tuple(constraints)),
        Phase("verify", f"count and checksum {qualified} and {new_name} per key range in one snapshot",
              sort="verify", verify=rebuild.verify_spec(design, settings.verify_ranges)),
        Phase("cutover", f"swap {new_name} in as {qualified} in one short transaction", sort="cutover",
              cutover=rebuild.cutover_spec(design)),
        Phase("complete", f"drop the old table{' (kept in the archive)' if settings.keep_old else ''}",
              steps=(*rebuild.complete_steps(design, keep_old=settings.keep_old), finish)),
    )
