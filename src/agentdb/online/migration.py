"""Online changes in migrations: what a migration's ``upgrade()`` or ``downgrade()`` calls.

::

    from agentdb import online

    def upgrade() -> None:
        online.partition_table("analytics", column="created_at", premake=4)

    def downgrade() -> None:
        online.unpartition_table("analytics")

Under ``agentdb upgrade`` (or plain ``alembic upgrade``) the runner hands the
call a :class:`MigrationHooks` through ``config.attributes``; what happens then
depends on the kind of run:

* **a real run** commits the migration's transaction so far (its DDL), drives
  the change through the engine on connections of its own -- capture, batched
  copy with checkpoints, verify, short cut-over -- with the runner's progress
  callback, and records the change (id, phases and their timings, rows, the
  ACCESS EXCLUSIVE hold) in the run history row of the migration.  A crash or
  Ctrl-C leaves the revision unapplied and the change at its checkpoint:
  running ``agentdb upgrade`` again carries on from there (and refuses if the
  migration file changed since the change started);
* **a dry run** designs the change on the dry run's own transaction (which sees
  the tables earlier migrations of the run created) and reports the plan --
  phases, the lock each step takes and how long it may wait, estimated rows --
  without running any of it;
* **``agentdb sql``** prints the plan's SQL, phase by phase, with comments; the
  plan is designed on the configured database when it holds the table,
  otherwise the output says how to get it.

Called outside a migration (plain Python), the change simply runs
(:func:`agentdb.online.ensure`).
"""

from __future__ import annotations

import logging
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentdb.errors import AgentdbError, OnlineChangeRefused
from agentdb.online.engine import ChangeStatus, ProgressCallback, ensure, plan, plan_on
from agentdb.online.plan import Plan
from agentdb.online.settings import OnlineSettings, ThrottleCheck

__all__ = [
    "HOOKS_KEY",
    "MigrationHooks",
    "add_check",
    "add_column",
    "add_foreign_key",
    "add_unique",
    "alter_column_type",
    "change",
    "create_index",
    "drop_index",
    "merge_columns",
    "partition_table",
    "rename_column",
    "split_column",
    "unpartition_table",
]

_log = logging.getLogger("agentdb.online")

#: Where the runner puts the :class:`MigrationHooks` of a run (``config.attributes``).
HOOKS_KEY = "agentdb_online"


@dataclass
class MigrationHooks:
    """What the runner gives the online changes of a run, and what they leave for it."""

    #: ``run`` (execute), ``dry_run`` (plan only) or ``sql`` (print the plan's SQL).
    mode: str = "run"
    progress: ProgressCallback | None = None
    throttle: ThrottleCheck | None = None
    settings: OnlineSettings | None = None
    #: For ``sql`` mode: the database to design the plan on (may be unreachable).
    database_url: str | None = None
    data_dir: str | Path | None = None
    #: The migration step running now (set by the runner before each step).
    revision: str | None = None
    migration_file: str | None = None
    #: ``agentdb upgrade --expand-only``: expand/contract changes stop expanded (not contracted).
    expand_only: bool = False
    #: What each online change of the current step did (run) or would do (dry run), as dicts.
    changes: list[dict[str, Any]] = field(default_factory=list)

    def begin_step(self, revision: str, migration_file: str) -> None:
        self.revision, self.migration_file = revision, migration_file
        self.changes = []


def partition_table(table: str, *, column: str = "created_at", premake: int = 4) -> ChangeStatus | None:
    """Convert a plain table to RANGE partitions by month of ``column``, online (kind ``partition``)."""
    return change(table, "partition", column=column, premake=premake)


def unpartition_table(table: str) -> ChangeStatus | None:
    """Turn a partitioned table back into a plain one with every row, online (kind ``unpartition``)."""
    return change(table, "unpartition")


