"""Managed partitions are expected, not schema drift.

The schema is declared once, as SQLAlchemy Core tables (:mod:`agentdb.schema`):
a partitioned table is declared as its parent only.  Alembic's autogenerate
compares that declaration with the database, where every partition is a table
of its own that the declaration does not know, so each would come out as a
``remove_table``.  :func:`managed_partitions` reads, once, which relations
agentdb manages; its :meth:`~ManagedPartitions.include_name` and
:meth:`~ManagedPartitions.include_object` are the predicates for
``context.configure(include_name=..., include_object=...)``.

Managed: the partitions (the DEFAULT one included) of every table registered in
``agentdb.partitioned_tables``, the standalone tables that maintenance is
filling to attach, and tables carrying a registered parent's month-partition
name (``<table>_pYYYYMM``, left by a retention that only detaches).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from agentdb.partitions import naming
from agentdb.partitions._sql import Conn, one
from agentdb.partitions.catalog import managed_tables, partitions_of

__all__ = ["ManagedPartitions", "is_managed_partition", "managed_partitions"]


@dataclass(frozen=True)
class ManagedPartitions:
    """The relations agentdb manages as partitions, as ``(schema, name)`` pairs; a snapshot of the catalogue."""

    relations: frozenset[tuple[str, str]]
    #: ``(schema, parent table)`` of every managed parent: a name following its partition naming is managed too.
    parents: frozenset[tuple[str, str]]
    #: The schema a name without one is in (the connection's ``current_schema()``).
    default_schema: str = "public"

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        schema, name = item
        if (schema, name) in self.relations:
            return True
        return any(
            schema == parent_schema and (
                naming.parse_partition_name(parent, name) is not None or name == naming.default_partition_name(parent)
            )
            for parent_schema, parent in self.parents
        )

    def is_managed(self, name: str | None, schema: str | None = None) -> bool:
        """Whether ``schema.name`` (``schema`` None: the default schema) is a managed partition."""
        return name is not None and (schema or self.default_schema, name) in self

    def include_name(self, name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
        """Alembic ``include_name``: leave managed partitions (and their columns, indexes, constraints) out."""
        if type_ == "schema":
            return True
        if type_ == "table":
            return not self.is_managed(name, parent_names.get("schema_name"))
        table = parent_names.get("table_name")
        return not self.is_managed(table, parent_names.get("schema_name")) if table else True

    def include_object(self, obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        """Alembic ``include_object``: the same rule for objects already reflected."""
        if type_ == "table":
            return not self.is_managed(name, getattr(obj, "schema", None))
        table = getattr(obj, "table", None)
        if table is not None and getattr(table, "name", None):
            return not self.is_managed(table.name, getattr(table, "schema", None))
        return True


def managed_partitions(connection: Conn) -> ManagedPartitions:
    """Read from the catalogue which relations are managed partitions (an empty set without a catalogue)."""
    relations: set[tuple[str, str]] = set()
    parents: set[tuple[str, str]] = set()
    for table in managed_tables(connection):
        parents.add((table.schema, table.table))
        if table.oid is not None:
            relations.update((p.schema, p.name) for p in partitions_of(connection, table.oid))
    default_schema = one(connection, sql.SQL("SELECT current_schema()")) or "public"
    return ManagedPartitions(frozenset(relations), frozenset(parents), str(default_schema))


def is_managed_partition(connection: Conn, name: str, schema: str | None = None) -> bool:
    """Whether the relation ``schema.name`` is a partition agentdb manages (reads the catalogue)."""
    return managed_partitions(connection).is_managed(name, schema)

