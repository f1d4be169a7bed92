"""Autogenerate beyond the tables: the entities of :mod:`agentdb.schema.entities` against the live database.

:func:`options` goes into ``context.configure`` (see
:func:`agentdb.runtime.environment.configure_options`).  When Alembic
compares (``agentdb new --autogenerate``, ``alembic revision --autogenerate``,
``compare_metadata``), three comparators registered here and alembic_utils'
own run in this order:

1. *first* -- register the current declaration with alembic_utils, read which
   tables and columns exist in ``public`` and which privileges agentdb's roles
   hold there, and revoke (``op.drop_entity``) each grant that is not declared
   as it is;
2. alembic_utils, then Alembic's table comparison -- functions, triggers,
   views and policies are simulated and compared by PostgreSQL's rendering of
   them (``CREATE OR REPLACE`` / ``DROP`` of whatever differs), then tables;
3. *last* -- grant (``op.create_entity``) each declared grant the database does
   not hold as declared, and create the triggers and policies of tables the
   same migration creates.

Why grants are compared here rather than by alembic_utils: its
``PGGrantTable`` comparison simulates every grant and reads
``information_schema`` several times per grant (about 35 s for agentdb's 142
grants), and the simulation fails outright for a table or column the same
migration adds.  Here the privileges are read once from ``pg_class.relacl`` and
``pg_attribute.attacl``, and a changed grant becomes a revoke *before* the
table operations and a grant *after* them, so adding or dropping a column or a
table comes out in the right order in both directions.  The operations are
still alembic_utils' (``PGGrantTable`` with ``op.create_entity`` /
``op.drop_entity``), so a generated migration imports alembic_utils, never
agentdb.

The partitions partition maintenance manages (``analytics_p202611``, the
DEFAULT one) exist in the database and in no model: ``include_name`` and
``include_object`` leave them out, so they are expected, not drift.

Triggers and policies on a table the migration creates cannot be simulated
either (their table does not exist yet): ``include_object`` holds them back
from alembic_utils and step 3 creates them after the table.

Role names are those of ``AGENTDB_ROLE_PREFIX`` when autogenerate runs, and a
generated migration names them literally.

.. warning::
   alembic_utils *simulates* each function, trigger and view to read
   PostgreSQL's rendering of it: inside a savepoint it rolls back, it drops
   (``CASCADE``) and re-creates it.  Dropping a trigger function takes an
   ``ACCESS EXCLUSIVE`` lock on every table it is attached to (``users``,
   ``consent``, ``audit_log``...) until that savepoint rolls back, and no
   ``lock_timeout`` is set on this read-only path: run autogenerate against a
   development database, not a busy one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import comparators
from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import UpgradeOps
from alembic.util import DispatchPriority
from alembic_utils.pg_function import PGFunction
from alembic_utils.pg_grant_table import PGGrantTable
from alembic_utils.pg_policy import PGPolicy
from alembic_utils.pg_trigger import PGTrigger
from alembic_utils.pg_view import PGView
from alembic_utils.replaceable_entity import ReplaceableEntity, register_entities, registry
from alembic_utils.reversible_op import CreateOp, DropOp

from agentdb.schema import entities

__all__ = ["ENTITY_TYPES", "OPTION", "Comparison", "options"]

#: The kinds of entity alembic_utils compares; grants are compared by this module, anything else is ignored.
ENTITY_TYPES: tuple[type[ReplaceableEntity], ...] = (PGFunction, PGTrigger, PGView, PGPolicy)
#: The ``context.configure`` key under which :func:`options` passes the :class:`Comparison`.
OPTION = "agentdb_entities"
_SCHEMA = "public"

_RELATIONS = sa.text("""
SELECT c.relname, a.attname
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = :schema)
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
""")

# A table privilege that can be held per column (SELECT, INSERT, UPDATE, REFERENCES) counts for every column,
# as in information_schema.column_privileges; DELETE, TRUNCATE and TRIGGER are table privileges only.  Those
# seven on tables and views are what PGGrantTable expresses; sequences (identity columns need no grant) and
# newer privileges (MAINTAIN, PostgreSQL 17) are not compared.
_PRIVILEGES = sa.text("""
SELECT c.relname, g.rolname, p.privilege_type, p.is_grantable, col.attname
FROM pg_catalog.pg_class AS c
CROSS JOIN LATERAL aclexplode(c.relacl) AS p
JOIN pg_catalog.pg_roles AS g ON g.oid = p.grantee
LEFT JOIN pg_catalog.pg_attribute AS col
       ON col.attrelid = c.oid AND col.attnum > 0 AND NOT col.attisdropped
      AND p.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = :schema)
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND p.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES', 'DELETE', 'TRUNCATE', 'TRIGGER')
  AND g.rolname = ANY(:roles)
UNION
SELECT c.relname, g.rolname, p.privilege_type, p.is_grantable, col.attname
FROM pg_catalog.pg_attribute AS col
JOIN pg_catalog.pg_class AS c ON c.oid = col.attrelid
CROSS JOIN LATERAL aclexplode(col.attacl) AS p
JOIN pg_catalog.pg_roles AS g ON g.oid = p.grantee
WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = :schema)
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND col.attnum > 0 AND NOT col.attisdropped
  AND g.rolname = ANY(:roles)