def add_column(table: str, column: str, type_: Any, *, default: Any = None, server_default: str | None = None,
               backfill: str | None = None, nullable: bool = True, comment: str | None = None
               ) -> ChangeStatus | None:
    """Add ``column`` (a SQLAlchemy type or a type name): a constant ``default`` (no rewrite), a
    ``server_default`` SQL expression or a ``backfill`` expression over the row (filled in batches), and
    ``nullable=False`` by a validated check, never a scan under ACCESS EXCLUSIVE (kind ``add_column``)."""
    return change(table, "add_column", column=column, type=type_, default=default, server_default=server_default,
                  backfill=backfill, nullable=nullable, comment=comment)


def alter_column_type(table: str, column: str, type_: Any, *, using: str | None = None) -> ChangeStatus | None:
    """Change ``column``'s type (``USING`` an expression over the row) by a rebuilt copy swapped in at the
    cut-over; foreign keys of other tables that reference the table move with it (kind ``alter_column_type``)."""
    return change(table, "alter_column_type", column=column, type=type_, using=using)


def add_check(table: str, name: str, condition: str) -> ChangeStatus | None:
    """Add CHECK ``condition`` as ``name``: NOT VALID, then VALIDATE while writes go on (kind ``add_check``)."""
    return change(table, "add_check", name=name, condition=condition)


def add_foreign_key(table: str, name: str, columns: str | list[str], references: str, *,
                    referenced_columns: str | list[str] | None = None, on_delete: str = "NO ACTION",
                    on_update: str = "NO ACTION") -> ChangeStatus | None:
    """Add a foreign key: NOT VALID, then VALIDATE (per partition on a partitioned table)."""
    return change(table, "add_foreign_key", name=name, columns=columns, references=references,
                  referenced_columns=referenced_columns, on_delete=on_delete, on_update=on_update)


def add_unique(table: str, name: str, columns: str | list[str]) -> ChangeStatus | None:
    """Add UNIQUE (``columns``) as ``name``: a unique index built CONCURRENTLY, then attached."""
    return change(table, "add_unique", name=name, columns=columns)


def create_index(table: str, name: str, columns: str | list[str], *, unique: bool = False, method: str = "btree",
                 where: str | None = None, include: tuple[str, ...] = ()) -> ChangeStatus | None:
    """``CREATE INDEX CONCURRENTLY`` (per partition, then attached, on a partitioned table)."""
    return change(table, "create_index", name=name, columns=columns, unique=unique, method=method, where=where,
                  include=include)


def drop_index(table: str, name: str) -> ChangeStatus | None:
    """``DROP INDEX CONCURRENTLY`` (a partitioned table's under a short lock_timeout)."""
    return change(table, "drop_index", name=name)


def rename_column(table: str, column: str, new_name: str) -> ChangeStatus | None:
    """Rename expand/contract: both application versions read and write until ``agentdb online complete``."""
    return change(table, "rename_column", column=column, new_name=new_name)


def split_column(table: str, column: str, into: dict[str, tuple[Any, str]], merge_back: str
                 ) -> ChangeStatus | None:
    """Split ``column`` into ``{name: (type, expression)}``; ``merge_back`` gives it back from them."""
    return change(table, "split_column", column=column, into=into, merge_back=merge_back)


def merge_columns(table: str, columns: list[str], into: str, type_: Any, expression: str,
                  split_back: dict[str, str]) -> ChangeStatus | None:
    """Merge ``columns`` into ``into`` (``expression``); ``split_back`` gives each old column back."""
    return change(table, "merge_columns", columns=columns, into=into, type=type_, expression=expression,
                  split_back=split_back)


