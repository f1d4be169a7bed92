"""Migrations: move a database between revisions safely, and read where it stands.

Each command is a plain typed function (the CLI in :mod:`agentdb.cli.migrate`
is a thin layer over them): :mod:`.run` moves the database, :mod:`.inspect`
reads it, :mod:`.authoring` writes migrations and their SQL.  The safety of
every run (lock, transactions, timeouts, history, checksums, archive) lives in
:mod:`agentdb.runtime`, below this package.
"""

from __future__ import annotations

from agentdb.migrate.authoring import new_migration, sql
from agentdb.migrate.inspect import (
    CurrentState,
    MigrationInfo,
    current,
    heads,
    history,
    list_migrations,
    repair,
    validate,
)
from agentdb.migrate.run import downgrade, dry_run, plan_rollback, rollback, rollback_target, upgrade
from agentdb.runtime.dryrun import DryRunReport
from agentdb.runtime.environment import RunReport, StepResult

__all__ = [
    "CurrentState",
    "DryRunReport",
    "MigrationInfo",
    "RunReport",
    "StepResult",
    "current",
    "downgrade",
    "dry_run",
    "heads",
    "history",
    "list_migrations",
    "new_migration",
    "plan_rollback",
    "repair",
    "rollback",
    "rollback_target",
    "sql",
    "upgrade",
    "validate",
]
