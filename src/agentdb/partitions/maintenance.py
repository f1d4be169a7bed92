"""Partition maintenance: keep future months ready, move rows out of the DEFAULT partition, retire old months.

:func:`maintain_partitions` first *plans* (:class:`Step`: what, on which
partition, under which locks) and then executes the plan; ``dry_run=True``
returns the plan and changes nothing.  For every table in
``agentdb.partitioned_tables`` it:

1. completes a ``DETACH ... CONCURRENTLY`` that was interrupted (``FINALIZE``);
2. makes sure the current month and ``premake`` months after it have a
   partition, and that every month with rows waiting in the DEFAULT partition
   gets one, moving those rows first (the *drain*, below);
3. retires the partitions whose upper bound is older than ``now() -
   retention``: detached, then archived into ``agentdb_archive`` (recorded in
   ``agentdb.archived_tables``, like the tables a rollback keeps), dropped, or
   left detached.

It is idempotent (a second run finds nothing to do and says so), records
every run that changed something or failed in the run history
(``agentdb.migration_runs``, direction ``maintain``), and two runs never
overlap: a session-level advisory lock, waited for briefly, then refused
naming the holder's pid.  Safe to run from cron every minute.

How a month partition is made, without ever holding ACCESS EXCLUSIVE on a
table that has to be scanned:

* a standalone table ``<table>_pYYYYMM`` is created ``LIKE`` the parent, with
  a CHECK constraint of the month's bounds (valid at once, the table is empty),
  so that ``ATTACH PARTITION`` need not scan it;
* with a DEFAULT partition: the month's rows are moved out of it into the new
  table in batches (``DELETE ... RETURNING`` into ``INSERT``, one short
  transaction each, so a row is in exactly one of the two tables at any
  commit); then a guard ``CHECK (<not this month>) NOT VALID`` is added to the
  DEFAULT partition, the last rows moved, and the guard ``VALIDATE``\\ d (a scan
  under SHARE UPDATE EXCLUSIVE, which does not block reads or writes), so
  ``ATTACH`` finds the DEFAULT partition's contents proven and skips its scan;
* ``ATTACH PARTITION`` takes SHARE UPDATE EXCLUSIVE on the parent (reads and
  writes go on) and ACCESS EXCLUSIVE on the new table and on the DEFAULT
  partition, for the milliseconds the catalogue update takes.

.. warning::
   Two windows are the price of never scanning under ACCESS EXCLUSIVE, and both
   exist only when rows of a month without a partition sit in the DEFAULT
   partition, which ``premake`` is there to prevent:

   * rows already moved into the new table are not visible through the parent
     until it is attached (the end of that month's drain);
   * from the guard to the attach, an INSERT or UPDATE of a row of that month
     fails with SQLSTATE 23514 naming ``agentdb_drain_pYYYYMM``.  The window
     is one VALIDATE of the DEFAULT partition (small, once drained) plus the
     attach; the report gives its length (``guard_ms``).  A crash inside it
     leaves the guard until the next run, which completes the month.

Locks are always taken in one order, explicitly (``LOCK TABLE ONLY``) before
the DDL: the parent, then its partitions in bound order with the DEFAULT
partition last, then the tables the parent's foreign keys reference.  That is
the order of the hot path: an INSERT into the parent locks the parent, then
its partition, then (in its foreign-key check, even for a NULL key) the
referenced table; maintenance taking ``users`` first would make every such
insert a deadlock partner.  Every step runs under a short ``lock_timeout``
(default 200 ms, well below ``deadlock_timeout``, so in a lock cycle it is
maintenance that gives way) and is retried with backoff by
:func:`agentdb.runtime.locks.retry_on_lock_timeout`.  A long ``SELECT`` on the
parent therefore delays maintenance (each attempt gives up after
``lock_timeout``, releasing everything it held) but cannot deadlock it, and
nobody queues behind a waiting maintenance for longer than ``lock_timeout``.
Retention detaches ``CONCURRENTLY`` when PostgreSQL allows it (no DEFAULT
partition: otherwise a plain ``DETACH``, ACCESS EXCLUSIVE on the parent for a
moment); an interrupted concurrent detach is finalised by the next attempt.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.exc import DBAPIError

from agentdb.connection import Target, connect, create_engine, resolve
from agentdb.errors import (
    AgentdbError,
    Blocker,
    PartitionConflict,
    PartitionMaintenanceFailed,
    PartitionMaintenanceLocked,
    PartitionTableInvalid,
)
from agentdb.partitions import naming
from agentdb.partitions._sql import Conn, Statement, execute, find_table, one
from agentdb.partitions.catalog import (
    BOUNDS_CONSTRAINT,
    ManagedTable,
    Partition,
    _check_parent,
    managed_tables,
    partitions_of,
)
from agentdb.runtime import history
from agentdb.runtime.archive import ARCHIVE_SCHEMA, REGISTRY_DDL, REGISTRY_TABLE
from agentdb.runtime.locks import BlockerWatch, RetryPolicy, mask_literals, retry_on_lock_timeout, sqlstate_of
from agentdb.runtime.settings import RunSettings

__all__ = [
    "GUARD_PREFIX",
    "MAINTENANCE_LOCK_KEY",
    "MaintenanceReport",
    "Step",
    "TableReport",
    "create_month_partitions",
    "maintain_partitions",
]

T = TypeVar("T")
_log = logging.getLogger("agentdb.partitions")

#: Advisory lock key of a maintenance run: the first 8 bytes of sha256("agentdb.partitions.maintain"), top bit
#: cleared (a bigint).  Advisory locks are per database: maintenance of different databases never waits.
MAINTENANCE_LOCK_KEY = 0x42214E1A3AE34B7B
_KEY_HI = (MAINTENANCE_LOCK_KEY >> 32) & 0xFFFFFFFF
_KEY_LO = MAINTENANCE_LOCK_KEY & 0xFFFFFFFF
#: The DEFAULT partition's guard while a month is sealed: ``agentdb_drain_pYYYYMM``.
GUARD_PREFIX = "agentdb_drain_"
_GUARD = re.compile(rf"^{GUARD_PREFIX}p(?P<year>\d{{4}})(?P<month>0[1-9]|1[0-2])$")
#: The run-history revision of a maintenance run (its direction is ``maintain``).
HISTORY_REVISION = "partitions"
CHECK_VIOLATION = "23514"
#: Sweeps over the DEFAULT partition per month before the guard (writers may keep adding rows of the month).
_BULK_SWEEPS = 3
#: Rounds of (move the last rows, VALIDATE) before giving up on a month.
_SEAL_ROUNDS = 5


def _month_label(month: datetime) -> str:
    return f"{month.year:04d}-{month.month:02d}"


def _month_of(label: str) -> datetime:
    """The month start of a ``YYYY-MM`` label."""
    return datetime.fromisoformat(label + "-01").replace(tzinfo=UTC)


def _guard_name(month: datetime) -> str:
    return f"{GUARD_PREFIX}p{month.year:04d}{month.month:02d}"


@dataclass(frozen=True)
class Step:
    """One planned change to one partition, and the locks it takes (for the plan and the dry run)."""

    #: ``create`` (a month partition, draining the DEFAULT partition first if it holds rows of the month),
    #: ``retire`` (detach, then archive, drop or keep) or ``finalize`` (complete an interrupted detach).
    action: str
    table: str
    partition: str
    month: str | None = None
    #: Rows of the month waiting in the DEFAULT partition (``create``), counted when planned.
    drain_rows: int = 0
    #: The standalone table of an interrupted drain exists and is resumed (``create``).
    resume: bool = False
    #: ``archive``, ``drop`` or ``detach`` (``retire``); None for a ``finalize`` that only completes a detach.
    retention_action: str | None = None
    #: ``DETACH ... CONCURRENTLY`` (no DEFAULT partition) rather than a plain DETACH (``retire``).
    concurrently: bool = False
    locks: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.action == "create":
            how = f"drain {self.drain_rows} rows from the DEFAULT partition, then attach" if self.drain_rows else (
                "resume the interrupted drain, then attach" if self.resume else "create and attach")
            text = f"{how} {self.partition} ({self.month})"
        elif self.action == "retire":
            detach = "detach concurrently" if self.concurrently else "detach"
            then = {"archive": f", archive into {ARCHIVE_SCHEMA}", "drop": ", drop", "detach": ""}.get(
                self.retention_action or "", "")
            text = f"{detach} {self.partition} (past retention){then}"
        else:
            text = f"finalize the interrupted detach of {self.partition}"
        return text + (f"; locks: {', '.join(self.locks)}" if self.locks else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action, "table": self.table, "partition": self.partition, "month": self.month,
            "drain_rows": self.drain_rows, "resume": self.resume, "retention_action": self.retention_action,
            "concurrently": self.concurrently, "locks": list(self.locks), "description": self.describe(),
        }


@dataclass
class TableReport:
    """What maintenance did (or, in a dry run, would do) to one managed table."""

    table: str
    created: list[str] = field(default_factory=list)
    #: Partition -> rows moved into it out of the DEFAULT partition.
    drained: dict[str, int] = field(default_factory=dict)
    #: Partition -> milliseconds during which writes of its month to the DEFAULT partition were refused.
    guard_ms: dict[str, float] = field(default_factory=dict)
    detached: list[str] = field(default_factory=list)
    #: ``{"partition", "archive", "rows"}`` per partition moved into the archive schema.
    archived: list[dict[str, Any]] = field(default_factory=list)
    #: ``{"partition", "rows"}`` per partition dropped.
    dropped: list[dict[str, Any]] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: What failed, one line each: a partition in the way (the run went on) or a step that failed (the table's
    #: remaining steps were skipped).
    errors: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) or None

    @property
    def changed(self) -> bool:
        return bool(self.created or self.drained or self.detached or self.archived or self.dropped or self.finalized)

    def summary(self) -> str:
        parts = []
        if self.created:
            parts.append(f"created {len(self.created)}")
        if self.drained:
            parts.append(f"drained {sum(self.drained.values())} rows from the DEFAULT partition")
        if self.finalized:
            parts.append(f"finalized {len(self.finalized)} detach(es)")
        if self.archived:
            parts.append(f"archived {len(self.archived)}")
        if self.dropped:
            parts.append(f"dropped {len(self.dropped)}")
        kept = [p for p in self.detached if p not in {a["partition"] for a in self.archived}
                and p not in {d["partition"] for d in self.dropped}]
        if kept:
            parts.append(f"detached {len(kept)}")
        text = f"{self.table}: " + (", ".join(parts) if parts else "nothing to do")
        return text + (f" (failed: {self.error})" if self.error else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table, "created": list(self.created), "drained": dict(self.drained),
            "guard_ms": dict(self.guard_ms), "detached": list(self.detached), "archived": list(self.archived),
            "dropped": list(self.dropped), "finalized": list(self.finalized), "warnings": list(self.warnings),
            "error": self.error, "changed": self.changed,
        }


@dataclass
class MaintenanceReport:
    """The outcome of :func:`maintain_partitions`: the plan, and what was done per table."""

    run_id: uuid.UUID
    database: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    plan: list[Step] = field(default_factory=list)
    tables: list[TableReport] = field(default_factory=list)
    #: Lock timeouts that were retried (attempts beyond the first) over the whole run.
    lock_retries: int = 0
    #: Whether the run was written to the run history.
    recorded: bool = False

    @property
    def changed(self) -> bool:
        return any(t.changed for t in self.tables)

    @property
    def ok(self) -> bool:
        return all(t.error is None for t in self.tables)

    def summary(self) -> str:
        if not self.tables:
            return "no partitioned table is managed (agentdb.partitioned_tables is empty)"
        if self.dry_run:
            return f"dry run: {len(self.plan)} step(s) planned" if self.plan else "dry run: nothing to do"
        if not self.changed and self.ok:
            return "nothing to do: " + "; ".join(t.table for t in self.tables) + " are up to date"
        return "; ".join(t.summary() for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id), "database": self.database, "dry_run": self.dry_run,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "changed": self.changed, "ok": self.ok, "summary": self.summary(),
            "plan": [s.as_dict() for s in self.plan], "tables": [t.as_dict() for t in self.tables],
            "lock_retries": self.lock_retries, "recorded": self.recorded,
        }


# --- planning -----------------------------------------------------------------------------------------------


def _ident(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def _regclass(schema: str, name: str) -> sql.Composable:
    """``to_regclass`` of an exact schema and name, quoted by the server (the names are values here)."""
    return sql.SQL("to_regclass(quote_ident({}) || '.' || quote_ident({}))").format(
        sql.Literal(schema), sql.Literal(name))


def _referenced(connection: Conn, oid: int) -> list[tuple[str, str]]:
    """Tables referenced by the foreign keys of relation ``oid``, in oid order (the last in the lock order)."""
    rows = execute(connection, sql.SQL(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid IN (SELECT k.confrelid FROM pg_constraint k WHERE k.conrelid = {} AND k.contype = 'f') "
        "AND c.oid <> {} ORDER BY c.oid"
    ).format(sql.Literal(oid), sql.Literal(oid)))
    return [(str(r[0]), str(r[1])) for r in rows]


def _default_months(connection: Conn, table: ManagedTable, default: Partition) -> dict[datetime, int]:
    """Rows waiting in the DEFAULT partition, per UTC month (a scan of it, under ACCESS SHARE only)."""
    if not one(connection, sql.SQL("SELECT EXISTS (SELECT FROM ONLY {})").format(default.ident)):
        return {}
    rows = execute(connection, sql.SQL(
        "SELECT date_trunc('month', {col}, 'UTC'), count(*) FROM ONLY {default} GROUP BY 1 ORDER BY 1"
    ).format(col=sql.Identifier(table.column), default=default.ident))
    return {naming.month_start(r[0]): int(r[1]) for r in rows}


def _guards(connection: Conn, table: ManagedTable, default: Partition) -> dict[datetime, bool]:
    """Guards on the DEFAULT partition (left by an interrupted seal): month -> validated."""
    rows = execute(connection, sql.SQL(
        "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = {} AND contype = 'c' "
        "AND starts_with(conname, {})"
    ).format(sql.Literal(default.oid), sql.Literal(GUARD_PREFIX)))
    found = {}
    for name, validated in rows:
        match = _GUARD.match(str(name))
        if match is not None:
            found[datetime(int(match["year"]), int(match["month"]), 1, tzinfo=UTC)] = bool(validated)
    return found


def _overlaps(partition: Partition, start: datetime, end: datetime) -> bool:
    if partition.is_default:
        return False
    below = partition.lower is None or partition.lower < end
    above = partition.upper is None or partition.upper > start
    return below and above


@dataclass
class _TablePlan:
    table: ManagedTable
    steps: list[Step]
    report: TableReport


def _plan_table(connection: Conn, table: ManagedTable, now: datetime,
                months: set[datetime] | None = None) -> _TablePlan:
    """The table's steps; with ``months`` (:func:`create_month_partitions`), only creating those, nothing retired."""
    report = TableReport(table.qualified)
    assert table.oid is not None
    parts = partitions_of(connection, table.oid)
    default = next((p for p in parts if p.is_default), None)
    steps: list[Step] = []
    parent_locks = [f"SHARE ROW EXCLUSIVE on {s}.{n}" for s, n in _referenced(connection, table.oid)]

    current = naming.month_start(now)
    horizon = naming.add_months(current, table.premake + 1)
    waiting = _default_months(connection, table, default) if default else {}
    guards = _guards(connection, table, default) if default else {}
    draining = {naming.month_start(p.lower): p for p in parts if p.state == "draining" and p.lower}
    wanted = {naming.add_months(current, i) for i in range(table.premake + 1)}
    wanted |= {m for m in waiting if m < horizon} | set(guards) | set(draining)
    beyond = {m: n for m, n in waiting.items() if m >= horizon}
    if months is not None:
        wanted, beyond = {naming.month_start(m) for m in months}, {}
    if beyond:
        first = min(beyond)
        report.warnings.append(
            f"{sum(beyond.values())} rows of {len(beyond)} month(s) from {_month_label(first)} on stay in the "
            f"DEFAULT partition: beyond the premake horizon ({_month_label(horizon)})"
        )
    attached = [p for p in parts if p.state != "draining"]
    for month in sorted(wanted):
        start, end = naming.month_bounds(month)
        name = naming.partition_name(table.table, month)
        overlapping = [p for p in attached if _overlaps(p, start, end)]
        if overlapping:
            if waiting.get(month):
                report.warnings.append(
                    f"{waiting[month]} rows of {_month_label(month)} stay in the DEFAULT partition: the month overlaps "
                    f"partition {overlapping[0].qualified}, which is not a month partition")
            continue
        resume = month in draining
        if not resume and one(connection, sql.SQL("SELECT {} IS NOT NULL").format(_regclass(table.schema, name))):
            report.errors.append(str(PartitionConflict(
                f"{table.schema}.{name}", "a table of that name exists and is not one maintenance is filling; "
                f"month {_month_label(month)} was not created", hint="rename or drop it")))
            continue
        create_locks = [f"SHARE UPDATE EXCLUSIVE on {table.qualified}",
                        f"ACCESS EXCLUSIVE on {table.schema}.{name} (new)"]
        if default:
            create_locks.append(f"ACCESS EXCLUSIVE on {default.qualified} (no scan: guard constraint)")
        create_locks.extend(lock.replace("SHARE ROW EXCLUSIVE", "ACCESS EXCLUSIVE") if waiting.get(month) or resume
                            else lock for lock in parent_locks)
        steps.append(Step(
            "create", table.qualified, f"{table.schema}.{name}", _month_label(month),
            drain_rows=waiting.get(month, 0), resume=resume, locks=tuple(create_locks),
        ))

    cutoff = None
    if table.retention is not None and months is None:
        cutoff = one(connection, sql.SQL("SELECT CAST({} AS timestamptz) - CAST({} AS interval)").format(
            sql.Literal(now), sql.Literal(table.retention)))
    created = [s for s in steps if s.action == "create"]
    retirees: list[tuple[datetime | None, str, str]] = []
    for p in attached:
        if p.is_default:
            continue
        past = cutoff is not None and p.upper is not None and p.upper <= cutoff
        if p.state == "detach pending":
            retirees.append((p.lower, p.qualified, "retire" if past else "finalize"))
        elif past:
            retirees.append((p.lower, p.qualified, "retire"))
    for step in created:
        assert step.month is not None
        start = _month_of(step.month)
        if cutoff is not None and naming.add_months(start, 1) <= cutoff:
            retirees.append((start, step.partition, "retire"))
    for _lower, qualified, action in sorted(retirees, key=lambda r: (r[0] is not None, r[0] or current)):
        if default is None:
            detach_locks: tuple[str, ...] = (
                f"SHARE UPDATE EXCLUSIVE on {table.qualified} and {qualified} (DETACH CONCURRENTLY)",)
        else:
            detach_locks = (f"ACCESS EXCLUSIVE on {table.qualified}", f"ACCESS EXCLUSIVE on {qualified}",
                            f"ACCESS EXCLUSIVE on {default.qualified}", *parent_locks)
        steps.append(Step(
            action, table.qualified, qualified, retention_action=table.retention_action if action == "retire" else None,
            concurrently=default is None, locks=detach_locks,
        ))
    return _TablePlan(table, steps, report)


