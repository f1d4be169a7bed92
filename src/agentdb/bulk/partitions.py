"""Month partitions an import needs, created before its rows are loaded -- never left to the DEFAULT partition.

Names and bounds follow the partition contract (:mod:`agentdb.partitions.naming`:
``<table>_pYYYYMM``, UTC months).  A month already covered by a partition is
left alone; a missing one is made by partition maintenance itself
(:func:`agentdb.partitions.create_month_partitions`): the same locks in the
same order under a short ``lock_timeout``, retried, the maintenance lock held
so the two never make the same month at once, rows of the month moved out of
the DEFAULT partition first (no scan under ACCESS EXCLUSIVE), and the run
recorded in the run history.  It works on its own connection and commits each
month before the load; the import's connection must hold no lock meanwhile.
The partitions stay if the import is then refused: empty, as maintenance
would have made them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from agentdb.bulk.catalog import TableInfo
from agentdb.errors import BulkFailed, PartitionMaintenanceFailed, PartitionTableInvalid
from agentdb.partitions import create_month_partitions, naming, partitions_of

__all__ = ["ensure_month_partitions", "missing_months"]


def missing_months(connection: sa.Connection, info: TableInfo, months: list[datetime]) -> list[datetime]:
    """The months (UTC starts) among ``months`` that no partition of ``info`` covers, in order.

    A month only partly covered by some other partition cannot get a month partition: that is an error.
    """
    parts = [p for p in partitions_of(connection, info.oid) if not p.is_default]
    missing = []
    for month in sorted(set(months)):
        start, end = naming.month_bounds(month)
        covering = [p for p in parts if (p.lower is None or p.lower <= start) and (p.upper is None or p.upper >= end)]
        if covering:
            continue
        overlapping = [p for p in parts if (p.lower is None or p.lower < end) and (p.upper is None or p.upper > start)]
        if overlapping:
            raise BulkFailed(info.qualified, "creating partitions", None,
                             f"month {start:%Y-%m} is partly covered by partition {overlapping[0].qualified}, which "
                             "is not a month partition: rows of that month have nowhere to go")
        missing.append(start)
    return missing


def ensure_month_partitions(connection: sa.Connection, info: TableInfo, months: list[datetime], *,
                            database_url: str | None, data_dir: str | Path | None,
                            lock_timeout: float = 1.0) -> list[str]:
    """Create the missing month partitions of ``info`` for ``months``; the names created, in month order.

    ``connection`` (the import's) only reads the catalogue and is left with no transaction open.
    """
    if connection.in_transaction():
        connection.commit()
    missing = missing_months(connection, info, months)
    connection.commit()
    if not missing:
        return []
    try:
        report = create_month_partitions(info.qualified, missing, database_url=database_url, data_dir=data_dir,
                                         lock_timeout=lock_timeout, lock_wait=30.0)
    except (PartitionMaintenanceFailed, PartitionTableInvalid) as exc:
        raise BulkFailed(info.qualified, "creating partitions", None, exc.message,
                         hint="nothing was loaded") from None
    return [name for table in report.tables for name in table.created]
