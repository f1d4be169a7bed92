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

A partitioned source rebuilt as itself (``alter_column_type``) keeps its
partitions (:func:`partition_layout`): the new table is partitioned by the same
key, with a partition of the same bounds (DEFAULT included) for each of the
source's, under temporary names; each partition's indexes are created on it
before the parent's, so the parent's adopt them (as PostgreSQL does when it
attaches a partition) and they can be given the source partitions' index names
at the swap, which renames the partitions and their indexes too.  Partition
maintenance finds the table by name (``agentdb.partitioned_tables``), so its
registration holds.  The swap refuses a source whose partitions changed since
the change was planned (partition maintenance leaves a table alone while an
online change of it is unfinished; a manual ATTACH or DETACH does not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import OnlineChangeRefused
from agentdb.online._sql import scalar
from agentdb.online.capture import CaptureSpec, install_statements, remove_statements
from agentdb.online.catalog import (
    ConstraintInfo,
    Grant,
    IndexInfo,
    TableInfo,
    as_json,
    describe,
    from_json,
    relation_exists,
)
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
    "fk_definition",
    "partition_key_columns",
    "partition_layout",
    "partition_statements",
    "partitioned_foreign_key_steps",
    "remove_capture_step",
    "source_info",
    "start_capture_step",
    "verify_spec",
]

_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}
_ENABLE = {"D": "DISABLE TRIGGER", "R": "ENABLE REPLICA TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}
_NOT_VALID = " NOT VALID"


def without_not_valid(definition: str) -> str:
    """A ``pg_get_constraintdef`` without its trailing NOT VALID."""
    return definition[: -len(_NOT_VALID)] if definition.endswith(_NOT_VALID) else definition


def fk_definition(fk: ConstraintInfo) -> str:
    """``pg_get_constraintdef`` of a foreign key without a trailing NOT VALID."""
    return without_not_valid(fk.definition)


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
    return _grants(info.grants, info.qualified, target)


def _grants(grants: Sequence[Grant], qualified: str, target: sql.Composable) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    for grant in grants:
        if grant.privilege not in _PRIVILEGES:
            raise OnlineChangeRefused(qualified, f"unknown privilege {grant.privilege!r} in its ACL")
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
        out.append(_index_statement(index, new, temp))
        if index.constraint_type in ("p", "u") and index.constraint_comment is not None:
            out.append(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                temp, new, sql.Literal(index.constraint_comment)))
        if index.comment is not None:
            out.append(sql.SQL("COMMENT ON INDEX {} IS {}").format(
                sql.Identifier(schema, entry["temp"]), sql.Literal(index.comment)))
    if info.comment is not None:
        out.append(sql.SQL("COMMENT ON TABLE {} IS {}").format(new, sql.Literal(info.comment)))
    out += grant_statements(info, new)
    if info.owner != design["run_as"]:
        out.append(sql.SQL("ALTER TABLE {} OWNER TO {}").format(new, sql.Identifier(info.owner)))
    return out


def _index_statement(index: IndexInfo, table: sql.Composable, name: sql.Identifier) -> sql.Composable:
    """``index`` (or the key constraint it implements) made again on ``table`` as ``name``."""
    if index.constraint_type in ("p", "u"):
        assert index.constraint_def is not None
        # pg_get_constraintdef: "PRIMARY KEY (id, created_at)", PostgreSQL's own rendering.
        return sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(table, name, sql.SQL(index.constraint_def))
    # pg_get_indexdef from " USING ": method, columns, INCLUDE, WITH, WHERE.
    return sql.SQL("CREATE {}INDEX {} ON {} USING {}").format(
        sql.SQL("UNIQUE " if index.unique else ""), name, table, sql.SQL(index.method_and_columns))


