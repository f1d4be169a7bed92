"""Shared by the kinds that rebuild a table as a new one and swap it in at cut-over.

Partitioning, un-partitioning and (later) a column type change all: create the
new table next to the source (``CREATE TABLE ... (LIKE source INCLUDING
DEFAULTS, CONSTRAINTS, GENERATED, COMMENTS, STORAGE, COMPRESSION)``, identity
with the same sequence options, indexes and key constraints under temporary
names, the table comment, grants and owner), capture the source's writes into
it, copy, add foreign keys, verify, then swap in one short transaction:

* the identity sequence of the new table is set to where the source's is;
* the capture triggers and functions are dropped;
* the source, its indexes and identity sequences are renamed out of the way
  (``<table>__old_<token>``), the new table, its indexes and sequences take
  their names;
* the source's own triggers (audit, ``updated_at``, any user trigger) are
  created on the new table from ``pg_get_triggerdef``, enabled as they were.

Foreign keys and check constraints keep their names (they are per table).
The old table is kept, unchanged, until the change completes; completion drops
its foreign keys (one transaction each: dropping a foreign key takes ACCESS
EXCLUSIVE on the referenced table, briefly) and then the table, or keeps it in
the archive schema when asked to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import OnlineChangeRefused
from agentdb.online._sql import scalar
from agentdb.online.capture import CaptureSpec, install_statements, remove_statements
from agentdb.online.catalog import TableInfo, as_json, from_json, relation_exists
from agentdb.online.copy import CopySpec
from agentdb.online.kinds.base import ChangeKind
from agentdb.online.plan import CutoverSpec, Step
from agentdb.online.verify import VerifySpec
from agentdb.runtime.archive import ARCHIVE_SCHEMA, REGISTRY_DDL, REGISTRY_TABLE
from agentdb.runtime.history import INTERNAL_SCHEMA

__all__ = [
    "base_design",
    "capture_spec",
    "common_problems",
    "complete_steps",
    "copy_spec",
    "create_statements",
    "cutover_spec",
    "fit",
    "remove_capture_step",
    "source_info",
    "start_capture_step",
    "verify_spec",
]

_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}
_ENABLE = {"D": "DISABLE TRIGGER", "R": "ENABLE REPLICA TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}


def fit(base: str, suffix: str) -> str:
    """``base + suffix`` cut (on the base, on a character boundary) to PostgreSQL's 63-byte identifiers."""
    room = 63 - len(suffix.encode())
    encoded = base.encode()
    if len(encoded) > room:
        base = encoded[:room].decode(errors="ignore")
    return base + suffix


def common_problems(info: TableInfo) -> list[str]:
    """What no rebuild can carry over; each a short phrase for :class:`OnlineChangeRefused`."""
    problems = []
    if info.persistence != "p":
        problems.append("it is an unlogged or temporary table")
    if info.parent:
        problems.append(f"it is a partition or inheritance child of {info.parent}")
    problems += [f"{d} depends on it" for d in info.dependents]
    if info.incoming_foreign_keys:
        problems.append(
            "foreign keys of other tables reference it (" + ", ".join(info.incoming_foreign_keys)
            + "); they would keep pointing at the old table")
    if info.primary_key is None:
        problems.append("it has no primary key (the copy is ordered and checkpointed by it)")
    if any(c.type == "x" for c in info.constraints) or any(i.constraint_type == "x" for i in info.indexes):
        problems.append("exclusion constraints are not supported")
    return problems


