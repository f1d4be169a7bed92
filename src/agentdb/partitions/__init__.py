"""Partition maintenance: monthly partitions kept ahead, the DEFAULT partition drained, old months retired.

* :mod:`~agentdb.partitions.naming` -- names and bounds of month partitions (pure, no database);
* :mod:`~agentdb.partitions.catalog` -- ``agentdb.partitioned_tables`` (:func:`register`) and the partitions
  a parent has;
* :mod:`~agentdb.partitions.listing` -- :func:`list_partitions` (``agentdb partitions [TABLE]``);
* :mod:`~agentdb.partitions.maintenance` -- :func:`maintain_partitions` (``agentdb partitions maintain``) and
  :func:`create_month_partitions` (given months, past ones too: what a bulk import needs);
* :mod:`~agentdb.partitions.drift` -- which relations are managed partitions, for Alembic's autogenerate.
"""

from agentdb.partitions.catalog import (
    CATALOG_TABLE,
    ManagedTable,
    Partition,
    ensure_catalog,
    managed_tables,
    partitions_of,
    register,
    unregister,
)
from agentdb.partitions.drift import ManagedPartitions, is_managed_partition, managed_partitions
from agentdb.partitions.listing import PartitionInfo, list_partitions
from agentdb.partitions.maintenance import (
    MaintenanceReport,
    Step,
    TableReport,
    create_month_partitions,
    maintain_partitions,
)
from agentdb.partitions.naming import default_partition_name, month_bounds, partition_name

__all__ = [
    "CATALOG_TABLE",
    "MaintenanceReport",
    "ManagedPartitions",
    "ManagedTable",
    "Partition",
    "PartitionInfo",
    "Step",
    "TableReport",
    "create_month_partitions",
    "default_partition_name",
    "ensure_catalog",
    "is_managed_partition",
    "list_partitions",
    "maintain_partitions",
    "managed_partitions",
    "managed_tables",
    "month_bounds",
    "partition_name",
    "partitions_of",
    "register",
    "unregister",
]
