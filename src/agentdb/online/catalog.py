"""What a table is, read from the PostgreSQL catalogue.

A kind of change that rebuilds a table (a shadow copy swapped in at cut-over)
must carry over everything the table has: columns with their defaults and
identity, indexes, constraints, foreign keys, triggers, grants, comments,
owner.  :func:`describe` reads all of it once; :meth:`TableInfo.fingerprint`
condenses it so that the cut-over can refuse to swap a table whose definition
changed while its rows were being copied.

Names given by a user are looked up here (:func:`find_table`,
:meth:`TableInfo.column`) and refused when the catalogue does not know them;
only names that came back from the catalogue are ever put into SQL.

Definitions are read with ``search_path`` set to ``pg_catalog`` only (the
engine's sessions do that), so ``pg_get_indexdef``, ``pg_get_constraintdef``
and ``pg_get_triggerdef`` qualify every table, function and type they name and
the text means the same thing whichever session replays it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from agentdb.errors import OnlineChangeRefused

__all__ = [
    "ColumnInfo",
    "ConstraintInfo",
    "Grant",
    "IndexInfo",
    "SequenceInfo",
    "TableInfo",
    "TriggerInfo",
    "as_json",
    "describe",
    "find_table",
    "from_json",
    "relation_exists",
]


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    not_null: bool
    identity: str
    generated: str
    default: str | None
    comment: str | None


@dataclass(frozen=True)
class IndexInfo:
    name: str
    #: ``pg_get_indexdef`` from `` USING `` on: method, columns, INCLUDE, WITH, WHERE.
    method_and_columns: str
    unique: bool
    #: The constraint the index implements (``p`` or ``u``), if any, with its ``pg_get_constraintdef``.
    constraint_type: str | None
    constraint_def: str | None
    comment: str | None
    columns: tuple[str, ...]
    constraint_comment: str | None = None


@dataclass(frozen=True)
class SequenceInfo:
    """An identity column's sequence and its options (``pg_sequence``)."""

    name: str
    type: str
    start: int
    increment: int
    minimum: int
    maximum: int
    cache: int
    cycle: bool


@dataclass(frozen=True)
class ConstraintInfo:
    name: str
    type: str
    definition: str
    validated: bool
    comment: str | None
    #: For a foreign key: the referenced table, schema-qualified.
    referenced: str | None = None


@dataclass(frozen=True)
class TriggerInfo:
    name: str
    definition: str
    #: ``pg_trigger.tgenabled``: O (origin, the default), D (disabled), R (replica), A (always).
    enabled: str
    row_level: bool
    transition_tables: bool


@dataclass(frozen=True)
class Grant:
    grantee: str
    privilege: str
    grantable: bool
    column: str | None = None


@dataclass(frozen=True)
class TableInfo:
    oid: int
    schema: str
    name: str
    #: ``r`` plain table, ``p`` partitioned table.
    relkind: str
    persistence: str
    owner: str
    comment: str | None
    columns: tuple[ColumnInfo, ...]
    indexes: tuple[IndexInfo, ...]
    constraints: tuple[ConstraintInfo, ...]
    triggers: tuple[TriggerInfo, ...]
    grants: tuple[Grant, ...]
    #: Identity sequences by column name (sequences live in the table's schema).
    sequences: dict[str, SequenceInfo] = field(default_factory=dict)
    #: Obstacles found in the catalogue, each a short phrase (views, rules, policies, inheritance...).
    dependents: tuple[str, ...] = ()
    incoming_foreign_keys: tuple[str, ...] = ()
    #: For a partitioned table: ``pg_get_partkeydef`` and its partitions (name, bound expression).
    partition_key: str | None = None
    partitions: tuple[tuple[str, str], ...] = ()
    #: Set when the table is itself a partition or an inheritance child.
    parent: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> ColumnInfo:
        """The column called ``name``; refuses a name the catalogue does not know."""
        for column in self.columns:
            if column.name == name:
                return column
        raise OnlineChangeRefused(self.qualified, f"it has no column {name!r}")

    @property
    def primary_key(self) -> IndexInfo | None:
        return next((i for i in self.indexes if i.constraint_type == "p"), None)

    @property
    def foreign_keys(self) -> tuple[ConstraintInfo, ...]:
        return tuple(c for c in self.constraints if c.type == "f")

    def fingerprint(self, *, ignore_triggers_prefix: str = "agentdb_online_") -> str:
        """sha256 of the definition (not the name or oid): changes when a column, index, constraint,
        trigger (other than the engine's own), grant, comment or the owner changes."""
        data = asdict(self)
        for key in ("oid", "name", "sequences", "partitions", "dependents"):
            data.pop(key, None)
        data["triggers"] = [t for t in data["triggers"] if not t["name"].startswith(ignore_triggers_prefix)]
        for trigger in data["triggers"]:
            # The definition names the table, which the swap renames.
            trigger.pop("definition")
        data["indexes"] = sorted((i["method_and_columns"], i["constraint_def"] or "") for i in data["indexes"])
        encoded = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(encoded).hexdigest()


