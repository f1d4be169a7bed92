"""The kinds of online change, one file each, all with the lifecycle of :class:`ChangeKind`.

Issue 12 adds, each as one more file here: alter column type (with USING),
add column with default/backfill and NOT NULL via a NOT VALID check, add
CHECK/FK NOT VALID then VALIDATE, unique constraint via a concurrent index,
create/drop index concurrently, rename/split/merge column by expand-contract.
"""

from __future__ import annotations

from agentdb.errors import OnlineChangeRefused
from agentdb.online.kinds.base import ChangeKind, new_token
from agentdb.online.kinds.partition import PartitionKind, UnpartitionKind

__all__ = ["KINDS", "ChangeKind", "PartitionKind", "UnpartitionKind", "get_kind", "new_token"]

#: Every kind by name.
KINDS: dict[str, type[ChangeKind]] = {kind.name: kind for kind in (PartitionKind, UnpartitionKind)}


def get_kind(name: str, table: str = "?") -> type[ChangeKind]:
    """The kind called ``name``; refuses an unknown one, naming the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise OnlineChangeRefused(table, f"unknown kind of change {name!r}",
                                  hint="known kinds: " + ", ".join(sorted(KINDS))) from None