def base_design(connection: sa.Connection, info: TableInfo, token: str) -> dict[str, Any]:
    """The names and lists every rebuild design has; the kind adds its own part."""
    schema, table = info.schema, info.name
    key = info.primary_key
    assert key is not None
    columns = [c.name for c in info.columns if not c.generated]
    types = {c.name: c.type for c in info.columns}
    design: dict[str, Any] = {
        "schema": schema,
        "table": table,
        "token": token,
        "source": as_json(info),
        "fingerprint": info.fingerprint(),
        "new_table": fit(table, f"__online_{token}"),
        "old_table": fit(table, f"__old_{token}"),
        "columns": columns,
        "key": list(key.columns),
        "key_types": [types[c] for c in key.columns],
        "indexes": [
            {"name": index.name, "temp": f"online_{token}_i{n}", "old": f"old_{token}_i{n}"}
            for n, index in enumerate(info.indexes, 1)
        ],
        "sequences": [
            {"column": column, "name": seq.name, "temp": f"online_{token}_s{n}", "old": f"old_{token}_s{n}"}
            for n, (column, seq) in enumerate(sorted(info.sequences.items()), 1)
        ],
        "capture_function": f"online_{token}_capture",
        "truncate_function": f"online_{token}_no_truncate",
        "capture_trigger": f"agentdb_online_{token}_capture",
        "truncate_trigger": f"agentdb_online_{token}_no_truncate",
        "run_as": str(connection.execute(sa.text("SELECT current_user")).scalar()),
    }
    for name in (design["new_table"], design["old_table"], *[i["temp"] for i in design["indexes"]],
                 *[s["temp"] for s in design["sequences"]]):
        if relation_exists(connection, schema, name):
            raise OnlineChangeRefused(info.qualified, f"a relation named {schema}.{name} is in the way")
    return design


def source_info(design: Mapping[str, Any]) -> TableInfo:
    return from_json(design["source"])


def _new(design: Mapping[str, Any]) -> sql.Identifier:
    return sql.Identifier(design["schema"], design["new_table"])


def _source(design: Mapping[str, Any]) -> sql.Identifier:
    return sql.Identifier(design["schema"], design["table"])


def grant_statements(info: TableInfo, target: sql.Composable) -> list[sql.Composable]:
    """GRANTs that give ``target`` the table and column privileges of ``info`` (read from relacl/attacl)."""
    out: list[sql.Composable] = []
    for grant in info.grants:
        if grant.privilege not in _PRIVILEGES:
            raise OnlineChangeRefused(info.qualified, f"unknown privilege {grant.privilege!r} in its ACL")
        grantee = sql.SQL("PUBLIC") if grant.grantee == "PUBLIC" else sql.Identifier(grant.grantee)
        columns = sql.SQL(" ({})").format(sql.Identifier(grant.column)) if grant.column else sql.SQL("")
        option = sql.SQL(" WITH GRANT OPTION") if grant.grantable else sql.SQL("")
        out.append(sql.SQL("GRANT {}{} ON TABLE {} TO {}{}").format(
            sql.SQL(grant.privilege), columns, target, grantee, option))
    return out


