"""Dry runs on the real database: run the pending migrations, observe, roll back.

``agentdb upgrade --dry-run`` (and ``downgrade --dry-run``) goes through the
same ``env.py`` path as a real run -- run lock, timeouts, lock-timeout retries,
checksum validation -- with one difference: everything happens in ONE outer
transaction that is rolled back at the end.  Nothing persists: not the schema,
not the version table, and no run history row (a dry run is not a run; the
history only records changes that happened).

The work is split the usual way (describe, then execute):

* :class:`PlannedStep` describes a step before anything runs: revision,
  direction, file, and whether it needs ``autocommit_block()``;
* :class:`StepObservation` is what running it inside the transaction showed:
  statements, time, relation locks (from ``pg_locks``, read before the
  rollback) and tables rewritten (``pg_class.relfilenode`` changed);
* :class:`DryRunReport` holds both, for the CLI to render as a table or JSON.

.. warning::
   A dry run takes the same locks as the real run, for as long as the run
   lasts (the rollback releases them).  On a busy production database it
   blocks like the real thing; rehearse on a copy when that matters.

   A migration that uses ``op.get_context().autocommit_block()`` cannot be
   rolled back, so it cannot be rehearsed: the dry run refuses it with
   :class:`~agentdb.errors.NotTransactional` before running anything.  An
   online change (:mod:`agentdb.online.migration`) is the exception: it is
   planned on the dry run's transaction and its plan reported
   (:attr:`StepObservation.online`), never run.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import sqlalchemy as sa
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, RevisionStep
from sqlalchemy.exc import DBAPIError

from agentdb.connection import redact_url
from agentdb.errors import DryRunFailed, NotTransactional
from agentdb.runtime import archive
from agentdb.runtime.history import INTERNAL_SCHEMA
from agentdb.runtime.locks import BlockerWatch, RetryPolicy, retry_on_lock_timeout, sqlstate_of
from agentdb.runtime.settings import RunSettings
from agentdb.runtime.validation import require_valid

__all__ = [
    "DryRunReport",
    "DryRunStep",
    "LockTaken",
    "PlannedStep",
    "StepObservation",
    "plan_steps",
    "run_dry",
    "uses_autocommit_block",
]

_log = logging.getLogger("agentdb.runtime")

#: The report object a caller puts in ``config.attributes`` to receive the result.
REPORT_KEY = "agentdb_dry_run"

_RELKINDS = {"r": "table", "p": "partitioned table", "m": "materialized view", "i": "index", "I": "partitioned index",
             "S": "sequence", "v": "view", "t": "toast table", "c": "type", "f": "foreign table"}
_REWRITABLE = {"r", "m"}


@dataclass(frozen=True)
class PlannedStep:
    """One migration the dry run is about to run (known before anything runs)."""

    revision: str
    direction: str
    description: str
    filename: str
    #: True when the migration opens ``autocommit_block()``: it cannot be rehearsed.
    needs_autocommit: bool


@dataclass(frozen=True)
class LockTaken:
    """A relation lock the step took (held until the transaction ends)."""

    relation: str
    kind: str
    mode: str
    #: The relation did not exist before the step (created by it): nobody else can be waiting on it.
    created: bool = False
    #: The relation was dropped by the step (its name comes from before the step).
    dropped: bool = False


@dataclass(frozen=True)
class StepObservation:
    """What running one step inside the dry-run transaction showed."""

    statements: tuple[str, ...]
    duration_ms: float
    locks: tuple[LockTaken, ...]
    rewritten: tuple[str, ...]
    #: What the archive did: rows it would archive, restore or purge (see :mod:`agentdb.runtime.archive`).
    archive: tuple[dict[str, Any], ...] = ()
    #: The online changes the step would drive, planned but not run (:mod:`agentdb.online.migration`):
    #: kind, table and the plan (phases, the locks each step takes, estimated rows).
    online: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class DryRunStep:
    plan: PlannedStep
    observed: StepObservation

    def as_dict(self) -> dict[str, Any]:
        observed = asdict(self.observed)
        return {**asdict(self.plan), **observed, "statement_count": len(self.observed.statements)}


@dataclass
class DryRunReport:
    """Filled in by a dry run (``config.attributes['agentdb_dry_run']``)."""

    database: str = ""
    direction: str = ""
    target: str = ""
    #: The revisions the database was at before, and is still at after, the dry run.
    revisions_before: tuple[str, ...] = ()
    plan: list[PlannedStep] = field(default_factory=list)
    steps: list[DryRunStep] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rolled_back: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database, "direction": self.direction, "target": self.target,
            "revisions_before": list(self.revisions_before), "rolled_back": self.rolled_back,
            "plan": [asdict(p) for p in self.plan], "steps": [s.as_dict() for s in self.steps],
            "warnings": list(self.warnings),
        }


def uses_autocommit_block(path: str | Path, function: str) -> bool:
    """Whether ``function`` (``upgrade`` or ``downgrade``) in a migration file mentions ``autocommit_block``.

    Read from the source (no import), so the answer is known before anything runs.
    """
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return any(
                isinstance(sub, ast.Attribute) and sub.attr == "autocommit_block" for sub in ast.walk(node)
            )
    return False


def _first_line(text: str | None) -> str:
    stripped = (text or "").strip()
    return stripped.splitlines()[0].strip() if stripped else ""


def plan_steps(steps: Iterable[RevisionStep]) -> list[PlannedStep]:
    """Describe the steps Alembic is about to run."""
    planned = []
    for step in steps:
        direction = "upgrade" if step.is_upgrade else "downgrade"
        script = step.revision
        planned.append(
            PlannedStep(
                revision=script.revision, direction=direction, description=_first_line(script.doc),
                filename=Path(script.path).name, needs_autocommit=uses_autocommit_block(script.path, direction),
            )
        )
    return planned


# --- observing the transaction -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Relation:
    name: str
    kind: str
    relfilenode: int


def _relations(connection: sa.Connection) -> dict[int, _Relation]:
    """Every relation outside the system schemas and agentdb's own, by oid, as this transaction sees it."""
    rows = connection.execute(
        sa.text(
            "SELECT c.oid::bigint, n.nspname, c.relname, c.relkind::text, c.relfilenode::bigint "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', :internal) "
            "AND n.nspname NOT LIKE 'pg\\_%'"
        ),
        {"internal": INTERNAL_SCHEMA},
    )
    return {int(r[0]): _Relation(f"{r[1]}.{r[2]}", r[3], int(r[4])) for r in rows}


