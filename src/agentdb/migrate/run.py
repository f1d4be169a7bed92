"""Moving a database between revisions: upgrade, downgrade, dry run and the safe rollback.

Every function resolves its database the same way (see :mod:`agentdb.connection`),
raises :class:`agentdb.errors.AgentdbError` subclasses for anything the user can
fix, and returns data (never prints), so the CLI can render it as a table or JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agentdb.errors import AgentdbError
from agentdb.migrate._common import migrate as _migrate
from agentdb.migrate._common import settings_from as _settings
from agentdb.migrate.inspect import current
from agentdb.online.engine import ProgressCallback
from agentdb.runtime.dryrun import REPORT_KEY as _DRY_RUN_KEY
from agentdb.runtime.dryrun import DryRunReport
from agentdb.runtime.environment import RunReport

__all__ = ["downgrade", "dry_run", "plan_rollback", "rollback", "rollback_target", "upgrade"]


def upgrade(
    revision: str = "head",
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    lock_timeout: float | None = None,
    statement_timeout: float | None = None,
    lock_retries: int | None = None,
    run_lock_timeout: float | None = None,
    ignore_checksums: bool | None = None,
    progress: ProgressCallback | None = None,
    expand_only: bool | None = None,
) -> RunReport:
    """Apply migrations up to ``revision`` (default: the newest).

    Refuses to run when an applied migration's file has changed since it ran
    (see :func:`validate`) unless ``ignore_checksums`` is set.  ``progress`` is
    called after each batch and phase of an online change a migration drives
    (:class:`agentdb.online.Progress`), for a progress bar.  ``expand_only``
    leaves the online changes of expand/contract kinds expanded (``agentdb
    online complete`` contracts them once the old application is gone).
    """
    settings = _settings(
        database_url, data_dir, lock_timeout=lock_timeout, statement_timeout=statement_timeout,
        lock_retries=lock_retries, run_lock_timeout=run_lock_timeout, ignore_checksums=ignore_checksums,
        expand_only=expand_only,
    )
    report = RunReport()
    _migrate("upgrade", revision, settings, "agentdb_report", report, progress)
    return report


def downgrade(
    revision: str,
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    lock_timeout: float | None = None,
    statement_timeout: float | None = None,
    lock_retries: int | None = None,
    run_lock_timeout: float | None = None,
    purge: bool | None = None,
    progress: ProgressCallback | None = None,
) -> RunReport:
    """Roll back to ``revision`` (an id, ``-N`` or ``base``).

    A migration's ``op.drop_table`` of a table that holds rows archives them
    first (see :mod:`agentdb.runtime.archive`); ``purge=True`` drops them for real.
    ``progress`` is called during an online change, as for :func:`upgrade`.
    """
    settings = _settings(
        database_url, data_dir, lock_timeout=lock_timeout, statement_timeout=statement_timeout,
        lock_retries=lock_retries, run_lock_timeout=run_lock_timeout, purge=purge,
    )
    report = RunReport()
    _migrate("downgrade", revision, settings, "agentdb_report", report, progress)
    return report


def dry_run(
    revision: str = "head",
    *,
    direction: str = "upgrade",
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    lock_timeout: float | None = None,
    statement_timeout: float | None = None,
    lock_retries: int | None = None,
    run_lock_timeout: float | None = None,
    ignore_checksums: bool | None = None,
    purge: bool | None = None,
) -> DryRunReport:
    """Run the migrations up (or down) to ``revision`` on the real database in one transaction, and roll back.

    Reports per migration the statements, time, relation locks and rewritten
    tables (see :mod:`agentdb.runtime.dryrun`).  Nothing persists and no run
    history row is written.  Refuses, before running anything, a migration that
    uses ``autocommit_block()`` (:class:`~agentdb.errors.NotTransactional`).
    """
    if direction not in {"upgrade", "downgrade"}:
        raise AgentdbError(f"invalid direction {direction!r}", hint="upgrade or downgrade")
    settings = _settings(
        database_url, data_dir, lock_timeout=lock_timeout, statement_timeout=statement_timeout,
        lock_retries=lock_retries, run_lock_timeout=run_lock_timeout, ignore_checksums=ignore_checksums,
        dry_run=True, purge=purge,
    )
    report = DryRunReport(direction=direction, target=revision)
    _migrate(direction, revision, settings, _DRY_RUN_KEY, report)
    return report


def rollback_target(revision: str | None = None, steps: int | None = None) -> str:
    """The downgrade target of a rollback: a revision, or ``-N`` for ``steps`` migrations (default one)."""
    if revision is not None and steps is not None:
        raise AgentdbError("give a revision or a number of steps, not both", hint="agentdb rollback 003, or --steps 2")
    if steps is not None:
        if steps < 1:
            raise AgentdbError(f"invalid number of steps {steps}", hint="at least 1")
        return f"-{steps}"
    return revision or "-1"


def plan_rollback(
    revision: str | None = None,
    *,
    steps: int | None = None,
    purge: bool = False,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    lock_timeout: float | None = None,
    run_lock_timeout: float | None = None,
) -> DryRunReport:
    """What :func:`rollback` would do, found by rehearsing it on the real database (a dry run).

    The report lists, per migration to undo, the tables whose rows would be
    archived (or purged), the statements and the locks.
    """
    target = rollback_target(revision, steps)
    at = current(database_url=database_url, data_dir=data_dir)
    if not at.revisions:  # at base: nothing to undo, whatever the target says
        return DryRunReport(direction="downgrade", target=target, database=at.database, rolled_back=True)
    return dry_run(
        target, direction="downgrade", purge=purge or None,
        database_url=database_url, data_dir=data_dir, lock_timeout=lock_timeout, run_lock_timeout=run_lock_timeout,
    )


def rollback(
    revision: str | None = None,
    *,
    steps: int | None = None,
    purge: bool = False,
    expect_at: Sequence[str] | None = None,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    lock_timeout: float | None = None,
    statement_timeout: float | None = None,
    lock_retries: int | None = None,
    run_lock_timeout: float | None = None,
) -> RunReport:
    """Roll back to ``revision``, or by ``steps`` migrations (default one), losing nothing.

    Non-empty tables that a downgrade drops are archived and come back on the
    next upgrade (see :mod:`agentdb.runtime.archive`); ``purge=True`` drops
    their rows for real.  With ``expect_at`` (the revisions a plan was made
    at), refuses when the database has moved since, so what runs is what was
    shown.
    """
    target = rollback_target(revision, steps)
    now = current(database_url=database_url, data_dir=data_dir).revisions
    if not now and not expect_at:  # at base: nothing to roll back
        return RunReport()
    if expect_at is not None:
        if tuple(now) != tuple(expect_at):
            raise AgentdbError(
                f"the database moved since the rollback was planned: it was at {', '.join(expect_at) or 'base'}, "
                f"it is at {', '.join(now) or 'base'}",
                hint="run agentdb rollback again to see the new plan",
            )
    return downgrade(
        target, purge=purge or None, database_url=database_url, data_dir=data_dir, lock_timeout=lock_timeout,
        statement_timeout=statement_timeout, lock_retries=lock_retries, run_lock_timeout=run_lock_timeout,
    )