def change(table: str, kind: str, **options: Any) -> ChangeStatus | None:
    """Run the online change ``kind`` of ``table`` from a migration (see the module docstring).

    Returns the change's status after a real run (None when the table already
    is what the change makes it, or in a dry run or ``agentdb sql``).
    """
    context = _migration_context()
    if context is None:
        return ensure(table, kind, **options)
    hooks = _hooks(context)
    if context.as_sql or hooks.mode == "sql":
        _emit_sql(context, hooks, table, kind, options)
        return None
    if hooks.mode == "dry_run":
        try:
            planned = plan_on(context.connection, table, kind, settings=hooks.settings, **options)
        except OnlineChangeRefused as exc:
            if not hooks.changes:
                raise
            # It builds on an earlier change of this migration (a column it adds), which a dry run only plans.
            reason = f"not designed: {exc.reason}; it may build on an earlier change of this migration"
            hooks.changes.append({"kind": kind, "table": table, "dry_run": True, "error": reason, "plan": {
                "kind": kind, "table": table, "rows_estimated": 0, "notes": [reason], "settings": {},
                "phases": [{"name": "(not designed)", "locks": [reason]}]}})
            return None
        hooks.changes.append({"kind": kind, "table": planned.qualified, "dry_run": True, "plan": planned.as_dict()})
        return None
    return _execute(context, hooks, table, kind, options)


def _migration_context() -> Any:
    """The running migration's MigrationContext, or None outside a migration."""
    from alembic import op

    try:
        return op.get_context()
    except (NameError, AttributeError):  # alembic's proxy has no context outside a migration run
        return None


def _hooks(context: Any) -> MigrationHooks:
    config = getattr(context, "config", None)
    found = config.attributes.get(HOOKS_KEY) if config is not None else None
    if isinstance(found, MigrationHooks):
        return found
    # A migration run by an env.py that is not agentdb's: execute, without progress or history.
    return MigrationHooks()


def _execute(context: Any, hooks: MigrationHooks, table: str, kind: str,
             options: dict[str, Any]) -> ChangeStatus | None:
    connection = context.connection
    url = connection.engine.url.render_as_string(hide_password=False)
    nested = connection.get_nested_transaction()
    if nested is not None and nested.is_active:
        # The runner's lock-retry savepoint: released here, as the block below commits what the step did so far.
        nested.commit()
    settings = hooks.settings
    if hooks.expand_only:
        settings = (settings or OnlineSettings()).merged(complete=False)
    with context.autocommit_block():
        status = ensure(table, kind, database_url=url, settings=settings, progress=hooks.progress,
                        throttle=hooks.throttle, revision=hooks.revision, migration_file=hooks.migration_file,
                        **options)
    if status is None:
        hooks.changes.append({"kind": kind, "table": table, "done_already": True})
    else:
        hooks.changes.append({
            "id": status.id, "kind": kind, "table": status.table, "status": status.status,
            "rows": status.rows_done, "lock_hold_ms": status.lock_hold_ms, "timings": status.timings,
        })
    return status


def _emit_sql(context: Any, hooks: MigrationHooks, table: str, kind: str, options: dict[str, Any]) -> None:
    """``agentdb sql``: the plan's SQL as comments and statements, designed on the database if it can be."""
    shown = ", ".join(f"{key} {value}" for key, value in options.items())
    head = f"online change: {kind} of {table}" + (f" ({shown})" if shown else "")
    planned: Plan | None = None
    reason = "no database was named (agentdb sql --database-url URL designs it on that database)"
    if hooks.database_url:
        try:
            planned = plan(table, kind, database_url=hooks.database_url, settings=hooks.settings, **options)
        except AgentdbError as exc:
            reason = str(exc)
    lines = [
        f"-- {head}",
        "-- An online change cannot run from a SQL script: `agentdb upgrade` drives it through the engine,",
        "-- each phase committing on its own and the copy in batches with checkpoints.  Its SQL is shown",
        "-- commented out, and the statement after it stops psql, so that this revision is never recorded",
        "-- as applied without the change.",
    ]
    if planned is None:
        lines += ["-- Its statements depend on the table as the database holds it, and no plan could be made "
                  "here:"]
        lines += ["--   " + line for line in textwrap.wrap(reason, 96)]
        lines += [f"-- `agentdb online plan {table} {kind} --sql` prints them against the database to migrate."]
    else:
        lines += [("-- " + line).rstrip() for line in planned.sql().splitlines()]
    message = f"agentdb: {head} must be run by agentdb upgrade, not from a SQL script"
    lines += ["DO $$ BEGIN RAISE EXCEPTION '%', " + _literal(message) + "; END $$;", ""]
    context.impl.static_output("\n".join(lines))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