_PARTITION_KEY = sa.text(
    "SELECT a.attname FROM pg_catalog.pg_partitioned_table p "
    "CROSS JOIN LATERAL unnest(p.partattrs::int2[]) WITH ORDINALITY AS k(attnum, n) "
    "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k.attnum "
    "WHERE p.partrelid = :oid ORDER BY k.n"
)
_LEAVES = sa.text(
    "SELECT n.nspname, c.relname, c.relkind::text, pg_catalog.pg_get_expr(c.relpartbound, c.oid), "
    "i.inhdetachpending FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = :oid ORDER BY 1, 2"
)
_LEAF_INDEXES = sa.text(
    # Each index of a partition and the parent's index it is attached to (NULL: the partition's own).
    "SELECT ic.relname, pc.relname FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class ic ON ic.oid = x.indexrelid "
    "LEFT JOIN pg_catalog.pg_inherits h ON h.inhrelid = x.indexrelid "
    "LEFT JOIN pg_catalog.pg_class pc ON pc.oid = h.inhparent WHERE x.indrelid = :oid ORDER BY 1"
)
_LEAF_CONSTRAINTS = sa.text(
    # Constraints the partition has of its own (not inherited from, nor cloned from, the parent's).
    "SELECT conname FROM pg_catalog.pg_constraint WHERE conrelid = :oid AND contype IN ('c', 'f', 'x', 't') "
    "AND conparentid = 0 AND coninhcount = 0 ORDER BY 1"
)


def partition_key_columns(connection: sa.Connection, info: TableInfo) -> list[str | None]:
    """The columns of a partitioned table's key, in order; None for an expression."""
    return [None if r[0] is None else str(r[0]) for r in connection.execute(_PARTITION_KEY, {"oid": info.oid})]