def create_statements(design: Mapping[str, Any], partition_by: sql.Composable | None,
                      partitions: list[sql.Composable]) -> list[sql.Composable]:
    """The new table, empty: columns, identity, partitions, key constraints and indexes, comments, grants, owner."""
    info = source_info(design)
    schema = design["schema"]
    new = _new(design)
    out: list[sql.Composable] = [sql.SQL(
        "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED "
        "INCLUDING COMMENTS INCLUDING STORAGE INCLUDING COMPRESSION){}"
    ).format(new, _source(design), sql.SQL(" PARTITION BY {}").format(partition_by) if partition_by else sql.SQL(""))]
    identity = {c.name: c.identity for c in info.columns}
    for entry in design["sequences"]:
        seq = info.sequences[entry["column"]]
        out.append(sql.SQL(
            "ALTER TABLE {} ALTER COLUMN {} ADD GENERATED {} AS IDENTITY (SEQUENCE NAME {} INCREMENT BY {} "
            "MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {})"
        ).format(
            new, sql.Identifier(entry["column"]),
            sql.SQL("ALWAYS" if identity[entry["column"]] == "a" else "BY DEFAULT"),
            sql.Identifier(schema, entry["temp"]), sql.Literal(seq.increment), sql.Literal(seq.minimum),
            sql.Literal(seq.maximum), sql.Literal(seq.start), sql.Literal(seq.cache),
            sql.SQL("CYCLE" if seq.cycle else "NO CYCLE"),
        ))
    out += partitions
    by_name = {i.name: i for i in info.indexes}
    for entry in design["indexes"]:
        index = by_name[entry["name"]]
        temp = sql.Identifier(entry["temp"])
        if index.constraint_type in ("p", "u"):
            assert index.constraint_def is not None
            # pg_get_constraintdef: "PRIMARY KEY (id, created_at)", PostgreSQL's own rendering.
            out.append(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(new, temp, sql.SQL(index.constraint_def)))
            if index.constraint_comment is not None:
                out.append(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                    temp, new, sql.Literal(index.constraint_comment)))
        else:
            # pg_get_indexdef from " USING ": method, columns, INCLUDE, WITH, WHERE.
            out.append(sql.SQL("CREATE {}INDEX {} ON {} USING {}").format(
                sql.SQL("UNIQUE " if index.unique else ""), temp, new, sql.SQL(index.method_and_columns)))
        if index.comment is not None:
            out.append(sql.SQL("COMMENT ON INDEX {} IS {}").format(
                sql.Identifier(schema, entry["temp"]), sql.Literal(index.comment)))
    if info.comment is not None:
        out.append(sql.SQL("COMMENT ON TABLE {} IS {}").format(new, sql.Literal(info.comment)))
    out += grant_statements(info, new)
    if info.owner != design["run_as"]:
        out.append(sql.SQL("ALTER TABLE {} OWNER TO {}").format(new, sql.Identifier(info.owner)))
    return out


def capture_spec(design: Mapping[str, Any]) -> CaptureSpec:
    columns = tuple(design["columns"])
    return CaptureSpec(
        source=(design["schema"], design["table"]),
        target=(design["schema"], design["new_table"]),
        source_key=tuple(design["key"]),
        target_key=tuple(design["key"]),
        target_columns=columns,
        source_columns=columns,
        function=(INTERNAL_SCHEMA, design["capture_function"]),
        truncate_function=(INTERNAL_SCHEMA, design["truncate_function"]),
        trigger=design["capture_trigger"],
        truncate_trigger=design["truncate_trigger"],
        overriding=bool(design["sequences"]),
        change_label=f"agentdb online {design['token']}",
    )


def start_capture_step(design: Mapping[str, Any]) -> Step:
    qualified = f"{design['schema']}.{design['table']}"
    return Step(
        f"install the capture trigger on {qualified}: from now on every write reaches the new table",
        tuple(install_statements(capture_spec(design))),
        locks=(f"SHARE ROW EXCLUSIVE on {qualified} (waits for open writers; blocks writes while it waits)",),
        contended=True,
    )


def remove_capture_step(design: Mapping[str, Any]) -> Step:
    qualified = f"{design['schema']}.{design['table']}"
    return Step(
        f"remove the capture triggers from {qualified} and their functions",
        tuple(remove_statements(capture_spec(design))),
        locks=(f"ACCESS EXCLUSIVE on {qualified} (DROP TRIGGER; catalogue only)",),
        contended=True,
    )


def copy_spec(design: Mapping[str, Any]) -> CopySpec:
    columns = tuple(design["columns"])
    return CopySpec(
        source=(design["schema"], design["table"]),
        target=(design["schema"], design["new_table"]),
        key=tuple(design["key"]),
        key_types=tuple(design["key_types"]),
        target_columns=columns,
        expressions=tuple(sql.Identifier("s", c) for c in columns),
        overriding=bool(design["sequences"]),
    )


def verify_spec(design: Mapping[str, Any], ranges: int = 16) -> VerifySpec:
    columns = design["columns"]
    return VerifySpec(
        source=(design["schema"], design["table"]),
        target=(design["schema"], design["new_table"]),
        source_row=sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier("s", c) for c in columns)),
        target_row=sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier("t", c) for c in columns)),
        range_column=design["key"][0],
        range_type=design["key_types"][0],
        target_range_column=design["key"][0],
        ranges=ranges,
    )