# --- execution ----------------------------------------------------------------------------------------------


@dataclass
class _Month:
    """A month partition being made: its table, bounds, the DEFAULT partition it drains, rows moved so far."""

    name: str
    target: sql.Identifier
    start: datetime
    end: datetime
    default: Partition | None
    moved: int = 0
    #: Why rows must not be moved out of the DEFAULT partition, if they must not (checked when there are some).
    unsafe: str | None = None


class _Maintainer:
    """Executes the plan on one connection (plus an autocommit one for ``DETACH ... CONCURRENTLY``)."""

    def __init__(self, engine: sa.Engine, target: Target, connection: sa.Connection, *, lock_timeout: float,
                 policy: RetryPolicy, batch_rows: int, run_id: uuid.UUID) -> None:
        self.engine = engine
        self.target = target
        self.connection = connection
        self.lock_timeout = lock_timeout
        self.policy = policy
        self.batch_rows = batch_rows
        self.run_id = run_id
        self.retries = 0
        self.watch: BlockerWatch | None = None
        self._auto: sa.Connection | None = None

    # -- transactions and locks

    def _set_lock_timeout(self, connection: sa.Connection, local: bool = True) -> None:
        execute(connection, sql.SQL("SET {} lock_timeout = {}").format(
            sql.SQL("LOCAL" if local else "SESSION"), sql.Literal(f"{max(1, int(self.lock_timeout * 1000))}ms")))

    def step(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` in one transaction under ``lock_timeout``, retried on lock timeouts (55P03)."""
        if self.connection.in_transaction():
            self.connection.commit()
        if self.watch is not None:
            self.watch.forget()  # blockers seen during an earlier step are not this one's
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            with self.connection.begin():
                self._set_lock_timeout(self.connection)
                return fn()

        try:
            return retry_on_lock_timeout(attempt, self.connection, self.policy, what=what, watch=self.watch)
        finally:
            self.retries += max(0, attempts - 1)

    def lock(self, *relations: tuple[sql.Identifier, str]) -> None:
        """``LOCK TABLE ONLY`` each relation in the given order (the caller gives the fixed order)."""
        for ident, mode in relations:
            execute(self.connection, sql.SQL("LOCK TABLE ONLY {} IN {} MODE").format(ident, sql.SQL(mode)))

    def auto(self) -> sa.Connection:
        """An autocommit connection, for ``DETACH ... CONCURRENTLY`` (which refuses to run in a transaction)."""
        if self._auto is None:
            self._auto = connect(self.engine, self.target).execution_options(isolation_level="AUTOCOMMIT")
            self._set_lock_timeout(self._auto, local=False)
            self._auto.commit()
        return self._auto

    @property
    def watch_interval(self) -> float:
        """How often the blocker watch looks: several times per ``lock_timeout``, or it could miss the blocker."""
        return max(0.02, min(0.2, self.lock_timeout / 3))

    def close(self) -> None:
        if self._auto is not None:
            self._auto.close()

    # -- create (and drain)

    def prepare(self, table: ManagedTable, step: Step) -> _Month:
        """First half of a ``create``: the month's standalone table, and the bulk of the rows moved into it.

        All months of a run are prepared before any is sealed, so each seal's
        VALIDATE scans a DEFAULT partition that holds little more than rows no
        month will take.
        """
        assert step.month is not None and table.oid is not None
        start, end = naming.month_bounds(_month_of(step.month))
        name = naming.partition_name(table.table, start)
        parts = partitions_of(self.connection, table.oid)
        default = next((p for p in parts if p.is_default), None)
        draining = any(p.name == name and p.state == "draining" for p in parts)
        unsafe = self._unsafe_drain(table, default) if default is not None else None
        if unsafe and (step.drain_rows or draining):
            raise PartitionConflict(default.qualified if default else table.qualified, unsafe)
        month = _Month(name, _ident(table.schema, name), start, end, default, unsafe=unsafe)
        if not draining:
            self.step(f"create {table.schema}.{name}",
                      lambda: self._create_table(table, month.target, start, end, with_fks=bool(step.drain_rows)))
        if default is not None:
            month.moved = self._drain(table, month, sweeps=_BULK_SWEEPS, skip_locked=True)
        return month

    def complete(self, table: ManagedTable, month: _Month, report: TableReport) -> None:
        """Second half of a ``create``: guard and seal the DEFAULT partition (if any), then ATTACH."""
        qualified = f"{table.schema}.{month.name}"
        default = month.default
        if default is not None:
            guard = _guard_name(month.start)
            opened = time.monotonic()
            self.step(f"guard {default.qualified} for {_month_label(month.start)}",
                      lambda: self._add_guard(table, default, guard, month.start, month.end))
            month.moved += self._seal(table, month, guard)
            self.step(f"attach {qualified}",
                      lambda: self._attach(table, month.name, month.start, month.end, default, guard))
            report.guard_ms[qualified] = round((time.monotonic() - opened) * 1000, 1)
        else:
            self.step(f"attach {qualified}",
                      lambda: self._attach(table, month.name, month.start, month.end, None, None))
        if month.moved:
            report.drained[qualified] = month.moved
        report.created.append(qualified)

    def _unsafe_drain(self, table: ManagedTable, default: Partition) -> str | None:
        """Why rows must not be moved out of the DEFAULT partition (a DELETE there would do more than move them)."""
        referencing = execute(self.connection, sql.SQL(
            "SELECT conname, conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' AND confrelid IN ({}, {})"
        ).format(sql.Literal(table.oid), sql.Literal(default.oid)))
        if referencing:
            return (f"its rows cannot be moved: {referencing[0][1]} references them (foreign key "
                    f"{referencing[0][0]}), a DELETE would cascade or fail")
        triggers = execute(self.connection, sql.SQL(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = {} AND NOT tgisinternal AND tgenabled <> 'D' "
            "AND (tgtype & 8) <> 0 ORDER BY tgname"
        ).format(sql.Literal(default.oid)))
        if triggers:
            return (f"its rows cannot be moved: DELETE trigger {triggers[0][0]} would fire for them "
                    "(disable it on the DEFAULT partition while maintenance drains it)")
        return None

    def _create_table(self, table: ManagedTable, target: sql.Identifier, start: datetime, end: datetime, *,
                      with_fks: bool) -> None:
        """The month's table, standalone: like the parent (indexes, defaults, CHECKs) plus a CHECK of its bounds.

        Its bounds CHECK is valid at once (the table is empty) and spares ATTACH
        its scan.  A table that will receive drained rows also gets the parent's
        foreign keys now, while it is empty: ATTACH then adopts them instead of
        validating them by a scan while holding its locks.
        """
        assert table.oid is not None
        execute(self.connection, sql.SQL(
            "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES "
            "INCLUDING STORAGE INCLUDING STATISTICS INCLUDING GENERATED INCLUDING COMPRESSION)"
        ).format(target, table.ident))
        execute(self.connection, sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({col} >= {} AND {col} < {})").format(
            target, sql.Identifier(BOUNDS_CONSTRAINT), sql.Literal(start), sql.Literal(end),
            col=sql.Identifier(table.column)))
        owner = one(self.connection, sql.SQL(
            "SELECT CASE WHEN c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user) "
            "THEN pg_get_userbyid(c.relowner) END FROM pg_class c WHERE c.oid = {}").format(sql.Literal(table.oid)))
        if owner:
            execute(self.connection, sql.SQL("ALTER TABLE {} OWNER TO {}").format(target, sql.Identifier(owner)))
        if with_fks:
            self.lock(*((_ident(s, n), "SHARE ROW EXCLUSIVE") for s, n in _referenced(self.connection, table.oid)))
            for name, definition in execute(self.connection, sql.SQL(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = {} AND contype = 'f' AND conparentid = 0 ORDER BY conname"
            ).format(sql.Literal(table.oid))):
                # The definition is the catalogue's own text of the parent's constraint, not user input.
                execute(self.connection, sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                    target, sql.Identifier(name)) + sql.SQL(definition))

    def _drain(self, table: ManagedTable, month: _Month, *, sweeps: int, skip_locked: bool) -> int:
        """Move the month's rows out of the DEFAULT partition, ``batch_rows`` per transaction.

        Each batch is one statement: ``DELETE ... RETURNING`` feeding an
        ``INSERT``, so a row is committed in exactly one of the two tables.  A
        sweep walks the DEFAULT partition once in physical order (``ctid``);
        sweeps repeat while the last one found rows (rows updated or inserted
        behind it), up to ``sweeps``.  With ``skip_locked`` a row a writer
        holds is left for a later sweep; without, the batch waits for it
        (bounded by ``lock_timeout``, then retried).

        .. warning::
           Until the month's table is attached, the rows moved into it are not
           seen through the parent: a query, an UPDATE or a DELETE of them
           through the parent finds nothing.  That is why maintenance keeps
           months ahead (``premake``): normally there is nothing to move.
        """
        default = month.default
        assert default is not None
        col = sql.Identifier(table.column)
        in_month = sql.SQL("{col} >= {start} AND {col} < {end}").format(
            col=col, start=sql.Literal(month.start), end=sql.Literal(month.end))
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in self._columns(table))
        total = 0
        for _ in range(sweeps):
            if month.unsafe and one(self.connection, sql.SQL("SELECT EXISTS (SELECT FROM ONLY {} WHERE {})").format(
                    default.ident, in_month)):
                raise PartitionConflict(default.qualified, month.unsafe)
            after = "(0,0)"
            swept = 0
            while True:
                statement = sql.SQL(
                    "WITH batch AS (SELECT ctid FROM ONLY {default} WHERE ctid > CAST({after} AS tid) "
                    "AND {in_month} LIMIT {n} FOR UPDATE{skip}), "
                    "moved AS (DELETE FROM ONLY {default} WHERE ctid = ANY (ARRAY(SELECT ctid FROM batch)) "
                    "RETURNING ctid AS agentdb_ctid, {columns}), "
                    "copied AS (INSERT INTO {target} ({columns}) SELECT {columns} FROM moved) "
                    "SELECT count(*), max(agentdb_ctid)::text FROM moved"
                ).format(
                    default=default.ident, after=sql.Literal(after), in_month=in_month,
                    n=sql.Literal(self.batch_rows), skip=sql.SQL(" SKIP LOCKED" if skip_locked else ""),
                    columns=columns, target=month.target,
                )
                count, last = self.step(
                    f"drain {default.qualified}", functools.partial(_first_row, self.connection, statement))
                if not count:
                    break
                swept += int(count)
                after = str(last)
            total += swept
            if not swept:
                break
        return total

    def _columns(self, table: ManagedTable) -> list[str]:
        """The parent's stored columns (generated ones are computed again on insert)."""
        return [str(r[0]) for r in execute(self.connection, sql.SQL(
            "SELECT attname FROM pg_attribute WHERE attrelid = {} AND attnum > 0 AND NOT attisdropped "
            "AND attgenerated = '' ORDER BY attnum").format(sql.Literal(table.oid)))]

    def _add_guard(self, table: ManagedTable, default: Partition, guard: str, start: datetime, end: datetime) -> None:
        """``CHECK (NOT this month) NOT VALID`` on the DEFAULT partition: ACCESS EXCLUSIVE on it, no scan."""
        exists = one(self.connection, sql.SQL(
            "SELECT EXISTS (SELECT FROM pg_constraint WHERE conrelid = {} AND conname = {})"
        ).format(sql.Literal(default.oid), sql.Literal(guard)))
        if exists:
            return
        self.lock((table.ident, "ACCESS SHARE"), (default.ident, "ACCESS EXCLUSIVE"))
        execute(self.connection, sql.SQL(
            "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({col} < {} OR {col} >= {}) NOT VALID"
        ).format(default.ident, sql.Identifier(guard), sql.Literal(start), sql.Literal(end),
                 col=sql.Identifier(table.column)))

    def _seal(self, table: ManagedTable, month: _Month, guard: str) -> int:
        """Move the rows written before the guard, then VALIDATE it (SHARE UPDATE EXCLUSIVE: a scan nobody waits on)."""
        default = month.default
        assert default is not None
        moved = 0
        for _ in range(_SEAL_ROUNDS):
            moved += self._drain(table, month, sweeps=1, skip_locked=False)
            try:
                self.step(f"validate {guard} on {default.qualified}", lambda: self._validate(table, default, guard))
                return moved
            except DBAPIError as exc:
                if sqlstate_of(exc) != CHECK_VIOLATION:
                    raise
        raise PartitionConflict(default.qualified, f"rows of the month keep appearing; {guard} could not be validated")

    def _validate(self, table: ManagedTable, default: Partition, guard: str) -> None:
        self.lock((table.ident, "ACCESS SHARE"), (default.ident, "SHARE UPDATE EXCLUSIVE"))
        execute(self.connection, sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
            default.ident, sql.Identifier(guard)))

    def _attach(self, table: ManagedTable, name: str, start: datetime, end: datetime,
                default: Partition | None, guard: str | None) -> None:
        """``ATTACH PARTITION``: locks taken first in the fixed order; no scan (both CHECKs prove the bounds)."""
        assert table.oid is not None
        target = _ident(table.schema, name)
        has_fks = bool(one(self.connection, sql.SQL(
            "SELECT EXISTS (SELECT FROM pg_constraint WHERE conrelid = {} AND contype = 'f')"
        ).format(_regclass(table.schema, name))))
        # Adopting the table's own foreign key drops its triggers on the referenced table: ACCESS EXCLUSIVE there;
        # cloning the parent's onto the (then empty) table validates it under SHARE ROW EXCLUSIVE.
        mode = "ACCESS EXCLUSIVE" if has_fks else "SHARE ROW EXCLUSIVE"
        self.lock((table.ident, "SHARE UPDATE EXCLUSIVE"), (target, "ACCESS EXCLUSIVE"))
        if default is not None:
            self.lock((default.ident, "ACCESS EXCLUSIVE"))
        self.lock(*((_ident(s, n), mode) for s, n in _referenced(self.connection, table.oid)))
        execute(self.connection, sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            table.ident, target, sql.Literal(start), sql.Literal(end)))
        if default is not None and guard is not None:
            execute(self.connection, sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
                default.ident, sql.Identifier(guard)))
        execute(self.connection, sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            target, sql.Identifier(BOUNDS_CONSTRAINT)))

    # -- retire

    def retire(self, table: ManagedTable, step: Step, report: TableReport) -> None:
        assert table.oid is not None
        parts = {p.qualified: p for p in partitions_of(self.connection, table.oid, include_draining=False)}
        partition = parts.get(step.partition)
        if partition is None:
            raise PartitionConflict(step.partition, "it is no longer a partition of " + table.qualified)
        default = next((p for p in parts.values() if p.is_default), None)
        schema, name = partition.schema, partition.name
        if partition.state == "detach pending":
            self._concurrently(table, partition)
            report.finalized.append(partition.qualified)
        elif default is None:
            self._concurrently(table, partition)
        else:
            self.step(f"detach {partition.qualified}", lambda: self._detach(table, partition, default))
        if step.action == "finalize" or step.retention_action is None:
            return
        report.detached.append(partition.qualified)
        ident = _ident(schema, name)
        if step.retention_action not in {"archive", "drop"}:
            return
        rows = self.step(f"count {partition.qualified}", lambda: int(one(
            self.connection, sql.SQL("SELECT count(*) FROM {}").format(ident))))
        if step.retention_action == "archive" and rows:
            archive = self.step(f"archive {partition.qualified}", lambda: self._archive(schema, name, rows))
            report.archived.append({"partition": partition.qualified, "archive": f"{ARCHIVE_SCHEMA}.{archive}",
                                    "rows": rows})
        else:  # dropped, or archived with no rows to keep: dropped like an empty table in a rollback
            self.step(f"drop {partition.qualified}", lambda: self._drop(schema, name))
            report.dropped.append({"partition": partition.qualified, "rows": rows})

    def _detach(self, table: ManagedTable, partition: Partition, default: Partition) -> None:
        """Plain DETACH (PostgreSQL refuses CONCURRENTLY while a DEFAULT partition exists): ACCESS EXCLUSIVE on the
        parent for the moment of the catalogue change, locks taken in the fixed order first."""
        assert table.oid is not None
        self.lock((table.ident, "ACCESS EXCLUSIVE"), (partition.ident, "ACCESS EXCLUSIVE"),
                  (default.ident, "ACCESS EXCLUSIVE"))
        self.lock(*((_ident(s, n), "SHARE ROW EXCLUSIVE") for s, n in _referenced(self.connection, table.oid)))
        execute(self.connection, sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(table.ident, partition.ident))

    def _concurrently(self, table: ManagedTable, partition: Partition) -> None:
        """``DETACH ... CONCURRENTLY`` (or ``FINALIZE``) on the autocommit connection, retried on lock timeouts.

        Its second transaction waits for every transaction that could still see
        the partition; a lock timeout there leaves the detach pending, and the
        retry finalizes it.
        """
        connection = self.auto()
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            try:
                pending = one(connection, sql.SQL(
                    "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = {} AND inhparent = {}"
                ).format(sql.Literal(partition.oid), sql.Literal(table.oid)))
                if pending is not None:
                    execute(connection, sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(
                        table.ident, partition.ident, sql.SQL("FINALIZE" if pending else "CONCURRENTLY")))
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

        pid = int(one(connection, sql.SQL("SELECT pg_backend_pid()")))
        connection.commit()
        try:
            with BlockerWatch(self.target.conninfo(), pid, interval=self.watch_interval) as watch:
                retry_on_lock_timeout(attempt, connection, self.policy, what=f"detach {partition.qualified}",
                                      watch=watch)
        finally:
            self.retries += max(0, attempts - 1)

    def _archive(self, schema: str, name: str, rows: int) -> str:
        """Move the detached partition into the archive schema and record it in ``agentdb.archived_tables``.

        Its foreign keys are dropped first (the archive keeps rows, not
        constraints, and must not stop a downgrade from dropping the tables
        they reference): that takes ACCESS EXCLUSIVE on the referenced tables
        for a moment, after the partition's own lock (the fixed order).
        """
        self._ensure_archive()
        ident = _ident(schema, name)
        oid = one(self.connection, sql.SQL("SELECT {}::int8").format(_regclass(schema, name)))
        self._drop_foreign_keys(int(oid), ident)
        archive = _archive_name(name)
        execute(self.connection, sql.SQL("ALTER TABLE {} RENAME TO {}").format(ident, sql.Identifier(archive)))
        execute(self.connection, sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
            _ident(schema, archive), sql.Identifier(ARCHIVE_SCHEMA)))
        execute(self.connection, sql.SQL(
            "INSERT INTO {} (table_schema, table_name, archive_table, revision, run_id, row_count) "
            "VALUES ({}, {}, {}, NULL, {}, {})"
        ).format(_ident(history.INTERNAL_SCHEMA, REGISTRY_TABLE), sql.Literal(schema), sql.Literal(name),
                 sql.Literal(archive), sql.Literal(str(self.run_id)), sql.Literal(rows)))
        return archive

    def _drop_foreign_keys(self, oid: int, ident: sql.Identifier) -> None:
        referenced = _referenced(self.connection, oid)
        self.lock((ident, "ACCESS EXCLUSIVE"), *((_ident(s, n), "ACCESS EXCLUSIVE") for s, n in referenced))
        for (constraint,) in execute(self.connection, sql.SQL(
                "SELECT conname FROM pg_constraint WHERE conrelid = {} AND contype = 'f' ORDER BY conname"
        ).format(sql.Literal(oid))):
            execute(self.connection, sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                ident, sql.Identifier(constraint)))

    def _ensure_archive(self) -> None:
        """The archive schema and its registry, created as the rollback creates them when missing.

        (:mod:`agentdb.runtime.archive` keeps that step private; its DDL is public.)
        """
        registry = f"{history.INTERNAL_SCHEMA}.{REGISTRY_TABLE}"
        if not one(self.connection, sql.SQL("SELECT to_regclass({})").format(sql.Literal(registry))):
            execute(self.connection, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(history.INTERNAL_SCHEMA)))
            for statement in REGISTRY_DDL:
                execute(self.connection, sql.SQL(statement))  # constant text
        execute(self.connection, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(ARCHIVE_SCHEMA)))

    def _drop(self, schema: str, name: str) -> None:
        ident = _ident(schema, name)
        oid = one(self.connection, sql.SQL("SELECT {}::int8").format(_regclass(schema, name)))
        referenced = _referenced(self.connection, int(oid))
        self.lock((ident, "ACCESS EXCLUSIVE"), *((_ident(s, n), "ACCESS EXCLUSIVE") for s, n in referenced))
        execute(self.connection, sql.SQL("DROP TABLE {}").format(ident))


def _first_row(connection: Conn, statement: Statement) -> tuple[Any, ...]:
    return execute(connection, statement)[0]


def _archive_name(partition: str) -> str:
    suffix = f"_{uuid.uuid4().hex[:8]}"
    return naming.fit_identifier(partition, suffix)


# --- the run ------------------------------------------------------------------------------------------------


def _lock_holder(connection: sa.Connection) -> Blocker | None:
    rows = execute(connection, sql.SQL(
        "SELECT a.pid, coalesce(a.query, ''), coalesce(a.application_name, ''), "
        "extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::float8 FROM pg_stat_activity a "
        "WHERE a.pid IN (SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid = {} AND l.objid = {} AND l.objsubid = 1) ORDER BY a.pid"
    ).format(sql.Literal(_KEY_HI), sql.Literal(_KEY_LO)))
    if not rows:
        return None
    pid, query, application, held = rows[0]
    return Blocker(pid=int(pid), query=mask_literals(str(query)), held_for_seconds=held,
                   application_name=str(application))


@contextmanager
def _maintenance_lock(connection: sa.Connection, wait: float, poll: float = 0.1) -> Iterator[None]:
    """The session-level advisory lock that keeps maintenance runs apart; waits up to ``wait`` seconds."""
    started = time.monotonic()
    while True:
        got = one(connection, sql.SQL("SELECT pg_try_advisory_lock({})").format(sql.Literal(MAINTENANCE_LOCK_KEY)))
        if got:
            connection.commit()
            break
        holder = _lock_holder(connection)
        connection.commit()
        waited = time.monotonic() - started
        if waited >= wait:
            raise PartitionMaintenanceLocked(waited, holder)
        time.sleep(poll + random.uniform(0, poll))
    try:
        yield
    except BaseException:
        # A Ctrl-C can leave the connection mid-query: a failing unlock must not hide why we stopped.
        # Closing the connection releases the session lock anyway.
        try:
            _unlock(connection)
        except Exception:
            connection.invalidate()
        raise
    _unlock(connection)


def _unlock(connection: sa.Connection) -> None:
    if connection.in_transaction():
        connection.rollback()
    execute(connection, sql.SQL("SELECT pg_advisory_unlock({})").format(sql.Literal(MAINTENANCE_LOCK_KEY)))
    connection.commit()


def _record(maintainer: _Maintainer, report: MaintenanceReport, error: str | None) -> None:
    connection = maintainer.connection
    if connection.in_transaction():
        connection.rollback()
    history.bootstrap(connection)  # also lets an older history table accept the direction maintain
    assert report.finished_at is not None
    report.recorded = True
    record = history.RunRecord(
        run_id=report.run_id, revision=HISTORY_REVISION, direction="maintain", started_at=report.started_at,
        finished_at=report.finished_at, success=error is None, description=report.summary()[:500],
        error=error, details=report.as_dict(),
    )
    maintainer.step("record the run", lambda: history.record_run(connection, record))


def _failure(exc: BaseException) -> str:
    """One line for the report: an agentdb error's message, or a database error's SQLSTATE and primary message."""
    if isinstance(exc, AgentdbError):
        return str(exc)
    if isinstance(exc, DBAPIError):
        primary = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else "database error"
        return f"[SQLSTATE {sqlstate_of(exc) or '?'}] {primary}"
    return f"{type(exc).__name__}: {exc}"


def maintain_partitions(
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    table: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    lock_timeout: float = 0.2,
    lock_retries: int = 20,
    retry_delay: float = 0.25,
    lock_wait: float = 5.0,
    batch_rows: int = 5000,
    record_noop: bool = False,
) -> MaintenanceReport:
    """Bring the partitions of every managed table (or only ``table``) up to date; see the module docstring.

    ``now`` is the moment to maintain for (default: the server's ``now()``).
    ``lock_timeout`` bounds each wait for a lock (and so how long anyone can
    queue behind maintenance), ``lock_retries``/``retry_delay`` how often and
    how patiently a step is retried; ``lock_wait`` is how long to wait for
    another maintenance run before refusing.  A run that changed nothing is
    not written to the run history unless ``record_noop``.  Raises
    :class:`~agentdb.errors.PartitionMaintenanceFailed` (with the report as
    ``.report``) when part of the work failed; the rest is done and recorded.
    """
    if batch_rows < 1:
        raise PartitionTableInvalid(table or "?", f"batch_rows {batch_rows} must be at least 1")
    settings = RunSettings.from_sources({}, {}).merged(
        database_url=database_url, data_dir=str(data_dir) if data_dir else None)
    target = resolve(settings.database_url, settings.data_dir)
    engine = create_engine(target)
    report = MaintenanceReport(uuid.uuid4(), target.redacted(), dry_run, datetime.now(UTC))
    try:
        with connect(engine, target) as connection:
            maintainer = _Maintainer(
                engine, target, connection, lock_timeout=lock_timeout,
                policy=RetryPolicy(attempts=lock_retries, base_delay=retry_delay, max_delay=5.0),
                batch_rows=batch_rows, run_id=report.run_id)
            try:
                _run(maintainer, report, table=table, now=now, lock_wait=lock_wait, record_noop=record_noop)
            finally:
                maintainer.close()
    finally:
        engine.dispose()
    failed = [f"{t.table}: {t.error}" for t in report.tables if t.error]
    if failed:
        error = PartitionMaintenanceFailed(failed)
        error.report = report
        raise error
    return report


def create_month_partitions(
    table: str,
    months: Iterable[datetime],
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    lock_timeout: float = 0.2,
    lock_retries: int = 20,
    retry_delay: float = 0.25,
    lock_wait: float = 5.0,
    batch_rows: int = 5000,
) -> MaintenanceReport:
    """Give each of ``months`` of ``table`` its month partition, past months included (a bulk import's rows).

    The months are made exactly as :func:`maintain_partitions` makes one (same
    locks in the same order, same lock, rows of the month drained out of the
    DEFAULT partition first, recorded in the run history when something was
    created), but nothing else is done: no premake, no retention.  ``table``
    need not be registered: a table partitioned by RANGE on one ``timestamptz``
    column is enough (its registration, if any, is used).  A month already
    covered is left alone.  Raises :class:`~agentdb.errors.PartitionMaintenanceFailed`
    (``.report`` attached) when a month could not be made.
    """
    if batch_rows < 1:
        raise PartitionTableInvalid(table, f"batch_rows {batch_rows} must be at least 1")
    settings = RunSettings.from_sources({}, {}).merged(
        database_url=database_url, data_dir=str(data_dir) if data_dir else None)
    target = resolve(settings.database_url, settings.data_dir)
    engine = create_engine(target)
    report = MaintenanceReport(uuid.uuid4(), target.redacted(), False, datetime.now(UTC))
    wanted = {naming.month_start(m) for m in months}
    try:
        with connect(engine, target) as connection:
            managed = _managed_or_partitioned(connection, table)
            connection.commit()
            maintainer = _Maintainer(
                engine, target, connection, lock_timeout=lock_timeout,
                policy=RetryPolicy(attempts=lock_retries, base_delay=retry_delay, max_delay=5.0),
                batch_rows=batch_rows, run_id=report.run_id)
            try:
                if wanted:
                    _create_months(maintainer, report, managed, wanted, lock_wait)
            finally:
                maintainer.close()
    finally:
        engine.dispose()
    report.finished_at = report.finished_at or datetime.now(UTC)
    failed = [f"{t.table}: {t.error}" for t in report.tables if t.error]
    if failed:
        error = PartitionMaintenanceFailed(failed)
        error.report = report
        raise error
    return report


def _managed_or_partitioned(connection: sa.Connection, table: str) -> ManagedTable:
    """The catalogue's row of ``table``, or one made up for a partitioned table that is not registered."""
    found = find_table(connection, table)
    registered = managed_tables(connection, found.qualified)
    if registered:
        return registered[0]
    key = execute(connection, sql.SQL(
        "SELECT a.attname FROM pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = p.partrelid "
        "AND a.attnum = p.partattrs[0] WHERE p.partrelid = {}").format(sql.Literal(found.oid)))
    column = str(key[0][0]) if key else ""
    _check_parent(connection, found, column)
    return ManagedTable(found.schema, found.name, column, premake=0, retention=None, retention_action="detach",
                        oid=found.oid)


def _create_months(maintainer: _Maintainer, report: MaintenanceReport, managed: ManagedTable,
                   months: set[datetime], lock_wait: float) -> None:
    connection = maintainer.connection
    with _maintenance_lock(connection, lock_wait):
        pid = int(one(connection, sql.SQL("SELECT pg_backend_pid()")))
        connection.commit()
        with BlockerWatch(maintainer.target.conninfo(), pid, interval=maintainer.watch_interval) as watch:
            maintainer.watch = watch
            with _online_changes_held_off(connection, managed) as busy:
                if busy:
                    skipped = _skipped(managed, busy)
                    skipped.errors.append(busy)
                    report.tables.append(skipped)
                else:
                    moment = _moment(connection, None)
                    connection.commit()
                    if managed.oid is None:
                        raise PartitionTableInvalid(managed.qualified, "it is no partitioned table any more")
                    plan = _plan_table(connection, managed, moment, months)
                    connection.commit()
                    report.plan.extend(plan.steps)
                    report.tables.append(plan.report)
                    _execute(maintainer, managed, plan.steps, plan.report)
            maintainer.watch = None
        report.lock_retries = maintainer.retries
        report.finished_at = datetime.now(UTC)
        failed = [f"{t.table}: {t.error}" for t in report.tables if t.error]
        if report.changed or failed:
            _record(maintainer, report, "; ".join(failed) or None)


def _run(maintainer: _Maintainer, report: MaintenanceReport, *, table: str | None, now: datetime | None,
         lock_wait: float, record_noop: bool) -> None:
    connection = maintainer.connection
    tables = managed_tables(connection, table)
    if table is not None and not tables:
        found = find_table(connection, table)
        raise PartitionTableInvalid(
            found.qualified, "it is not managed (not in agentdb.partitioned_tables)",
            hint="register it first: agentdb.partitions.register(connection, table)")
    moment = _moment(connection, now)
    connection.commit()
    if report.dry_run:
        for managed in tables:
            busy = _online_change(connection, managed)
            planned = _skipped(managed, busy) if busy else _plan_or_error(connection, managed, moment, report)
            report.tables.append(planned)
        connection.rollback()
        report.finished_at = datetime.now(UTC)
        return
    with _maintenance_lock(connection, lock_wait):
        pid = int(one(connection, sql.SQL("SELECT pg_backend_pid()")))
        connection.commit()
        with BlockerWatch(maintainer.target.conninfo(), pid, interval=maintainer.watch_interval) as watch:
            maintainer.watch = watch
            for managed in tables:
                with _online_changes_held_off(connection, managed) as busy:
                    if busy:
                        report.tables.append(_skipped(managed, busy))
                        continue
                    table_report = _plan_or_error(connection, managed, moment, report)
                    report.tables.append(table_report)
                    _execute(maintainer, managed, [s for s in report.plan if s.table == managed.qualified],
                             table_report)
            maintainer.watch = None
        report.lock_retries = maintainer.retries
        report.finished_at = datetime.now(UTC)
        failed = [f"{t.table}: {t.error}" for t in report.tables if t.error]
        if report.changed or failed or record_noop:
            _record(maintainer, report, "; ".join(failed) or None)


def _skipped(managed: ManagedTable, reason: str) -> TableReport:
    table_report = TableReport(managed.qualified)
    table_report.warnings.append(reason)
    return table_report


def _online_change(connection: sa.Connection, managed: ManagedTable) -> str | None:
    """Why maintenance must leave the table alone: an unfinished online change of it (see :mod:`agentdb.online`)."""
    from agentdb.online import state as online  # imported here: agentdb.online imports this package's naming

    active = online.find_active(connection, managed.schema, managed.table)
    connection.commit()
    if active is None:
        return None
    return (f"online change #{active.id} ({active.kind}, {active.status} in phase {active.phase}) of "
            f"{managed.qualified} is unfinished: its partitions are left alone until it completes or is aborted")


@contextmanager
def _online_changes_held_off(connection: sa.Connection, managed: ManagedTable) -> Iterator[str | None]:
    """Hold the table's online-change lock while maintaining it, so that no online change of it starts meanwhile.

    Yields why the table must be skipped instead: another process drives an
    online change of it (the lock is taken; its pid is named), or one is
    unfinished (paused, failed, or left by a crash).
    """
    from agentdb.online import state as online

    if not online.try_table_lock(connection, managed.schema, managed.table):
        holder = online.lock_holder(connection, managed.schema, managed.table)
        connection.commit()
        yield (f"an online change of {managed.qualified} is running (pid {holder if holder else '?'}): "
               "its partitions are left alone")
        return
    try:
        yield _online_change(connection, managed)
    finally:
        online.release_table_lock(connection, managed.schema, managed.table)


def _moment(connection: sa.Connection, now: datetime | None) -> datetime:
    if now is None:
        value = one(connection, sql.SQL("SELECT now()"))
        assert isinstance(value, datetime)
        return value.astimezone(UTC)
    return now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)


def _plan_or_error(connection: sa.Connection, managed: ManagedTable, now: datetime,
                   report: MaintenanceReport) -> TableReport:
    if managed.oid is None:
        table_report = TableReport(managed.qualified)
        table_report.warnings.append(f"{managed.qualified} is registered but is no partitioned table any more")
        return table_report
    try:
        plan = _plan_table(connection, managed, now)
    except (AgentdbError, DBAPIError) as exc:
        if connection.in_transaction():
            connection.rollback()
        table_report = TableReport(managed.qualified)
        table_report.errors.append(_failure(exc))
        return table_report
    connection.commit()
    report.plan.extend(plan.steps)
    return plan.report


def _execute(maintainer: _Maintainer, managed: ManagedTable, steps: list[Step], report: TableReport) -> None:
    """Run the table's plan: prepare every month, then seal and attach each, then retire.

    A partition in the way (:class:`PartitionConflict`) is skipped and
    reported; any other failure ends the table's run (what is done stays done,
    and the next run resumes an interrupted month).
    """
    connection = maintainer.connection

    def attempt(step: Step, work: Callable[[], T]) -> tuple[bool, T | None]:
        try:
            return True, work()
        except PartitionConflict as exc:
            if connection.in_transaction():
                connection.rollback()
            report.errors.append(str(exc))
            return True, None
        except (AgentdbError, DBAPIError) as exc:
            if connection.in_transaction():
                connection.rollback()
            report.errors.append(f"{step.describe().split(';')[0]}: {_failure(exc)}")
            _log.warning("partition maintenance of %s failed: %s", managed.qualified, report.errors[-1])
            return False, None

    prepared: list[tuple[Step, _Month]] = []
    for step in (s for s in steps if s.action == "create"):
        go_on, month = attempt(step, functools.partial(maintainer.prepare, managed, step))
        if not go_on:
            return
        if month is not None:
            prepared.append((step, month))
    for step, month in prepared:
        go_on, _ = attempt(step, functools.partial(maintainer.complete, managed, month, report))
        if not go_on:
            return
    for step in (s for s in steps if s.action != "create"):
        go_on, _ = attempt(step, functools.partial(maintainer.retire, managed, step, report))
        if not go_on:
            return