def partition_layout(connection: sa.Connection, info: TableInfo,
                     token: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The partitions of a partitioned source to give the new table, and what stops that (short phrases).

    Each partition is recreated with the same bounds, comment, grants and owner,
    and the indexes attached to the parent's; what a partition has of its own
    (an index, a constraint or a trigger that is not the parent's) is named as a
    problem rather than silently left behind.
    """
    problems: list[str] = []
    numbers = {index.name: n for n, index in enumerate(info.indexes, 1)}
    leaves: list[dict[str, Any]] = []
    archived: set[str] = set()
    for n, (schema, name, relkind, bound, detaching) in enumerate(connection.execute(_LEAVES, {"oid": info.oid}), 1):
        qualified = f"{schema}.{name}"
        if relkind == "p":
            problems.append(f"partition {qualified} is itself partitioned")
            continue
        if detaching:
            problems.append(f"partition {qualified} is being detached (finish or cancel the DETACH first)")
            continue
        leaf = describe(connection, schema, name)
        if leaf.persistence != "p":
            problems.append(f"partition {qualified} is unlogged")
        problems += [f"{d} depends on partition {qualified}" for d in leaf.dependents]
        if leaf.incoming_foreign_keys:
            problems.append(f"foreign keys reference partition {qualified} itself ("
                            + ", ".join(leaf.incoming_foreign_keys) + ")")
        problems += [f"partition {qualified} has its own constraint {r[0]}"
                     for r in connection.execute(_LEAF_CONSTRAINTS, {"oid": leaf.oid})]
        problems += [f"partition {qualified} has its own trigger {t.name}" for t in leaf.triggers]
        indexes = []
        for index_name, parent_index in connection.execute(_LEAF_INDEXES, {"oid": leaf.oid}):
            if parent_index not in numbers:
                problems.append(f"partition {qualified} has its own index {index_name} (not one of {info.name}'s)")
                continue
            m = numbers[parent_index]
            indexes.append({"parent": parent_index, "name": index_name, "temp": f"online_{token}_p{n}_i{m}",
                            "old": f"old_{token}_p{n}_i{m}"})
        unattached = sorted(set(numbers) - {i["parent"] for i in indexes})
        problems += [f"partition {qualified} has no index attached to {i}" for i in unattached]
        archive = fit(name, f"_online_{token}")
        if archive in archived:
            archive = fit(name, f"_online_{token}_{n}")
        archived.add(archive)
        leaves.append({
            "schema": schema, "name": name, "bound": bound, "temp": f"online_{token}_p{n}",
            "old": f"old_{token}_p{n}", "archive": archive, "comment": leaf.comment, "owner": leaf.owner,
            "grants": [asdict(g) for g in leaf.grants], "indexes": indexes,
        })
        for new_name in (f"online_{token}_p{n}", f"old_{token}_p{n}", *[i["temp"] for i in indexes],
                         *[i["old"] for i in indexes]):
            if relation_exists(connection, schema, new_name):
                problems.append(f"a relation named {schema}.{new_name} is in the way")
    return leaves, problems


def partition_statements(design: Mapping[str, Any]) -> list[sql.Composable]:
    """The source's partitions on the new table (under temporary names), each with its indexes made before the
    parent's so that the parent's adopt them; comments, grants and owner as the source's partitions have them."""
    info = source_info(design)
    by_name = {i.name: i for i in info.indexes}
    new = _new(design)
    out: list[sql.Composable] = []
    for leaf in design["leaves"]:
        target = sql.Identifier(leaf["schema"], leaf["temp"])
        # pg_get_expr of the bound: "FOR VALUES FROM ('2026-11-01 00:00:00+00') TO (...)" or "DEFAULT".
        out.append(sql.SQL("CREATE TABLE {} PARTITION OF {} {}").format(target, new, sql.SQL(leaf["bound"])))
        for entry in leaf["indexes"]:
            out.append(_index_statement(by_name[entry["parent"]], target, sql.Identifier(entry["temp"])))
        if leaf["comment"] is not None:
            out.append(sql.SQL("COMMENT ON TABLE {} IS {}").format(target, sql.Literal(leaf["comment"])))
        out += _grants([Grant(**g) for g in leaf["grants"]], f"{leaf['schema']}.{leaf['name']}", target)
        if leaf["owner"] != design["run_as"]:
            out.append(sql.SQL("ALTER TABLE {} OWNER TO {}").format(target, sql.Identifier(leaf["owner"])))
    return out


def _partitions_unchanged(design: Mapping[str, Any]) -> sql.Composable:
    """Under the cut-over's lock: fail, naming the table, if its partitions are not those the change copies."""
    expected = sorted(f"{leaf['schema']}.{leaf['name']} {leaf['bound']}" for leaf in design["leaves"])
    qualified = sql.Identifier(design["schema"], design["table"]).as_string(None)
    return sql.SQL(
        "DO $agentdb$ BEGIN IF ARRAY(SELECT x.p FROM (SELECT n.nspname || '.' || c.relname || ' ' || "
        "pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS p FROM pg_catalog.pg_inherits i "
        "JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE i.inhparent = {}::regclass) AS x ORDER BY x.p COLLATE \"C\") IS DISTINCT FROM {}::text[] THEN "
        "RAISE EXCEPTION 'the partitions of % changed since the change was planned (attached, detached or "
        "renamed); put them back and resume, or abort the change', {}; END IF; END $agentdb$"
    ).format(sql.Literal(qualified), sql.Literal(expected), sql.Literal(f"{design['schema']}.{design['table']}"))


def partitioned_foreign_key_steps(design: Mapping[str, Any], leaves: Sequence[tuple[str, str]]) -> list[Step]:
    """The source's foreign keys on a new partitioned table whose partitions are ``leaves`` (schema, name): NOT
    VALID on each partition, validated one partition at a time, then added on the parent, which adopts the
    partitions' valid constraints without scanning (PostgreSQL 15 and 16 cannot add a NOT VALID foreign key to a
    partitioned table); then ANALYZE."""
    schema = design["schema"]
    new = _new(design)
    new_name = f"{schema}.{design['new_table']}"
    info = source_info(design)
    steps: list[Step] = []
    for fk in info.foreign_keys:
        definition = sql.SQL(fk_definition(fk))
        # One partition per transaction: the lock on a partition (which the capture trigger writes)
        # and on the referenced table is held for one catalogue change only.
        for leaf_schema, leaf in leaves:
            steps.append(Step(
                f"add foreign key {fk.name} NOT VALID to partition {leaf_schema}.{leaf}",
                (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
                    sql.Identifier(leaf_schema, leaf), sql.Identifier(fk.name), definition),),
                locks=(f"SHARE ROW EXCLUSIVE on {leaf_schema}.{leaf} and {fk.referenced} (catalogue only)",),
                contended=True,
            ))
        for leaf_schema, leaf in leaves:
            steps.append(Step(
                f"validate foreign key {fk.name} on partition {leaf_schema}.{leaf}",
                (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                    sql.Identifier(leaf_schema, leaf), sql.Identifier(fk.name)),),
                locks=(f"SHARE UPDATE EXCLUSIVE on {leaf_schema}.{leaf} (reads and writes go on)",
                       f"ROW SHARE on {fk.referenced}"),
            ))
        steps.append(Step(
            f"add foreign key {fk.name} to {new_name}, adopting the partitions' validated constraints",
            (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(new, sql.Identifier(fk.name), definition),),
            locks=(f"SHARE ROW EXCLUSIVE on {new_name} and {fk.referenced} (no scan: every partition already "
                   "has a valid equal constraint)",),
            contended=True,
        ))
    steps.append(Step(
        f"ANALYZE {new_name} so the planner knows the new table at cut-over",
        (sql.SQL("ANALYZE {}").format(new),),
        locks=(f"SHARE UPDATE EXCLUSIVE on {new_name} (reads and writes go on)",),
    ))
    return steps


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
    leaves = design.get("leaves") or []
    statements: list[sql.Composable] = [_partitions_unchanged(design)] if leaves else []
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
    for leaf in leaves:
        statements.append(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(leaf["schema"], leaf["name"]), sql.Identifier(leaf["old"])))
        statements += [sql.SQL("ALTER INDEX {} RENAME TO {}").format(
            sql.Identifier(leaf["schema"], entry["name"]), sql.Identifier(entry["old"])) for entry in leaf["indexes"]]
    statements.append(sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, sql.Identifier(table)))
    for entry in design["indexes"]:
        statements.append(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
            sql.Identifier(schema, entry["temp"]), sql.Identifier(entry["name"])))
    for entry in design["sequences"]:
        statements.append(sql.SQL("ALTER SEQUENCE {} RENAME TO {}").format(
            sql.Identifier(schema, entry["temp"]), sql.Identifier(entry["name"])))
    for leaf in leaves:
        statements.append(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(leaf["schema"], leaf["temp"]), sql.Identifier(leaf["name"])))
        statements += [sql.SQL("ALTER INDEX {} RENAME TO {}").format(
            sql.Identifier(leaf["schema"], entry["temp"]), sql.Identifier(entry["name"])) for entry in leaf["indexes"]]
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
            ("check that the partitions are those copied, " if leaves else "")
            + "move the identity sequence, drop the capture, swap the names of tables, "
            + ("partitions, " if leaves else "") + "indexes and sequences, recreate the source's triggers on the "
            "new table",
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
                *[statement for leaf in design.get("leaves") or [] for statement in (
                    sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                        sql.Identifier(leaf["schema"], leaf["old"]), sql.Identifier(ARCHIVE_SCHEMA)),
                    sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                        sql.Identifier(ARCHIVE_SCHEMA, leaf["old"]), sql.Identifier(leaf["archive"])))],
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
    leaves = design.get("leaves") or []
    return {
        "tables": [f"{schema}.{design['new_table']}", f"{schema}.{design['old_table']}",
                   *[f"{leaf['schema']}.{leaf[which]}" for leaf in leaves for which in ("temp", "old")]],
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