def trigger_statements(info: TableInfo) -> list[sql.Composable]:
    """The source's own triggers, recreated on the table that now has its name, enabled as they were."""
    out: list[sql.Composable] = []
    target = sql.Identifier(info.schema, info.name)
    for trigger in info.triggers:
        if trigger.name.startswith("agentdb_online_"):
            continue
        # pg_get_triggerdef, read with search_path = pg_catalog (every name qualified); it names the
        # table by the name the new table has taken by the time this runs.
        out.append(sql.SQL(trigger.definition))
        if trigger.enabled in _ENABLE:
            out.append(sql.SQL("ALTER TABLE {} {} {}").format(
                target, sql.SQL(_ENABLE[trigger.enabled]), sql.Identifier(trigger.name)))
    return out


def cutover_spec(design: Mapping[str, Any]) -> CutoverSpec:
    info = source_info(design)
    schema, table = design["schema"], design["table"]
    source, new = _source(design), _new(design)
    statements: list[sql.Composable] = []
    for entry in design["sequences"]:
        statements.append(sql.SQL(
            "SELECT pg_catalog.setval({}::regclass, s.last_value, s.is_called) FROM {} AS s"
        ).format(sql.Literal(sql.Identifier(schema, entry["temp"]).as_string(None)),
                 sql.Identifier(schema, entry["name"])))
    statements += remove_statements(capture_spec(design))
    statements.append(sql.SQL("ALTER TABLE {} RENAME TO {}").format(source, sql.Identifier(design["old_table"])))
    for entry in design["indexes"]:
        statements.append(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
            sql.Identifier(schema, entry["name"]), sql.Identifier(entry["old"])))
    for entry in design["sequences"]:
        statements.append(sql.SQL("ALTER SEQUENCE {} RENAME TO {}").format(
            sql.Identifier(schema, entry["name"]), sql.Identifier(entry["old"])))
    statements.append(sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, sql.Identifier(table)))
    for entry in design["indexes"]:
        statements.append(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
            sql.Identifier(schema, entry["temp"]), sql.Identifier(entry["name"])))
    for entry in design["sequences"]:
        statements.append(sql.SQL("ALTER SEQUENCE {} RENAME TO {}").format(
            sql.Identifier(schema, entry["temp"]), sql.Identifier(entry["name"])))
    statements += trigger_statements(info)
    qualified = f"{schema}.{table}"
    return CutoverSpec(
        lock=Step(
            f"lock {qualified} and its new version",
            (sql.SQL("LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE").format(source, new),),
            locks=(f"ACCESS EXCLUSIVE on {qualified} and {schema}.{design['new_table']}",),
            contended=True,
        ),
        swap=Step(
            "move the identity sequence, drop the capture, swap the names of tables, indexes and sequences, "
            "recreate the source's triggers on the new table",
            tuple(statements),
        ),
        source=(schema, table),
    )