def _relation_locks(connection: sa.Connection, pid: int) -> set[tuple[int, str]]:
    """(oid, mode) of the relation locks our backend holds, in this database."""
    rows = connection.execute(
        sa.text(
            "SELECT relation::bigint, mode FROM pg_locks WHERE pid = :pid AND locktype = 'relation' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"pid": pid},
    )
    return {(int(r[0]), str(r[1])) for r in rows}


class _StatementLog:
    """Collects the statements sent through a connection while active (``before_cursor_execute``)."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.active = False

    def __call__(self, conn: sa.Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                 executemany: bool) -> None:
        if self.active:
            self.statements.append(" ".join(statement.split()))

    @contextlib.contextmanager
    def listening(self, connection: sa.Connection) -> Iterator[None]:
        sa.event.listen(connection, "before_cursor_execute", self)
        try:
            yield
        finally:
            sa.event.remove(connection, "before_cursor_execute", self)


def _observe(
    before: dict[int, _Relation], after: dict[int, _Relation], locks_before: set[tuple[int, str]],
    locks_after: set[tuple[int, str]],
) -> tuple[tuple[LockTaken, ...], tuple[str, ...]]:
    taken = []
    for oid, mode in sorted(locks_after - locks_before, key=lambda lock: lock[1]):
        relation = after.get(oid) or before.get(oid)
        if relation is None:  # a system catalogue or agentdb's own table
            continue
        taken.append(
            LockTaken(relation.name, _RELKINDS.get(relation.kind, relation.kind), mode,
                      created=oid not in before, dropped=oid not in after)
        )
    taken.sort(key=lambda lock: (lock.relation, lock.mode))
    rewritten = sorted(
        rel.name for oid, rel in before.items()
        if rel.kind in _REWRITABLE and oid in after and after[oid].relfilenode != rel.relfilenode
    )
    return tuple(taken), tuple(rewritten)


# --- the run -----------------------------------------------------------------------------------------------

class _DryRun:
    def __init__(self, connection: sa.Connection, settings: RunSettings, pid: int, report: DryRunReport,
                 script: Any, watch: BlockerWatch | None) -> None:
        self.connection = connection
        self.settings = settings
        self.pid = pid
        self.report = report
        self.script = script
        self.watch = watch
        self.policy = RetryPolicy(attempts=settings.lock_retries, base_delay=settings.retry_delay)
        self.log = _StatementLog()
        self.current: PlannedStep | None = None
        self.hooks: Any = None

    def wrap(self, original: Callable[..., Iterable[Any]]) -> Callable[..., list[Any]]:
        def steps(heads: Any, migration_context: MigrationContext) -> list[Any]:
            self.report.revisions_before = tuple(heads or ())
            planned = list(original(heads, migration_context))
            revision_steps = [s for s in planned if isinstance(s, RevisionStep)]
            if any(s.is_upgrade for s in revision_steps) and not self.settings.ignore_checksums:
                self.report.warnings.extend(require_valid(self.connection, self.script))
            self.report.plan = plan_steps(revision_steps)
            for plan in self.report.plan:
                if plan.needs_autocommit:
                    raise NotTransactional(plan.revision, plan.direction, plan.filename)
            # Backstop for a migration that reaches autocommit_block() by a path the source scan cannot see.
            setattr(migration_context, "autocommit_block", self._refuse)  # noqa: B010 - instance override
            for step, plan in zip(revision_steps, self.report.plan, strict=True):
                step.migration_fn = self._observed(step, plan, step.migration_fn)
            return planned

        return steps

    def _refuse(self) -> NoReturn:
        """Stands in for ``MigrationContext.autocommit_block``: raises as soon as a migration asks for it."""
        plan = self.current
        if plan is None:
            raise NotTransactional("?", "run", "a migration of this dry run")
        raise NotTransactional(plan.revision, plan.direction, plan.filename)

    def _observed(self, step: RevisionStep, plan: PlannedStep, migration_fn: Callable[..., Any]) -> Callable[..., None]:
        def attempt(kw: dict[str, Any]) -> None:
            self.log.statements.clear()
            self.log.active = True
            try:
                # The same archive work as a real run, so the report shows what a rollback would keep.
                with archive.scope(plan.revision, None, self.connection, purge=self.settings.purge) as current:
                    events[:] = [current]
                    migration_fn(**kw)
            finally:
                self.log.active = False

        events: list[archive.ArchiveScope] = []

        @functools.wraps(migration_fn)
        def run(**kw: Any) -> None:
            self.current = plan
            self.hooks.begin_step(plan.revision, step.revision.path)
            relations_before = _relations(self.connection)
            locks_before = _relation_locks(self.connection, self.pid)
            if self.watch is not None:
                self.watch.forget()
            clock = time.perf_counter()
            try:
                retry_on_lock_timeout(
                    lambda: attempt(kw), self.connection, self.policy,
                    what=f"{plan.direction} {plan.revision} (dry run)", watch=self.watch,
                )
            except DBAPIError as exc:  # one line, PostgreSQL's primary message only (DETAIL can quote rows)
                diag = getattr(exc.orig, "diag", None)
                reason = getattr(diag, "message_primary", None) or str(exc.orig).strip().splitlines()[0]
                raise DryRunFailed(plan.revision, plan.direction, sqlstate_of(exc), str(reason)) from exc
            duration = round((time.perf_counter() - clock) * 1000, 1)
            locks, rewritten = _observe(
                relations_before, _relations(self.connection), locks_before,
                _relation_locks(self.connection, self.pid),
            )
            self.report.steps.append(
                DryRunStep(plan, StepObservation(
                    tuple(self.log.statements), duration, locks, rewritten,
                    tuple(events[0].events) if events else (),
                    tuple(dict(change) for change in self.hooks.changes),
                ))
            )
            _log.debug("dry run: %s %s took %.0f ms", plan.direction, plan.revision, duration)

        return run


def run_dry(
    context: EnvironmentContext, connection: sa.Connection, settings: RunSettings, watch: BlockerWatch | None,
    options: dict[str, Any],
) -> None:
    """Run the migrations Alembic planned inside one transaction, observe each step, and roll back.

    The caller holds the run lock and has set the timeouts; ``options`` are the
    ``context.configure`` options of a real run.
    """
    given = context.config.attributes.get(REPORT_KEY)
    report = given if isinstance(given, DryRunReport) else DryRunReport()
    report.database = redact_url(connection.engine.url)
    pid = int(connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
    if connection.in_transaction():
        connection.commit()
    dry = _DryRun(connection, settings, pid, report, context.script, watch)
    # An online change in a migration is planned on this transaction, not run (agentdb.online.migration).
    from agentdb.runtime.environment import online_hooks

    dry.hooks = online_hooks(context, "dry_run", settings)
    original = context.context_opts.get("fn")
    if original is not None:
        options = {**options, "fn": dry.wrap(original)}
    # Begun BEFORE configure: Alembic sees an external transaction and opens none of its own, so the
    # version table, each step and each version update all land in this one transaction.
    outer = connection.begin()
    try:
        connection.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA}"))
        with dry.log.listening(connection):
            context.configure(connection=connection, **options)
            context.run_migrations()
    finally:
        outer.rollback()
    report.rolled_back = True
    if given is None:
        for step in report.steps:
            locks = ", ".join(f"{lock.mode} on {lock.relation}" for lock in step.observed.locks) or "none"
            _log.info("dry run: %s %s: %d statements, %.0f ms, locks: %s", step.plan.direction,
                      step.plan.revision, len(step.observed.statements), step.observed.duration_ms, locks)