""")


def _key(grant: PGGrantTable) -> tuple[str, str, str]:
    return grant.table, grant.role, str(grant.grant)


def _same(a: PGGrantTable, b: PGGrantTable) -> bool:
    return sorted(a.columns) == sorted(b.columns) and a.with_grant_option == b.with_grant_option


@dataclass
class Comparison:
    """One autogenerate comparison: the role prefix, and what the first comparator found in the database."""

    prefix: str | None = None
    #: table or view of ``public`` -> its columns; ``None`` until the comparison starts.
    existing: dict[str, set[str]] | None = None
    declared_grants: list[PGGrantTable] = field(default_factory=list)
    database_grants: dict[tuple[str, str, str], PGGrantTable] = field(default_factory=dict)
    #: Triggers and policies of tables the migration creates, created by the last comparator.
    pending: list[ReplaceableEntity] = field(default_factory=list)
    #: The partitions partition maintenance manages (read when the comparison starts): expected, not drift.
    partitions: Any = None

    @property
    def roles(self) -> list[str]:
        return sorted(entities.role_names(self.prefix).values())

    def include_name(self, name: str | None, type_: str, parent_names: Any) -> bool:
        """Alembic's ``include_name``: leave out the managed partitions (``analytics_p202611``...) and theirs."""
        return self.partitions is None or bool(self.partitions.include_name(name, type_, parent_names))

    def include_object(self, obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        """Alembic's ``include_object``: hold back a trigger or policy whose table does not exist yet; leave out
        managed partitions."""
        if self.partitions is not None and not self.partitions.include_object(obj, name, type_, reflected,
                                                                              compare_to):
            return False
        if reflected or self.existing is None or not isinstance(obj, PGTrigger | PGPolicy):
            return True
        schema, _, table = obj.on_entity.partition(".")
        if schema == _SCHEMA and table not in self.existing:
            self.pending.append(obj)
            return False
        return True

    def start(self, connection: sa.Connection) -> None:
        """Register the declaration with alembic_utils and read the database's tables, privileges and managed
        partitions (this runs first, before Alembic reflects the tables)."""
        declared = [*entities.functions(), *entities.triggers(), *entities.views()]
        registry.clear()  # type: ignore[no-untyped-call]
        register_entities(declared, entity_types=ENTITY_TYPES)
        self.read(connection)

    def read(self, connection: sa.Connection) -> None:
        """Read the declared grants and the database's tables and privileges: catalogue reads only.

        The health check (:mod:`agentdb.health`) compares grants with this alone, in a read-only transaction.
        """
        from agentdb.partitions import managed_partitions

        self.partitions = managed_partitions(connection)
        self.pending = []
        self.declared_grants = entities.grants(self.prefix)
        self.existing = defaultdict(set)
        for table, column in connection.execute(_RELATIONS, {"schema": _SCHEMA}):
            if not self.partitions.is_managed(table, _SCHEMA):
                self.existing[table].add(column)
        self.existing = dict(self.existing)
        grouped: dict[tuple[str, str, str], tuple[set[str], bool]] = {}
        for table, role, privilege, grantable, column in connection.execute(
            _PRIVILEGES, {"schema": _SCHEMA, "roles": self.roles}
        ):
            if self.partitions.is_managed(table, _SCHEMA):  # a partition's grants follow its parent's
                continue
            columns, all_grantable = grouped.get((table, role, privilege), (set(), True))
            if column is not None:
                columns.add(column)
            grouped[(table, role, privilege)] = (columns, all_grantable and bool(grantable))
        self.database_grants = {
            key: PGGrantTable(schema=_SCHEMA, table=key[0], role=key[1], grant=key[2], columns=sorted(columns) or None,
                              with_grant_option=grantable)
            for key, (columns, grantable) in grouped.items()
        }

    def revokes(self) -> list[PGGrantTable]:
        """Grants the database holds that are not declared as they are, in a stable order."""
        declared = {_key(g): g for g in self.declared_grants}
        return [
            held for key, held in sorted(self.database_grants.items())
            if key not in declared or not _same(declared[key], held)
        ]

    def grants(self) -> list[PGGrantTable]:
        """Declared grants the database does not hold as declared."""
        return [
            wanted for wanted in self.declared_grants
            if _key(wanted) not in self.database_grants or not _same(wanted, self.database_grants[_key(wanted)])
        ]


def options(prefix: str | None = None) -> dict[str, Any]:
    """The ``context.configure`` options of agentdb's autogenerate (harmless when nothing is compared).

    ``include_schemas`` stays off: the ``agentdb`` and ``agentdb_archive``
    schemas are agentdb's bookkeeping, not models.
    """
    comparison = Comparison(prefix)
    return {"include_schemas": False, "include_name": comparison.include_name,
            "include_object": comparison.include_object, OPTION: comparison}


def _comparison(autogen_context: AutogenContext) -> Comparison | None:
    found = autogen_context.opts.get(OPTION)
    return found if isinstance(found, Comparison) else None


@comparators.dispatch_for("schema", priority=DispatchPriority.FIRST)
def _revoke_first(autogen_context: AutogenContext, upgrade_ops: UpgradeOps, schemas: Any) -> None:
    comparison = _comparison(autogen_context)
    if comparison is None or autogen_context.connection is None:
        return
    comparison.start(autogen_context.connection)
    upgrade_ops.ops.extend(DropOp(grant) for grant in comparison.revokes())


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def _create_last(autogen_context: AutogenContext, upgrade_ops: UpgradeOps, schemas: Any) -> None:
    comparison = _comparison(autogen_context)
    if comparison is None or comparison.existing is None:
        return
    upgrade_ops.ops.extend(CreateOp(entity) for entity in comparison.pending)
    upgrade_ops.ops.extend(CreateOp(grant) for grant in comparison.grants())