def complete_steps(design: Mapping[str, Any], *, keep_old: bool) -> list[Step]:
    """Drop (or archive) the old table, after its foreign keys, one transaction each."""
    info = source_info(design)
    schema = design["schema"]
    old = sql.Identifier(schema, design["old_table"])
    old_name = f"{schema}.{design['old_table']}"
    steps = []
    for fk in info.foreign_keys:
        steps.append(Step(
            f"drop foreign key {fk.name} of the old table {old_name}",
            (sql.SQL("ALTER TABLE IF EXISTS {} DROP CONSTRAINT IF EXISTS {}").format(old, sql.Identifier(fk.name)),),
            locks=(f"ACCESS EXCLUSIVE on {fk.referenced} (removes its foreign-key triggers; catalogue only)",
                   f"ACCESS EXCLUSIVE on {old_name}"),
            contended=True,
        ))
    if keep_old:
        archive_name = fit(design["table"], f"_online_{design['token']}")
        steps.append(Step(
            f"keep the old table as {ARCHIVE_SCHEMA}.{archive_name}, recorded in {INTERNAL_SCHEMA}.{REGISTRY_TABLE}",
            (
                *[sql.SQL(s) for s in REGISTRY_DDL],
                sql.SQL(
                    "INSERT INTO {} (table_schema, table_name, archive_table, revision, row_count) "
                    "SELECT {}, {}, {}, NULL, count(*) FROM {}"
                ).format(sql.Identifier(INTERNAL_SCHEMA, REGISTRY_TABLE), sql.Literal(schema),
                         sql.Literal(design["table"]), sql.Literal(archive_name), old),
                sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(old, sql.Identifier(ARCHIVE_SCHEMA)),
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    sql.Identifier(ARCHIVE_SCHEMA, design["old_table"]), sql.Identifier(archive_name)),
            ),
            locks=(f"ACCESS EXCLUSIVE on {old_name}",),
            contended=True,
        ))
    else:
        steps.append(Step(
            f"drop the old table {old_name}",
            (sql.SQL("DROP TABLE IF EXISTS {}").format(old),),
            locks=(f"ACCESS EXCLUSIVE on {old_name} (no longer used)",),
            contended=True,
        ))
    return steps


def drop_new_step(design: Mapping[str, Any], referenced: list[str]) -> Step:
    """Drop the new table (abort).  With foreign keys on it, dropping takes ACCESS EXCLUSIVE on the
    referenced tables, briefly."""
    locks = [f"ACCESS EXCLUSIVE on {design['schema']}.{design['new_table']} (nobody else uses it)"]
    locks += [f"ACCESS EXCLUSIVE on {r} if the foreign keys were added (catalogue only)" for r in referenced]
    return Step(
        f"drop the new table {design['schema']}.{design['new_table']}",
        (sql.SQL("DROP TABLE IF EXISTS {}").format(_new(design)),),
        locks=tuple(locks),
        contended=True,
    )


def objects(design: Mapping[str, Any]) -> dict[str, list[str]]:
    schema = design["schema"]
    return {
        "tables": [f"{schema}.{design['new_table']}", f"{schema}.{design['old_table']}"],
        "functions": [f"{INTERNAL_SCHEMA}.{design['capture_function']}",
                      f"{INTERNAL_SCHEMA}.{design['truncate_function']}"],
        "triggers": [f"{schema}.{design['table']}.{design['capture_trigger']}",
                     f"{schema}.{design['table']}.{design['truncate_trigger']}"],
    }


def estimate_rows(connection: sa.Connection, schema: str, table: str) -> int:
    """The planner's row count (``reltuples``), summed over partitions; exact count when never analyzed."""
    estimate = connection.execute(sa.text(
        "SELECT sum(CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples END)::bigint, bool_or(c.reltuples < 0) "
        "FROM pg_catalog.pg_class c WHERE c.oid IN ("
        "  SELECT relid FROM pg_catalog.pg_partition_tree("
        "    to_regclass(pg_catalog.format('%I.%I', CAST(:s AS text), CAST(:t AS text)))) "
        "  WHERE isleaf)"
    ), {"s": schema, "t": table}).first()
    if estimate is None or estimate[0] is None or estimate[1]:
        return int(scalar(connection, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))))
    return int(estimate[0])


class RebuildKind(ChangeKind):
    """What every kind that rebuilds its table beside the source (partition, unpartition, alter_column_type)
    shares: abort removes the capture and drops the new table; the rows to copy and the objects come from the
    design."""

    @classmethod
    def abort_steps(cls, design: Mapping[str, Any]) -> tuple[Step, ...]:
        info = source_info(design)
        return (remove_capture_step(design),
                drop_new_step(design, [fk.referenced or "?" for fk in info.foreign_keys]))

    @classmethod
    def rows_estimate(cls, connection: sa.Connection, design: Mapping[str, Any]) -> int:
        return estimate_rows(connection, design["schema"], design["table"])

    @classmethod
    def objects(cls, design: Mapping[str, Any]) -> dict[str, list[str]]:
        return objects(design)
