"""``agentdb partitions [TABLE]``: the partitions of a table with their bounds, rows and size."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from psycopg import sql

from agentdb.connection import connect, create_engine, resolve
from agentdb.errors import PartitionTableInvalid
from agentdb.partitions._sql import find_table, one
from agentdb.partitions.catalog import managed_tables, partitions_of
from agentdb.runtime.settings import RunSettings

__all__ = ["PartitionInfo", "list_partitions"]


@dataclass(frozen=True)
class PartitionInfo:
    """One partition: its bounds (UTC), its rows (estimated from the statistics, or counted) and its size."""

    table: str
    partition: str
    #: ``range`` or ``default``.
    kind: str
    #: ``attached``, ``detach pending`` or ``draining`` (being filled from the DEFAULT partition, not attached yet).
    state: str
    lower: datetime | None
    upper: datetime | None
    bounds: str
    #: None when the partition was never analysed and ``exact`` was not asked for.
    rows: int | None
    rows_exact: bool
    size_bytes: int
    #: Whether the parent is in ``agentdb.partitioned_tables`` (maintenance keeps it).
    managed: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table, "partition": self.partition, "kind": self.kind, "state": self.state,
            "lower": self.lower.isoformat() if self.lower else None,
            "upper": self.upper.isoformat() if self.upper else None,
            "bounds": self.bounds, "rows": self.rows, "rows_exact": self.rows_exact, "size_bytes": self.size_bytes,
            "managed": self.managed,
        }


@contextmanager
def _connection(database_url: str | None, data_dir: str | Path | None) -> Iterator[sa.Connection]:
    settings = RunSettings.from_sources({}, {}).merged(
        database_url=database_url, data_dir=str(data_dir) if data_dir else None)
    target = resolve(settings.database_url, settings.data_dir)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            yield connection
    finally:
        engine.dispose()


def list_partitions(
    table: str | None = None,
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    exact: bool = False,
) -> list[PartitionInfo]:
    """The partitions of ``table`` (``"schema.table"`` or ``"table"``), or of every managed table.

    ``table`` must be a partitioned table (it need not be managed).  Rows are
    the planner's estimate (``pg_class.reltuples``) unless ``exact``, which
    counts them: one scan of every partition, under ACCESS SHARE only.
    """
    with _connection(database_url, data_dir) as connection:
        managed = {(m.schema, m.table) for m in managed_tables(connection)}
        if table is not None:
            found = find_table(connection, table)
            if found.relkind != "p":
                raise PartitionTableInvalid(found.qualified, "it is not a partitioned table")
            parents = [(found.schema, found.name, found.oid)]
        else:
            parents = [(m.schema, m.table, m.oid) for m in managed_tables(connection) if m.oid is not None]
        result = []
        for schema, name, oid in parents:
            for p in partitions_of(connection, oid):
                rows = p.rows_estimate
                if exact:
                    rows = int(one(connection, sql.SQL("SELECT count(*) FROM ONLY {}").format(p.ident)))
                result.append(PartitionInfo(
                    table=f"{schema}.{name}", partition=p.qualified, kind="default" if p.is_default else "range",
                    state=p.state, lower=p.lower, upper=p.upper, bounds=p.bounds, rows=rows, rows_exact=exact,
                    size_bytes=p.size_bytes, managed=(schema, name) in managed,
                ))
        connection.rollback()
        return result