_FIND = sa.text(
    "SELECT c.oid, n.nspname, c.relname, c.relkind::text FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = :schema AND c.relname = :name"
)


def find_table(connection: sa.Connection, name: str, schema: str | None = None) -> tuple[str, str]:
    """Resolve a user-given table name (``table`` or ``schema.table``) against the catalogue.

    Returns ``(schema, table)`` exactly as the catalogue spells them; raises
    :class:`OnlineChangeRefused` when there is no such table.  The name is
    compared as a value, never parsed as SQL.
    """
    if schema is None:
        schema, _, table = name.rpartition(".")
        schema = schema or "public"
    else:
        table = name
    found = connection.execute(_FIND, {"schema": schema, "name": table}).first()
    if found is None:
        raise OnlineChangeRefused(f"{schema}.{table}", "no such table in the database")
    if found[3] not in ("r", "p"):
        raise OnlineChangeRefused(f"{schema}.{table}", "it is not a table")
    return str(found[1]), str(found[2])


def relation_exists(connection: sa.Connection, schema: str, name: str) -> bool:
    return connection.execute(_FIND, {"schema": schema, "name": name}).first() is not None


_TABLE = sa.text(
    "SELECT c.oid, c.relkind::text, c.relpersistence::text, pg_catalog.pg_get_userbyid(c.relowner), "
    "pg_catalog.obj_description(c.oid, 'pg_class'), c.relrowsecurity, c.relhasrules, "
    "CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END, c.relispartition "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = :schema AND c.relname = :name"
)
_COLUMNS = sa.text(
    "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity::text, "
    "a.attgenerated::text, pg_catalog.pg_get_expr(d.adbin, d.adrelid), "
    "pg_catalog.col_description(a.attrelid, a.attnum) "
    "FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
    "WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)
_INDEXES = sa.text(
    "SELECT ic.relname, pg_catalog.pg_get_indexdef(i.indexrelid), i.indisunique, con.contype::text, "
    "pg_catalog.pg_get_constraintdef(con.oid), pg_catalog.obj_description(i.indexrelid, 'pg_class'), "
    "ARRAY(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n) "
    "      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n), "
    "i.indisvalid, pg_catalog.obj_description(con.oid, 'pg_constraint') "
    "FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid "
    "LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid "
    "  AND con.contype IN ('p', 'u', 'x') "
    "WHERE i.indrelid = :oid ORDER BY ic.relname"
)
_CONSTRAINTS = sa.text(
    "SELECT con.conname, con.contype::text, pg_catalog.pg_get_constraintdef(con.oid), con.convalidated, "
    "pg_catalog.obj_description(con.oid, 'pg_constraint'), "
    "CASE WHEN con.contype = 'f' THEN pg_catalog.format('%I.%I', fn.nspname, fc.relname) END "
    "FROM pg_catalog.pg_constraint con "
    "LEFT JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid "
    "LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace "
    "WHERE con.conrelid = :oid AND con.contype IN ('c', 'f', 'x', 't') ORDER BY con.conname"
)
_TRIGGERS = sa.text(
    "SELECT t.tgname, pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled::text, (t.tgtype & 1) = 1, "
    "t.tgoldtable IS NOT NULL OR t.tgnewtable IS NOT NULL, t.tgconstraint <> 0 "
    "FROM pg_catalog.pg_trigger t WHERE t.tgrelid = :oid AND NOT t.tgisinternal "
    "AND (t.tgparentid = 0) ORDER BY t.tgname"
)
_GRANTS = sa.text(
    "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END, "
    "a.privilege_type, a.is_grantable, NULL::text "
    "FROM pg_catalog.pg_class c, LATERAL aclexplode(c.relacl) a "
    "WHERE c.oid = :oid AND a.grantee <> c.relowner "
    "UNION ALL "
    "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END, "
    "a.privilege_type, a.is_grantable, att.attname "
    "FROM pg_catalog.pg_attribute att JOIN pg_catalog.pg_class c ON c.oid = att.attrelid, "
    "LATERAL aclexplode(att.attacl) a "
    "WHERE att.attrelid = :oid AND att.attnum > 0 AND NOT att.attisdropped AND a.grantee <> c.relowner "
    "ORDER BY 4 NULLS FIRST, 1, 2"
)
_SEQUENCES = sa.text(
    "SELECT a.attname, s.relname, pg_catalog.format_type(q.seqtypid, NULL), q.seqstart, q.seqincrement, "
    "q.seqmin, q.seqmax, q.seqcache, q.seqcycle "
    "FROM pg_catalog.pg_attribute a "
    "JOIN pg_catalog.pg_depend d ON d.refobjid = a.attrelid AND d.refobjsubid = a.attnum "
    "  AND d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'i' "
    "JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
    "JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid "
    "WHERE a.attrelid = :oid AND a.attidentity <> '' AND NOT a.attisdropped"
)
_DEPENDENTS = sa.text(
    # Views and materialized views whose rules read the table; they bind by oid and would keep
    # pointing at the old table after a swap.
    "SELECT DISTINCT 'view ' || pg_catalog.format('%I.%I', vn.nspname, v.relname) "
    "FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid "
    "JOIN pg_catalog.pg_class v ON v.oid = r.ev_class JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace "
    "WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass "
    "AND d.refobjid = :oid AND v.oid <> :oid "
    "UNION ALL SELECT 'row-level security policy ' || pol.polname FROM pg_catalog.pg_policy pol "
    "WHERE pol.polrelid = :oid "
    "UNION ALL SELECT 'publication ' || p.pubname FROM pg_catalog.pg_publication_rel pr "
    "JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid WHERE pr.prrelid = :oid "
    "UNION ALL SELECT 'inheritance child ' || i.inhrelid::regclass::text FROM pg_catalog.pg_inherits i "
    "JOIN pg_catalog.pg_class c ON c.oid = :oid WHERE i.inhparent = :oid AND c.relkind <> 'p' "
    "UNION ALL SELECT 'extended statistics ' || s.stxname FROM pg_catalog.pg_statistic_ext s "
    "WHERE s.stxrelid = :oid"
)
_INCOMING = sa.text(
    "SELECT pg_catalog.format('%I on %s', con.conname, con.conrelid::regclass) FROM pg_catalog.pg_constraint con "
    "WHERE con.confrelid = :oid AND con.contype = 'f' AND con.conparentid = 0 AND con.conrelid <> :oid "
    "ORDER BY 1"
)
_PARTITIONS = sa.text(
    "SELECT c.relname, pg_catalog.pg_get_expr(c.relpartbound, c.oid) FROM pg_catalog.pg_inherits i "
    "JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = :oid ORDER BY c.relname"
)
_PARENT = sa.text(
    "SELECT i.inhparent::regclass::text FROM pg_catalog.pg_inherits i WHERE i.inhrelid = :oid LIMIT 1"
)


def describe(connection: sa.Connection, schema: str, name: str) -> TableInfo:
    """Everything about ``schema.name`` that a rebuild must carry over (see the module docstring)."""
    row = connection.execute(_TABLE, {"schema": schema, "name": name}).first()
    if row is None:
        raise OnlineChangeRefused(f"{schema}.{name}", "no such table in the database")
    oid = int(row[0])
    params = {"oid": oid}
    columns = tuple(
        ColumnInfo(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6]) for r in connection.execute(_COLUMNS, params)
    )
    indexes = []
    for r in connection.execute(_INDEXES, params):
        definition = str(r[1])
        marker = " USING "
        at = definition.find(marker)
        if at < 0 or not r[7]:
            raise OnlineChangeRefused(f"{schema}.{name}", f"index {r[0]} is invalid or cannot be read")
        indexes.append(IndexInfo(
            name=r[0], method_and_columns=definition[at + len(marker):], unique=bool(r[2]), constraint_type=r[3],
            constraint_def=r[4], comment=r[5], columns=tuple(r[6]), constraint_comment=r[8],
        ))
    constraints = tuple(
        ConstraintInfo(r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in connection.execute(_CONSTRAINTS, params)
    )
    triggers = []
    dependents: list[str] = []
    for r in connection.execute(_TRIGGERS, params):
        if r[5]:
            dependents.append(f"constraint trigger {r[0]}")
            continue
        triggers.append(TriggerInfo(r[0], r[1], r[2], bool(r[3]), bool(r[4])))
    grants = tuple(Grant(r[0], r[1], bool(r[2]), r[3]) for r in connection.execute(_GRANTS, params))
    sequences = {
        str(r[0]): SequenceInfo(str(r[1]), str(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[7]),
                                bool(r[8]))
        for r in connection.execute(_SEQUENCES, params)
    }
    dependents += [str(r[0]) for r in connection.execute(_DEPENDENTS, params)]
    if row[5]:
        dependents.append("row-level security")
    if row[6]:
        dependents.append("rules")
    incoming = tuple(str(r[0]) for r in connection.execute(_INCOMING, params))
    partitions = tuple((str(r[0]), str(r[1])) for r in connection.execute(_PARTITIONS, params)) if row[1] == "p" else ()
    parent = connection.execute(_PARENT, params).scalar()
    return TableInfo(
        oid=oid, schema=schema, name=name, relkind=row[1], persistence=row[2], owner=row[3], comment=row[4],
        columns=columns, indexes=tuple(indexes), constraints=constraints, triggers=tuple(triggers), grants=grants,
        sequences=sequences, dependents=tuple(dependents), incoming_foreign_keys=incoming, partition_key=row[7],
        partitions=partitions, parent=str(parent) if parent else None,
    )


def as_json(info: TableInfo) -> dict[str, Any]:
    """A JSON-able form (for the design stored in the state table)."""
    return asdict(info)


def from_json(data: dict[str, Any]) -> TableInfo:
    """The inverse of :func:`as_json`."""
    values = dict(data)
    values["columns"] = tuple(ColumnInfo(**c) for c in data["columns"])
    values["indexes"] = tuple(IndexInfo(**{**i, "columns": tuple(i["columns"])}) for i in data["indexes"])
    values["constraints"] = tuple(ConstraintInfo(**c) for c in data["constraints"])
    values["triggers"] = tuple(TriggerInfo(**tr) for tr in data["triggers"])
    values["grants"] = tuple(Grant(**g) for g in data["grants"])
    values["sequences"] = {k: SequenceInfo(**s) for k, s in data["sequences"].items()}
    values["dependents"] = tuple(data["dependents"])
    values["incoming_foreign_keys"] = tuple(data["incoming_foreign_keys"])
    values["partitions"] = tuple(tuple(p) for p in data["partitions"])
    return TableInfo(**values)
