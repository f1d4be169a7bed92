"""Change a column's type (with ``USING``) on a busy table: a rebuilt copy, swapped in at cut-over.

``ALTER TABLE ... ALTER COLUMN ... TYPE`` rewrites the table under ACCESS
EXCLUSIVE for as long as the rewrite takes.  This kind instead builds the
table anew beside the source (:mod:`agentdb.online.kinds._rebuild`): the new
table gets the column's new type while it is empty, the capture trigger
converts every write (``CAST((using) AS type)`` over the written row), the
batched copy converts the existing rows, the verification compares the
converted rows, and the cut-over swaps the tables in one short transaction.

A key referenced by other tables' foreign keys (``integer`` -> ``bigint`` of
``id``) is handled at the cut-over: those foreign keys are dropped from the
old table and added to the new one ``NOT VALID`` in the same transaction
(catalogue only; writes are checked from then on), and validated at
completion (SHARE UPDATE EXCLUSIVE: writes go on).  A referencing column
keeps its type (``integer`` referencing ``bigint`` is valid); change it with
its own ``alter_column_type``.  A partitioned referencing table is refused:
PostgreSQL 15 and 16 cannot add a NOT VALID foreign key to one.

An identity column whose sequence ends at the old type's maximum gets the new
type's maximum.

A partitioned table is rebuilt as a partitioned table with the same key and
the same partitions (same bounds, the DEFAULT one included; see
:func:`~agentdb.online.kinds._rebuild.partition_layout`), which take the
partitions' names, and their indexes' names, at the swap; the registration
with partition maintenance is by name and holds.  Its foreign keys are added
per partition NOT VALID, validated partition by partition, then adopted by the
parent, as the ``partition`` kind does.  The partition key's columns cannot
change type this way (the bounds are of that type), and a partition with an
index, constraint or trigger of its own is refused, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import OnlineChangeRefused
from agentdb.online.capture import CaptureSpec, install_statements
from agentdb.online.catalog import TableInfo, describe
from agentdb.online.copy import CopySpec
from agentdb.online.kinds import _ddl
from agentdb.online.kinds import _rebuild as rebuild
from agentdb.online.plan import CutoverSpec, Phase, Step
from agentdb.online.settings import OnlineSettings
from agentdb.online.verify import VerifySpec

__all__ = ["AlterColumnTypeKind"]

_MAXIMUM = {"smallint": 32767, "integer": 2147483647, "bigint": 9223372036854775807}
_INCOMING = sa.text(
    "SELECT con.conname, con.conrelid::regclass::text, pg_catalog.pg_get_constraintdef(con.oid), "
    "c.relkind::text, n.nspname, c.relname FROM pg_catalog.pg_constraint con "
    "JOIN pg_catalog.pg_class c ON c.oid = con.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE con.confrelid = :oid AND con.contype = 'f' AND con.conparentid = 0 AND con.conrelid <> :oid "
    "ORDER BY 2, 1"
)


class AlterColumnTypeKind(rebuild.RebuildKind):
    name: ClassVar[str] = "alter_column_type"
    summary: ClassVar[str] = "change a column's type (USING) by a rebuilt copy, even a key other tables reference"
    options: ClassVar[Mapping[str, Any]] = {"column": None, "type": None, "using": None}

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        qualified = f"{schema}.{table}"
        _ddl.check_options(qualified, cls.name, options, cls.options, ("column", "type"))
        info = describe(connection, schema, table)
        column = info.column(str(options["column"]))
        type_ = _ddl.sql_type(connection, qualified, options["type"])
        problems = [p for p in rebuild.common_problems(info) if not p.startswith("foreign keys of other tables")]
        leaves: list[dict[str, Any]] = []
        if info.relkind == "p":
            key = rebuild.partition_key_columns(connection, info)
            if None in key:
                problems.append(f"its partition key ({info.partition_key}) has an expression")
            elif column.name in key:
                problems.append(f"column {column.name} is in its partition key ({info.partition_key}); the "
                                "partitions' bounds are of its type")
            leaves, more = rebuild.partition_layout(connection, info, token)
            problems += more
        if column.generated:
            problems.append(f"column {column.name} is generated")
        if column.type == type_:
            problems.append(f"column {column.name} is {type_} already")
        incoming = []
        for r in connection.execute(_INCOMING, {"oid": info.oid}):
            if r[3] == "p":
                problems.append(f"partitioned table {r[1]} references it ({r[0]})")
            incoming.append({"name": str(r[0]), "table": str(r[1]), "definition": str(r[2]), "schema": str(r[4]),
                             "relname": str(r[5])})
        if problems:
            raise OnlineChangeRefused(qualified, "; ".join(problems))
        using = options.get("using") or sql.SQL("CAST({} AS {})").format(
            sql.Identifier(column.name), sql.SQL(type_)).as_string(None)
        _ddl.check_expression(connection, info, using, "the USING expression", cast=type_)
        design = rebuild.base_design(connection, info, token)
        source = design["source"]
        for entry in design["sequences"]:
            seq = source["sequences"][entry["column"]]
            if entry["column"] == column.name and seq["maximum"] == _MAXIMUM.get(column.type) and type_ in _MAXIMUM:
                seq["maximum"] = _MAXIMUM[type_]
        design["alter"] = {"column": column.name, "from": column.type, "type": type_, "using": using}
        design["incoming"] = incoming
        if info.relkind == "p":
            design["partition_by"] = info.partition_key
            design["leaves"] = leaves
        return design

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        from agentdb.online.kinds._expand import column_state

        found = column_state(connection, schema, table).get(str(options.get("column")))
        if found is None or (not isinstance(options.get("type"), str | type) and options.get("type") is None):
            return False
        try:
            wanted = _ddl.sql_type(connection, f"{schema}.{table}", options["type"])
        except OnlineChangeRefused:
            return False
        return found[0] == wanted

    @classmethod
    def _converted(cls, design: Mapping[str, Any], row: str | None) -> sql.Composable:
        """The new value of the column: over the copy's source alias ``s``, or over the trigger's NEW."""
        alter = design["alter"]
        cast = sql.SQL("CAST(({}) AS {})").format(sql.SQL(alter["using"]), sql.SQL(alter["type"]))
        if row is None:
            return cast
        return sql.SQL("(SELECT {} FROM (SELECT {}.*) AS s)").format(cast, sql.SQL(row))

    @classmethod
    def _create(cls, design: Mapping[str, Any]) -> Step:
        alter = design["alter"]
        partitioned = bool(design.get("partition_by"))
        statements = rebuild.create_statements(
            design, sql.SQL(design["partition_by"]) if partitioned else None,
            rebuild.partition_statements(design) if partitioned else [])
        new = sql.Identifier(design["schema"], design["new_table"])
        # Right after CREATE TABLE, while it is empty (before identity, indexes and constraints build on it).
        statements.insert(1, sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING ({})").format(
            new, sql.Identifier(alter["column"]), sql.SQL(alter["type"]), sql.SQL(alter["using"])))
        what = (f"partitioned by {design['partition_by']} with the source's {len(design['leaves'])} partitions, "
                if partitioned else "")
        return Step(
            f"create {design['schema']}.{design['new_table']} with {alter['column']} as {alter['type']}, {what}its "
            "indexes, constraints, comments and grants", tuple(statements),
            locks=("none on application tables (new objects only)",))

    @classmethod
    def _capture(cls, design: Mapping[str, Any]) -> Step:
        spec = rebuild.capture_spec(design)
        column = design["alter"]["column"]
        values = tuple(cls._converted(design, "NEW") if c == column else sql.SQL("NEW.{}").format(sql.Identifier(c))
                       for c in spec.source_columns)
        spec = CaptureSpec(**{**spec.__dict__, "new_values": values})
        step = rebuild.start_capture_step(design)
        return Step(step.title + f" (converting {column})", tuple(install_statements(spec)), locks=step.locks,
                    contended=True)

    @classmethod
    def _copy(cls, design: Mapping[str, Any]) -> CopySpec:
        spec = rebuild.copy_spec(design)
        column = design["alter"]["column"]
        expressions = tuple(cls._converted(design, None) if c == column else e
                            for c, e in zip(spec.target_columns, spec.expressions, strict=True))
        return CopySpec(**{**spec.__dict__, "expressions": expressions})

    @classmethod
    def _verify(cls, design: Mapping[str, Any], ranges: int) -> VerifySpec:
        spec = rebuild.verify_spec(design, ranges)
        column = design["alter"]["column"]
        row = sql.SQL("ROW({})").format(sql.SQL(", ").join(
            cls._converted(design, None) if c == column else sql.Identifier("s", c) for c in design["columns"]))
        return VerifySpec(**{**spec.__dict__, "source_row": row})

    @classmethod
    def _cutover(cls, design: Mapping[str, Any]) -> CutoverSpec:
        spec = rebuild.cutover_spec(design)
        incoming = design["incoming"]
        if not incoming:
            return spec
        schema, table = design["schema"], design["table"]
        lock = sql.SQL("LOCK TABLE {}, {}, {} IN ACCESS EXCLUSIVE MODE").format(
            sql.Identifier(schema, table), sql.Identifier(schema, design["new_table"]),
            sql.SQL(", ").join(sql.Identifier(i["schema"], i["relname"]) for i in _unique_tables(incoming)))
        drops = [sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(i["schema"], i["relname"]),
                                                                     sql.Identifier(i["name"])) for i in incoming]
        adds = [sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
            sql.Identifier(i["schema"], i["relname"]), sql.Identifier(i["name"]), sql.SQL(rebuild.without_not_valid(
                i["definition"]))) for i in incoming]
        names = ", ".join(i["table"] for i in _unique_tables(incoming))
        return CutoverSpec(
            lock=Step(spec.lock.title + f" and the tables whose foreign keys reference it ({names})", (lock,),
                      locks=(*spec.lock.locks, f"ACCESS EXCLUSIVE on {names} (their foreign keys move; catalogue "
                                               "only)"), contended=True),
            swap=Step(spec.swap.title + "; move the foreign keys that reference it to the new table, NOT VALID",
                      (*drops, *spec.swap.statements, *adds)),
            source=spec.source)

    @classmethod
    def _foreign_key_steps(cls, design: Mapping[str, Any], info: TableInfo) -> list[Step]:
        """A plain new table: each foreign key NOT VALID, then validated; then ANALYZE."""
        new_name = f"{design['schema']}.{design['new_table']}"
        constraints = [Step(
            f"add foreign key {fk.name} NOT VALID to {new_name}",
            (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
                sql.Identifier(design["schema"], design["new_table"]), sql.Identifier(fk.name),
                sql.SQL(rebuild.without_not_valid(fk.definition))),),
            locks=(f"SHARE ROW EXCLUSIVE on {new_name} and {fk.referenced} (catalogue only)",), contended=True,
        ) for fk in info.foreign_keys]
        constraints += [Step(
            f"validate foreign key {fk.name} on {new_name}",
            (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                sql.Identifier(design["schema"], design["new_table"]), sql.Identifier(fk.name)),),
            locks=(f"SHARE UPDATE EXCLUSIVE on {new_name}", f"ROW SHARE on {fk.referenced}"),
        ) for fk in info.foreign_keys if fk.validated]
        constraints.append(Step(f"ANALYZE {new_name}", (sql.SQL("ANALYZE {}").format(
            sql.Identifier(design["schema"], design["new_table"])),),
            locks=(f"SHARE UPDATE EXCLUSIVE on {new_name} (reads and writes go on)",)))
        return constraints

    @classmethod
    def phases(cls, design: Mapping[str, Any], settings: OnlineSettings) -> tuple[Phase, ...]:
        qualified = f"{design['schema']}.{design['table']}"
        new_name = f"{design['schema']}.{design['new_table']}"
        info = rebuild.source_info(design)
        if design.get("partition_by"):
            constraints = rebuild.partitioned_foreign_key_steps(
                design, [(leaf["schema"], leaf["temp"]) for leaf in design["leaves"]])
        else:
            constraints = cls._foreign_key_steps(design, info)
        validate = [Step(
            f"validate foreign key {i['name']} of {i['table']} (moved to the new table NOT VALID at the cut-over)",
            (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                sql.Identifier(i["schema"], i["relname"]), sql.Identifier(i["name"])),),
            locks=(f"SHARE UPDATE EXCLUSIVE on {i['table']} (reads and writes go on)", f"ROW SHARE on {qualified}"),
        ) for i in design["incoming"]]
        alter = design["alter"]
        return (
            Phase("start", f"create {new_name} with the new type and capture every write of {qualified} into it",
                  steps=(cls._create(design), cls._capture(design))),
            Phase("copy", f"copy the rows of {qualified}, converting {alter['column']}, in batches", sort="copy",
                  copy=cls._copy(design)),
            Phase("constraints", "add and validate the foreign keys, refresh statistics", steps=tuple(constraints)),
            Phase("verify", f"count and checksum the converted rows of {qualified} and {new_name} per key range",
                  sort="verify", verify=cls._verify(design, settings.verify_ranges)),
            Phase("cutover", f"swap {new_name} in as {qualified} in one short transaction", sort="cutover",
                  cutover=cls._cutover(design)),
            Phase("complete", "validate the moved foreign keys, drop the old table"
                  + (" (kept in the archive)" if settings.keep_old else ""),
                  steps=(*validate, *rebuild.complete_steps(design, keep_old=settings.keep_old))),
        )

    @classmethod
    def notes(cls, design: Mapping[str, Any]) -> tuple[str, ...]:
        alter = design["alter"]
        notes = [f"{alter['column']}: {alter['from']} -> {alter['type']} USING {alter['using']}",
                 "the old table is kept until completion, then dropped (keep_old keeps it in agentdb_archive)"]
        if design.get("partition_by"):
            notes.append(f"partitioned by {design['partition_by']}: the new table gets the same "
                         f"{len(design['leaves'])} partitions (" + ", ".join(leaf["name"] for leaf in design["leaves"])
                         + "), which take their names at the cut-over; partition maintenance keeps the table")
        if design["incoming"]:
            notes.append("foreign keys moved at the cut-over and validated at completion: "
                         + ", ".join(f"{i['name']} on {i['table']}" for i in design["incoming"]))
        return tuple(notes)


def _unique_tables(incoming: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for entry in incoming:
        seen.setdefault(entry["table"], entry)
    return list(seen.values())

