"""Online changes: long table changes that the application never waits for, and that resume after a crash.

A change is *described* as a plan of phases by its kind (one file each under
``kinds/``) and *executed* by the engine, with its state in
``agentdb.online_changes``::

    from agentdb import online

    online.plan("analytics", "partition").sql()     # what it would do, with the locks; changes nothing
    online.start("analytics", "partition", premake=4, progress=print)
    online.status()                                 # every unfinished change, interrupted ones flagged
    online.resume("analytics")                      # after a crash: on from the checkpoint
    online.pause(3); online.resume(3); online.abort(3)
    online.ensure("analytics", "partition", revision="007", migration_file=__file__)
    online.partition_table("analytics", premake=4)  # in a migration's upgrade(): see agentdb.online.migration
    online.add_column("analytics", "duration_ms", sa.Integer, default=0, nullable=False)   # and the other kinds

Phases of a table rebuild (``partition``, ``unpartition``): *start* (new
table, capture trigger), *copy* (key-ordered batches, each committed with its
checkpoint), *constraints* (foreign keys NOT VALID, then validated),
*verify* (count and checksum per key range in one snapshot), *cutover* (one
short transaction under ``lock_timeout``, retried, timed), *complete* (drop
the old table).  See :mod:`agentdb.online.engine` for the guarantees.
"""

from __future__ import annotations

from agentdb.online.engine import (
    KILL_ENV,
    TUNABLE,
    ChangeStatus,
    Progress,
    ProgressCallback,
    abort,
    complete,
    ensure,
    pause,
    plan,
    plan_on,
    resume,
    run,
    start,
    status,
    tune,
)
from agentdb.online.kinds import KINDS, ChangeKind
from agentdb.online.migration import (
    MigrationHooks,
    add_check,
    add_column,
    add_foreign_key,
    add_unique,
    alter_column_type,
    change,
    create_index,
    drop_index,
    merge_columns,
    partition_table,
    rename_column,
    split_column,
    unpartition_table,
)
from agentdb.online.plan import Phase, Plan, Step
from agentdb.online.settings import OnlineSettings, ThrottleCheck
from agentdb.online.state import DDL as STATE_DDL

__all__ = [
    "KILL_ENV",
    "KINDS",
    "STATE_DDL",
    "TUNABLE",
    "ChangeKind",
    "ChangeStatus",
    "MigrationHooks",
    "OnlineSettings",
    "Phase",
    "Plan",
    "Progress",
    "ProgressCallback",
    "Step",
    "ThrottleCheck",
    "abort",
    "add_check",
    "add_column",
    "add_foreign_key",
    "add_unique",
    "alter_column_type",
    "change",
    "complete",
    "create_index",
    "drop_index",
    "ensure",
    "merge_columns",
    "partition_table",
    "pause",
    "plan",
    "plan_on",
    "rename_column",
    "resume",
    "run",
    "split_column",
    "start",
    "status",
    "tune",
    "unpartition_table",
]
