"""The kinds of online change, one file each, all with the lifecycle of :class:`ChangeKind`.

Table rebuilds (a new table, capture, copy, verify, cut-over): ``partition``,
``unpartition``, ``alter_column_type``.  Changes in place: ``create_index``,
``drop_index`` (CONCURRENTLY), ``add_check``, ``add_foreign_key`` (NOT VALID,
then VALIDATE), ``add_unique`` (a unique index built CONCURRENTLY, then
attached).  Expand/contract (both application versions work until
``complete``): ``add_column``, ``rename_column``, ``split_column``,
``merge_columns``.
"""

from __future__ import annotations

from agentdb.errors import OnlineChangeRefused
from agentdb.online.kinds.add_check import AddCheckKind
from agentdb.online.kinds.add_column import AddColumnKind
from agentdb.online.kinds.add_foreign_key import AddForeignKeyKind
from agentdb.online.kinds.add_unique import AddUniqueKind
from agentdb.online.kinds.alter_column_type import AlterColumnTypeKind
from agentdb.online.kinds.base import ChangeKind, new_token
from agentdb.online.kinds.create_index import CreateIndexKind
from agentdb.online.kinds.drop_index import DropIndexKind
from agentdb.online.kinds.merge_columns import MergeColumnsKind
from agentdb.online.kinds.partition import PartitionKind, UnpartitionKind
from agentdb.online.kinds.rename_column import RenameColumnKind
from agentdb.online.kinds.split_column import SplitColumnKind

__all__ = [
    "KINDS", "AddCheckKind", "AddColumnKind", "AddForeignKeyKind", "AddUniqueKind", "AlterColumnTypeKind",
    "ChangeKind", "CreateIndexKind", "DropIndexKind", "MergeColumnsKind", "PartitionKind", "RenameColumnKind",
    "SplitColumnKind", "UnpartitionKind", "get_kind", "new_token",
]

#: Every kind by name.
KINDS: dict[str, type[ChangeKind]] = {kind.name: kind for kind in (
    PartitionKind, UnpartitionKind, CreateIndexKind, DropIndexKind, AddCheckKind, AddForeignKeyKind, AddUniqueKind,
    AddColumnKind, RenameColumnKind, SplitColumnKind, MergeColumnsKind, AlterColumnTypeKind,
)}


def get_kind(name: str, table: str = "?") -> type[ChangeKind]:
    """The kind called ``name``; refuses an unknown one, naming the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise OnlineChangeRefused(table, f"unknown kind of change {name!r}",
                                  hint="known kinds: " + ", ".join(sorted(KINDS))) from None
