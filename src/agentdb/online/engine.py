"""The engine: executes a change's plan phase by phase, checkpointed, resumable, pausable, abortable.

One process drives a change at a time: it holds the table's advisory lock
(:func:`agentdb.online.state.try_table_lock`) on its one connection for as
long as it drives.  Each unit of work -- a step, a batch, the cut-over -- is
one transaction that also moves the change's row forward, so after a crash
(even ``kill -9``) the row says exactly where to carry on: at most the batch
or step in flight is lost, and it is redone.  Batches commit with
``synchronous_commit = off`` (``OnlineSettings.batch_synchronous_commit``): a
crash of the *server* can also lose the last few committed batches, each with
its checkpoint, which are redone the same way.

Between batches and steps the driver reads the row's ``requested`` flag
(``pause`` / ``abort``, set by :func:`pause` and :func:`abort` from any
process) and asks the throttle whether to wait.

A migration calls :func:`ensure`: it starts the change, resumes the
unfinished one, or does nothing when the table already is what the change
makes it, so running ``agentdb upgrade`` again after a crash carries on from
the checkpoint.

For tests, ``AGENTDB_ONLINE_KILL_AT`` names points (comma-separated) where the
driving process sends itself SIGKILL: ``<phase>:before``, ``<phase>:step:<n>``
and ``<phase>:after`` (after the commit), ``copy:batch:<n>`` (after the n-th
batch of this process committed; ``backfill:batch:<n>`` likewise),
``copy:batch:<n>:uncommitted`` (inside it),
``cutover:locked`` (swap done, locks held, not committed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.exc import DBAPIError

from agentdb.connection import APPLICATION_NAME, Target, connect, create_engine, resolve
from agentdb.errors import (
    AgentdbError,
    LockTimeout,
    OnlineChangeBusy,
    OnlineChangeNotFound,
    OnlineChangeRefused,
    OnlineFileChanged,
    OnlineLockTimeout,
    OnlineSourceChanged,
    OnlineStepFailed,
    OnlineVerifyFailed,
)
from agentdb.online import backfill as _backfill
from agentdb.online import state
from agentdb.online._sql import execute
from agentdb.online.catalog import describe, find_table
from agentdb.online.copy import begin as begin_copy
from agentdb.online.copy import next_batch
from agentdb.online.kinds import ChangeKind, get_kind, new_token
from agentdb.online.plan import Phase, Plan, Step
from agentdb.online.settings import OnlineSettings, ThrottleCheck
from agentdb.online.state import ChangeRecord
from agentdb.online.throttle import REPLICA_LAG_SQL, lag_reason, throttle_reason
from agentdb.online.verify import verify
from agentdb.runtime.history import file_checksum
from agentdb.runtime.locks import BlockerWatch, RetryPolicy, mask_literals, retry_on_lock_timeout, sqlstate_of

__all__ = [
    "KILL_ENV",
    "TUNABLE",
    "ChangeStatus",
    "Progress",
    "ProgressCallback",
    "abort",
    "complete",
    "ensure",
    "pause",
    "plan",
    "plan_on",
    "resume",
    "run",
    "start",
    "status",
    "tune",
]

_log = logging.getLogger("agentdb.online")

KILL_ENV = "AGENTDB_ONLINE_KILL_AT"
_DONE = "done"
#: Deadlock and serialization failures: a batch that loses one is simply run again.
_RETRY_BATCH = {"40P01", "40001"}
#: A catalogue-only swap never needs longer; a guard, not an expectation.
_CUTOVER_STATEMENT_TIMEOUT = "5s"

#: Autovacuum workers holding a lock on the change's tables (or their partitions): pid, whether it prevents
#: wraparound (never cancelled), and whether this role may cancel it (autovacuum runs as a superuser).
_AUTOVACUUM_SQL = """
SELECT DISTINCT a.pid, a.query LIKE '%(to prevent wraparound)%',
       coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false)
FROM pg_catalog.pg_stat_activity a
JOIN pg_catalog.pg_locks l ON l.pid = a.pid AND l.locktype = 'relation'
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
WHERE a.backend_type = 'autovacuum worker'
  AND l.relation IN (
    SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relname = ANY(:names)
    UNION ALL
    SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhparent
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relname = ANY(:names))
"""
#: lock_timeout of steps that take no lock the application needs (VALIDATE, ANALYZE): they may queue
#: behind autovacuum or another maintenance, never in front of reads or writes.
_QUIET_LOCK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Progress:
    """What the driver reports after each batch and each phase, for a progress bar."""

    change_id: int
    table: str
    phase: str
    rows_done: int
    rows_total: int | None
    rows_per_second: float | None
    eta_seconds: float | None
    batch_size: int | None = None
    #: Why it waits (paused, throttled) or what just happened.
    note: str | None = None


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class ChangeStatus:
    """One change as ``agentdb online status`` shows it."""

    id: int | None
    kind: str
    table: str
    status: str
    phase: str
    step: int
    requested: str | None
    rows_done: int
    rows_estimated: int | None
    batch_size: int | None
    waiting: str | None
    timings: dict[str, Any]
    lock_hold_ms: float | None
    error: str | None
    #: Whether a live process drives it now, and which.
    driven: bool
    driver_backend_pid: int | None
    client_pid: int | None
    host: str | None
    os_user: str | None
    db_user: str | None
    revision: str | None
    migration_file: str | None
    created_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None
    #: Objects of the change that exist now (tables, functions, triggers).
    objects: tuple[str, ...] = ()
    #: One line for people.
    message: str = ""
    token: str | None = None

    @property
    def interrupted(self) -> bool:
        """Unfinished, and no live process drives it: a crash or a stopped run left it."""
        return self.status in ("running", "paused", "failed") and not self.driven

    @property
    def percent(self) -> float | None:
        if not self.rows_estimated:
            return None
        return min(100.0, 100.0 * self.rows_done / self.rows_estimated)

    def as_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id, "token": self.token, "kind": self.kind, "table": self.table, "status": self.status,
            "phase": self.phase, "step": self.step, "requested": self.requested, "rows_done": self.rows_done,
            "rows_estimated": self.rows_estimated, "percent": self.percent, "batch_size": self.batch_size,
            "waiting": self.waiting, "timings": self.timings, "lock_hold_ms": self.lock_hold_ms,
            "error": self.error, "driven": self.driven, "interrupted": self.interrupted,
            "driver_backend_pid": self.driver_backend_pid, "client_pid": self.client_pid, "host": self.host,
            "os_user": self.os_user, "db_user": self.db_user, "revision": self.revision,
            "migration_file": self.migration_file, "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at), "finished_at": iso(self.finished_at),
            "objects": list(self.objects), "message": self.message,
        }


# --- sessions ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _session(database_url: str | None, data_dir: str | Path | None) -> Iterator[tuple[sa.Connection, Target]]:
    """A connection set up the way every step expects it.

    ``search_path`` is ``pg_catalog`` only, so that the definitions read from
    the catalogue name every object qualified and mean the same wherever they
    are replayed; every statement of the engine qualifies its names.
    """
    target = resolve(database_url, data_dir)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            connection.exec_driver_sql(
                "SELECT set_config('search_path', 'pg_catalog, pg_temp', false), "
                "set_config('TimeZone', 'UTC', false), "
                "set_config('application_name', %(app)s, false)", {"app": f"{APPLICATION_NAME}-online"})
            connection.commit()
            yield connection, target
    finally:
        engine.dispose()


@contextlib.contextmanager
def _transaction(connection: sa.Connection) -> Iterator[None]:
    if connection.in_transaction():
        connection.commit()
    with connection.begin():
        yield


def _set_local(connection: sa.Connection, name: str, seconds: float) -> None:
    execute(connection, sql.SQL("SELECT set_config({}, {}, true)").format(
        sql.Literal(name), sql.Literal(f"{int(seconds * 1000)}ms")))


def _kill(point: str) -> None:
    """Test hook: SIGKILL this process at ``point`` when ``AGENTDB_ONLINE_KILL_AT`` names it."""
    wanted = os.environ.get(KILL_ENV)
    if wanted and point in wanted.split(","):
        _log.warning("%s=%s: killing this process (pid %d) now", KILL_ENV, point, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)


def _first_line(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    primary = getattr(getattr(orig, "diag", None), "message_primary", None)
    text = primary or str(orig)
    return text.splitlines()[0] if text else type(exc).__name__


# --- the driver ----------------------------------------------------------------------------------------


class _AbortRequested(Exception):
    pass


class _Throttled(Exception):
    """Raised inside a batch's transaction, before any work, when a replica lags: the batch is rolled back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Unknown:
    """The change row's ``requested`` flag is not known (read it); ``None`` means known to be unset."""


_UNKNOWN = _Unknown()


@dataclass
class _Driver:
    connection: sa.Connection
    target: Target
    record: ChangeRecord
    kind: type[ChangeKind]
    settings: OnlineSettings
    progress: ProgressCallback | None = None
    throttle: ThrottleCheck | None = None
    phases: tuple[Phase, ...] = field(default=())
    batches: int = 0
    #: The settings stored in the change's row when the driver last looked: a difference is a :func:`tune`.
    stored: dict[str, Any] = field(default_factory=dict)
    #: A batch size :func:`tune` asked for, taken by the next batch.
    resize: int | None = None

    def __post_init__(self) -> None:
        self.phases = self.kind.phases(self.record.design, self.settings)
        self.stored = dict(self.record.settings)

    def take_settings(self, stored: dict[str, Any]) -> None:
        """Take up the settings :func:`tune` changed in the row since the driver last looked (only those: a
        resume may run with settings of its own, such as ``complete``)."""
        if stored == self.stored:
            return
        changed = {k: v for k, v in OnlineSettings.from_dict(stored).as_dict().items()
                   if k in stored and stored.get(k) != self.stored.get(k)}
        self.stored = dict(stored)
        if changed:
            self.settings = replace(self.settings, **changed)
            if "batch_size" in changed:
                self.resize = self.settings.batch_size
            _log.info("online change %d takes new settings: %s", self.id,
                      ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def table(self) -> str:
        return self.record.table

    def reload(self) -> ChangeRecord:
        found = state.load(self.connection, self.id)
        self.connection.commit()
        assert found is not None
        self.record = found
        self.take_settings(found.settings)
        return found

    def _next(self, name: str) -> str:
        names = [p.name for p in self.phases]
        at = names.index(name)
        return names[at + 1] if at + 1 < len(names) else _DONE

    def _report(self, phase: str, note: str | None = None, rate: float | None = None) -> None:
        if self.progress is None:
            return
        record = self.record
        eta = None
        if rate and record.rows_estimated:
            eta = max(0.0, (record.rows_estimated - record.rows_done) / rate)
        self.progress(Progress(self.id, self.table, phase, record.rows_done, record.rows_estimated, rate, eta,
                               record.batch_size, note))

    # -- the main loop --

    def drive(self) -> None:
        """Run the change from where its row says, up to completion, a cut-over left for later, or an abort."""
        try:
            while True:
                record = self.reload()
                if record.requested == "abort" and not self._abortable(record):
                    # Asked too late: the swap is committed; abort() has told the asker so.
                    with _transaction(self.connection):
                        state.update(self.connection, self.id, requested=None)
                    continue
                if record.requested == "abort":
                    self.abort()
                    return
                if record.phase == _DONE:
                    return
                if record.phase == "complete" and not self.settings.complete:
                    if record.status != "cut_over":
                        with _transaction(self.connection):
                            state.update(self.connection, self.id, status="cut_over", waiting=None)
                    return
                phase = next(p for p in self.phases if p.name == record.phase)
                self._wait_if_asked(phase.name)
                _kill(f"{phase.name}:before")
                with _transaction(self.connection):
                    state.update(self.connection, self.id, timing=(phase.name, "started"))
                if phase.sort == "steps":
                    self._steps(phase, record.step)
                elif phase.sort in ("copy", "backfill"):
                    self._copy(phase)
                elif phase.sort == "verify":
                    self._verify(phase)
                else:
                    self._cutover(phase)
                _kill(f"{phase.name}:after")
                self._report(phase.name, f"phase {phase.name} done")
        except _AbortRequested:
            self.abort()
        except BaseException as exc:
            self._fail(exc)
            raise

    def _abortable(self, record: ChangeRecord) -> bool:
        """Before the cut-over, or (an expand/contract kind) anywhere before its contraction completes."""
        if record.phase == _DONE or record.status == "completed":
            return False
        if record.phase == "complete" or record.status == "cut_over":
            return self.kind.abortable_until_complete and record.step == 0
        return True

    def _fail(self, exc: BaseException) -> None:
        """Record the failure (status failed, one line, no DETAIL) so status() shows it; resumable."""
        with contextlib.suppress(Exception):
            if self.connection.in_transaction():
                self.connection.rollback()
            message = str(exc) if isinstance(exc, AgentdbError) else _first_line(exc)
            if isinstance(exc, KeyboardInterrupt):
                message = "interrupted (Ctrl-C)"
            with _transaction(self.connection):
                state.update(self.connection, self.id, status="failed", error=message[:2000], waiting=None)

    def _wait_if_asked(self, phase: str, requested: str | _Unknown | None = _UNKNOWN, *,
                       throttled: bool = False, reason: str | None = None) -> None:
        """Honour pause and abort requests; with ``throttled``, also wait while the throttle says so.

        ``requested`` is the row's flag when the caller has just read it (a batch's checkpoint update returns
        it), so the row is not read again; ``reason`` is a throttle reason the caller has already seen.
        """
        waiting_for: str | None = None
        while True:
            if isinstance(requested, _Unknown):
                requested = self.reload().requested
            if requested == "abort":
                raise _AbortRequested
            if requested == "pause":
                reason = "paused (agentdb online resume to go on)"
            elif throttled and reason is None:
                reason = throttle_reason(self.connection, self.settings, self.throttle)
            if reason is None:
                if waiting_for is not None:
                    with _transaction(self.connection):
                        state.update(self.connection, self.id, status="running", waiting=None)
                return
            if reason != waiting_for:
                with _transaction(self.connection):
                    state.update(self.connection, self.id, waiting=reason,
                                 status="paused" if requested == "pause" else "running")
                waiting_for = reason
                _log.info("online change %d waits: %s", self.id, reason)
                self._report(phase, reason)
            time.sleep(self.settings.throttle_poll)
            requested, reason = _UNKNOWN, None

    # -- steps --

    def _run_step(self, step: Step, work: Callable[[], None], what: str, *, statement_timeout: str | None = None,
                  committed: Callable[[], None] | None = None) -> None:
        """Run ``work`` (which runs the step and updates the row) in one transaction, retried on lock_timeout;
        ``committed`` is called right after the commit."""
        lock_timeout = self.settings.lock_timeout if step.contended else _QUIET_LOCK_TIMEOUT

        def attempt() -> None:
            if step.contended:
                self._clear_autovacuum(what)
            with _transaction(self.connection):
                _set_local(self.connection, "lock_timeout", lock_timeout)
                if statement_timeout:
                    execute(self.connection, sql.SQL("SELECT set_config('statement_timeout', {}, true)").format(
                        sql.Literal(statement_timeout)))
                work()
            if committed is not None:
                committed()

        pid = int(self.connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        self.connection.commit()
        try:
            with BlockerWatch(self.target.conninfo(), pid, interval=min(0.05, lock_timeout / 4)) as watch:
                retry_on_lock_timeout(attempt, self.connection, self.settings.policy(), what=what, watch=watch)
        except LockTimeout as exc:
            raise OnlineLockTimeout(self.table, self.id, what, exc.attempts, exc.blockers) from None
        except DBAPIError as exc:
            raise OnlineStepFailed(self.table, self.id, self.record.phase, what, sqlstate_of(exc),
                                   _first_line(exc)) from None

    def _clear_autovacuum(self, what: str) -> None:
        """Before a step that queues the application behind its lock: no autovacuum in the way.

        Autovacuum holds SHARE UPDATE EXCLUSIVE on a table for as long as it works
        on it, and gives way to a waiting lock only after ``deadlock_timeout`` (1 s),
        longer than the step's ``lock_timeout``: each attempt would then queue the
        application's queries for its whole ``lock_timeout`` and fail.  So an
        autovacuum of the change's tables is cancelled first, as PostgreSQL itself
        would after ``deadlock_timeout`` -- where this role may (a superuser), and
        never one that prevents wraparound -- or else waited for, without queueing
        anyone, for up to ``worst_wait()``.  It comes back later on its own.
        """
        deadline = time.monotonic() + self.settings.worst_wait()
        while True:
            rows = self.connection.execute(sa.text(_AUTOVACUUM_SQL), {
                "schema": self.record.table_schema,
                "names": [self.record.table_name, str(self.record.design.get("new_table") or "")],
            }).all()
            self.connection.commit()
            if not rows or time.monotonic() > deadline:
                return
            cancelled = False
            for pid, wraparound, may_cancel in rows:
                if may_cancel and not wraparound:
                    _log.info("online change %d cancels autovacuum (pid %d) of its table before %s", self.id, pid,
                              what)
                    self.connection.execute(sa.text("SELECT pg_cancel_backend(:pid)"), {"pid": pid})
                    self.connection.commit()
                    cancelled = True
            if not cancelled:
                self._report(self.record.phase, f"waiting for autovacuum (pid {rows[0][0]}) before {what}")
            time.sleep(0.05)

    def _steps(self, phase: Phase, first: int) -> None:
        for number in range(first, len(phase.steps)):
            if number > first:
                self._wait_if_asked(phase.name)
            step = phase.steps[number]
            last = number + 1 == len(phase.steps)

            if step.concurrent:
                self._concurrent_step(phase, step, number, last)
                _kill(f"{phase.name}:step:{number + 1}")
                self._report(phase.name, step.title)
                continue

            def work(step: Step = step, number: int = number, last: bool = last) -> None:
                for statement in step.statements:
                    execute(self.connection, statement)
                if step.call is not None:
                    step.call(self.connection)
                if last:
                    self._advance(phase.name)
                else:
                    state.update(self.connection, self.id, step=number + 1)

            self._run_step(step, work, f"step {number + 1} of phase {phase.name} ({step.title})")
            _kill(f"{phase.name}:step:{number + 1}")
            self._report(phase.name, step.title)

    def _concurrent_step(self, phase: Phase, step: Step, number: int, last: bool) -> None:
        """A step whose statements cannot run in a transaction; then the row moves on."""
        self._run_concurrent(phase.name, step, f"step {number + 1} of phase {phase.name} ({step.title})")
        with _transaction(self.connection):
            if last:
                self._advance(phase.name)
            else:
                state.update(self.connection, self.id, step=number + 1)

    def _run_concurrent(self, phase: str, step: Step, what: str) -> None:
        """Run ``step``'s statements (``CREATE INDEX CONCURRENTLY``...) each in autocommit mode under the
        quiet lock_timeout, retried on lock timeouts with backoff; on failure its ``undo`` statements clean
        up (the INVALID index a failed build leaves)."""
        policy = self.settings.policy()
        if self.connection.in_transaction():
            self.connection.commit()
        pid = int(self.connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        self.connection.commit()
        auto = self.connection.execution_options(isolation_level="AUTOCOMMIT")
        watch = BlockerWatch(self.target.conninfo(), pid, interval=0.1)
        try:
            watch.__enter__()
            auto.exec_driver_sql("SELECT set_config('lock_timeout', %(t)s, false)",
                                 {"t": f"{int(self.settings.concurrent_lock_timeout * 1000)}ms"})
            for attempt in range(1, policy.attempts + 1):
                try:
                    for statement in step.statements:
                        execute(auto, statement)
                    break
                except DBAPIError as exc:
                    code = sqlstate_of(exc)
                    for undo in step.undo:
                        with contextlib.suppress(DBAPIError):
                            execute(auto, undo)
                    if code == "55P03" and attempt < policy.attempts:
                        _log.warning("%s: lock timeout, attempt %d of %d", what, attempt, policy.attempts)
                        time.sleep(policy.delay(attempt))
                        continue
                    if code == "55P03":
                        raise OnlineLockTimeout(self.table, self.id, what, attempt, watch.blockers()) from None
                    raise OnlineStepFailed(self.table, self.id, phase, what, code, _first_line(exc)) from None
        finally:
            watch.__exit__(None, None, None)
            with contextlib.suppress(DBAPIError):
                auto.exec_driver_sql("RESET lock_timeout")
            if self.connection.in_transaction():
                self.connection.commit()  # autocommit mode: SQLAlchemy's bookkeeping only
            self.connection.execution_options(isolation_level="READ COMMITTED")

    def _advance(self, phase: str, **values: Any) -> None:
        """Move the row to the next phase, in the caller's transaction (with the phase's last work)."""
        following = self._next(phase)
        if following == _DONE:
            values.update(status="completed", finished_at=datetime.now().astimezone(), waiting=None)
        state.update(self.connection, self.id, phase=following, step=0, timing=(phase, "finished"), **values)

    # -- copy --

    def _copy(self, phase: Phase) -> None:
        """The batched phases: a copy into the new table, or a backfill of the table's new columns.

        A batch is one transaction of few round trips: its settings (``lock_timeout``, ``synchronous_commit``
        and, unless a throttle expression or check runs before it anyway, the replica-lag check), the batch
        statement, the checkpoint update (which also returns a pause or abort request, so the row is not read
        again between batches) and the commit.
        """
        spec: Any = phase.copy if phase.sort == "copy" else phase.backfill
        assert spec is not None
        begin = begin_copy if phase.sort == "copy" else _backfill.begin
        batch = next_batch if phase.sort == "copy" else _backfill.next_batch
        checkpoint = self.record.checkpoint
        if not checkpoint:
            with _transaction(self.connection):
                checkpoint = begin(self.connection, spec)
                estimate = self.kind.rows_estimate(self.connection, self.record.design)
                if checkpoint is None:  # nothing to copy
                    self._advance(phase.name, rows_estimated=estimate)
                    return
                state.update(self.connection, self.id, checkpoint=checkpoint, rows_estimated=estimate)
            self.reload()
        size = self.record.batch_size or self.settings.batch_size
        copied_here = 0
        started = time.monotonic()
        requested: str | _Unknown | None = self.record.requested
        throttled: str | None = None
        while True:
            # A throttle expression or a Python check is asked before every batch, in a transaction of its own
            # (it checks the replica lag too); otherwise the lag is read by the batch's first statement.  Asked
            # again each time: tune() may have set or cleared throttle_sql since.
            asked_apart = bool(self.settings.throttle_sql) or self.throttle is not None
            self._wait_if_asked(phase.name, requested, throttled=asked_apart or throttled is not None,
                                reason=throttled)
            throttled = None
            if self.resize is not None:
                size, self.resize = self.resize, None
            size = max(self.settings.min_batch_size, min(self.settings.max_batch_size, size))
            batch_started = time.monotonic()
            outcome: dict[str, Any] = {}

            def attempt(checkpoint: dict[str, Any] = checkpoint, size: int = size,
                        outcome: dict[str, Any] = outcome, check_lag: bool = not asked_apart) -> None:
                with _transaction(self.connection):
                    lagging = self._batch_settings(check_lag=check_lag)
                    if lagging is not None:
                        raise _Throttled(lagging)  # rolls the (empty) transaction back
                    result, following, done = batch(self.connection, spec, checkpoint, size)
                    _kill(f"{phase.name}:batch:{self.batches + 1}:uncommitted")
                    values: dict[str, Any] = {"checkpoint": following, "batch_size": size,
                                              "rows_done": self.record.rows_done + result.seen}
                    if done:
                        self._advance(phase.name, **values)
                    else:
                        outcome["requested"], outcome["settings"] = state.update_batch(
                            self.connection, self.id, **values)
                    outcome.update(result=result, checkpoint=following, done=done)

            try:
                self._batch_with_retries(attempt)
            except _Throttled as exc:
                throttled = exc.reason
                continue
            self.batches += 1
            _kill(f"{phase.name}:batch:{self.batches}")
            result = outcome["result"]
            elapsed = time.monotonic() - batch_started
            self.record.rows_done += result.seen
            self.record.batch_size = size
            copied_here += result.seen
            checkpoint = outcome["checkpoint"]
            rate = copied_here / max(time.monotonic() - started, 1e-6)
            self._report(phase.name, None, rate)
            if outcome["done"]:
                return
            requested = outcome.get("requested")
            if "settings" in outcome:
                self.take_settings(outcome["settings"])
            size = self._next_size(size, elapsed)

    def _next_size(self, size: int, elapsed: float) -> int:
        """The next batch's size: scaled by the last batch's speed towards ``batch_seconds``, at most halved or
        doubled at a time, within the settings' bounds."""
        wanted = int(size * self.settings.batch_seconds / max(elapsed, 1e-3))
        return max(self.settings.min_batch_size, min(self.settings.max_batch_size, size * 2, max(size // 2, wanted)))

    def _batch_settings(self, *, check_lag: bool) -> str | None:
        """The first statement of a batch's transaction: its local settings and, with ``check_lag``, the
        replica lag; returns why the batch must wait (a replica too far behind), else None.

        .. note::
           ``synchronous_commit = off`` (``batch_synchronous_commit``) is safe here because the checkpoint is
           updated in the batch's own transaction: a server crash can lose the last batches' commits, but only
           whole transactions from the end of the WAL, data and checkpoint together, so the resumed change
           copies those batches again.  A writer that waited for a batch commits synchronously, which flushes
           the batch's commit record first.
        """
        columns: list[sql.Composable] = [
            sql.SQL("pg_catalog.set_config('lock_timeout', {}, true)").format(
                sql.Literal(f"{int(self.settings.batch_lock_timeout * 1000)}ms")),
            sql.SQL("pg_catalog.set_config('synchronous_commit', {}, true)").format(
                sql.Literal(self.settings.batch_synchronous_commit)),
        ]
        if not check_lag or self.settings.max_replica_lag is None:
            execute(self.connection, sql.SQL("SELECT {}").format(sql.SQL(", ").join(columns)))
            return None
        row = execute(self.connection, sql.SQL(
            "SELECT {}, lag.* FROM (SELECT 1) AS one LEFT JOIN LATERAL ({}) AS lag ON true"
        ).format(sql.SQL(", ").join(columns), REPLICA_LAG_SQL)).one()
        return lag_reason(row[-2], row[-1], self.settings)

    def _batch_with_retries(self, attempt: Callable[[], None]) -> None:
        """A batch: retried on lock_timeout by the shared helper; a deadlock or serialization failure it
        lost is run again too (a few times), since the batch, not the writer, is the one to yield."""
        policy = self.settings.batch_policy()
        for round_ in range(1, 6):
            try:
                retry_on_lock_timeout(attempt, self.connection, policy, what=f"a copy batch of change {self.id}")
                return
            except LockTimeout as exc:
                raise OnlineLockTimeout(self.table, self.id, "a copy batch", exc.attempts, exc.blockers) from None
            except DBAPIError as exc:
                code = sqlstate_of(exc)
                if code in _RETRY_BATCH and round_ < 5:
                    _log.warning("copy batch of change %d lost a %s; running it again", self.id, code)
                    time.sleep(RetryPolicy(5, 0.05, 1.0).delay(round_))
                    continue
                raise OnlineStepFailed(self.table, self.id, "copy", "a copy batch", code, _first_line(exc)) from None

    # -- verify --

    def _verify(self, phase: Phase) -> None:
        spec = phase.verify
        assert spec is not None
        self._report(phase.name, "comparing source and new table")
        try:
            report = verify(self.connection, spec)
        except DBAPIError as exc:
            raise OnlineStepFailed(self.table, self.id, "verify", "verification", sqlstate_of(exc),
                                   _first_line(exc)) from None
        differences = report.differences
        if differences:
            raise OnlineVerifyFailed(self.table, self.id, [
                f"{r.label}: source {r.source_rows} rows, new {r.target_rows} rows"
                + ("" if r.source_rows != r.target_rows else " (same count, different rows)")
                for r in differences
            ])
        _log.info("online change %d verified %d rows in %d ranges in %.1fs", self.id, report.rows,
                  len(report.ranges), report.seconds)
        with _transaction(self.connection):
            self._advance(phase.name)

    # -- cut-over --

    def _cutover(self, phase: Phase) -> None:
        spec = phase.cutover
        assert spec is not None
        expected = self.record.design.get("fingerprint")
        timing: dict[str, float] = {}

        def work() -> None:
            for statement in spec.lock.statements:
                execute(self.connection, statement)
            timing["locked"] = time.monotonic()
            if expected is not None and describe(self.connection, *spec.source).fingerprint() != expected:
                raise OnlineSourceChanged(self.table, self.id)
            for statement in spec.swap.statements:
                execute(self.connection, statement)
            _kill("cutover:locked")
            held = (time.monotonic() - timing["locked"]) * 1000
            self._advance(phase.name, lock_hold_ms=held,
                          **({"status": "cut_over"} if not self.settings.complete else {}))

        self._report(phase.name, "swapping the tables")
        # Checked once before locking too: a changed source fails without taking any lock, and the
        # catalogue caches are warm for the check under the lock, which is part of the hold.
        if expected is not None and describe(self.connection, *spec.source).fingerprint() != expected:
            raise OnlineSourceChanged(self.table, self.id)
        self.connection.commit()
        self._run_step(spec.lock, work, "the cut-over", statement_timeout=_CUTOVER_STATEMENT_TIMEOUT,
                       committed=lambda: timing.__setitem__("released", time.monotonic()))
        # From the moment LOCK returned to the end of the commit, which released the locks.
        held_ms = (timing["released"] - timing["locked"]) * 1000
        with _transaction(self.connection):
            state.update(self.connection, self.id, lock_hold_ms=held_ms)
        _log.info("online change %d cut over %s: ACCESS EXCLUSIVE held %.1f ms", self.id, self.table, held_ms)
        self._report(phase.name, f"cut over; locks held {held_ms:.1f} ms")

    # -- abort --

    def abort(self) -> None:
        record = self.reload()
        if not self._abortable(record):
            with _transaction(self.connection):
                state.update(self.connection, self.id, requested=None)
            raise OnlineChangeRefused(self.table, f"change {self.id} is already cut over; it cannot be aborted",
                                      change_id=self.id,
                                      hint="complete it, then change the table back with another online change")
        with _transaction(self.connection):
            state.update(self.connection, self.id, requested="abort", waiting="aborting")
        steps = self.kind.abort_steps(record.design)
        for number, step in enumerate(steps, 1):
            if step.concurrent:
                self._run_concurrent("abort", step, f"abort step {number} ({step.title})")
                _kill(f"abort:step:{number}")
                continue

            def work(step: Step = step) -> None:
                for statement in step.statements:
                    execute(self.connection, statement)

            self._run_step(step, work, f"abort step {number} ({step.title})")
            _kill(f"abort:step:{number}")
        with _transaction(self.connection):
            state.update(self.connection, self.id, status="aborted", requested=None, waiting=None,
                         finished_at=datetime.now().astimezone(), error=None)
        _log.info("online change %d on %s aborted; the source is as it was", self.id, self.table)


# --- public functions -----------------------------------------------------------------------------------


def plan(table: str, kind: str = "partition", *, database_url: str | None = None,
         data_dir: str | Path | None = None, settings: OnlineSettings | None = None, **options: Any) -> Plan:
    """Design an online change and describe it, without changing anything (a dry run).

    Reads the catalogue (and, for ``partition``, which months hold rows: one
    scan under ACCESS SHARE).  The plan lists the phases, the lock each step
    takes and how long it may wait, the estimated rows, and ``Plan.sql()``
    every statement with comments.
    """
    with _session(database_url, data_dir) as (connection, _target):
        return plan_on(connection, table, kind, settings=settings, **options)


def plan_on(connection: sa.Connection, table: str, kind: str = "partition", *,
            settings: OnlineSettings | None = None, **options: Any) -> Plan:
    """:func:`plan` on a connection the caller owns -- a migration's, inside its dry-run transaction, which
    sees the tables earlier migrations of the same run created.

    Reads only.  It works under a savepoint (or a transaction of its own) that it
    rolls back, so the session settings the design needs (``search_path``,
    ``TimeZone``) and the locks it takes do not outlive it.
    """
    settings = settings or OnlineSettings()
    kind_class = get_kind(kind, table)
    scope = connection.begin_nested() if connection.in_transaction() else connection.begin()
    try:
        connection.exec_driver_sql(
            "SELECT set_config('search_path', 'pg_catalog, pg_temp', true), set_config('TimeZone', 'UTC', true)")
        schema, name = find_table(connection, table)
        active = state.find_active(connection, schema, name)
        if active is not None:
            holder = state.lock_holder(connection, schema, name)
            if holder is None:
                raise _busy_with_leftover(active)
            raise OnlineChangeBusy(active.table, active.id, holder,
                                   f"phase {active.phase}, driven by client pid {active.client_pid} on {active.host}")
        design = kind_class.design(connection, schema, name, options, new_token())
        # What run() checks before it starts: the table is still the one this plan was made for.
        design.setdefault("fingerprint", describe(connection, schema, name).fingerprint())
        rows = kind_class.rows_estimate(connection, design)
    finally:
        if scope.is_active:
            scope.rollback()
    return Plan(kind, schema, name, design, kind_class.phases(design, settings), rows, settings,
                kind_class.notes(design))


def _take_table(connection: sa.Connection, schema: str, table: str, wait: float) -> None:
    """The table's advisory lock, waiting up to ``wait`` seconds; else OnlineChangeBusy naming the holder."""
    deadline = time.monotonic() + wait
    while not state.try_table_lock(connection, schema, table):
        if time.monotonic() >= deadline:
            holder = state.lock_holder(connection, schema, table)
            active = state.find_active(connection, schema, table)
            connection.commit()
            detail = "a process is driving it"
            if active is not None:
                detail = (f"phase {active.phase}, driven by client pid {active.client_pid} on {active.host} "
                          f"(backend pid {holder})")
            raise OnlineChangeBusy(f"{schema}.{table}", active.id if active else None, holder, detail)
        time.sleep(0.2)


def _busy_with_leftover(record: ChangeRecord) -> OnlineChangeBusy:
    return OnlineChangeBusy(
        record.table, record.id, None,
        f"it was left at phase {record.phase} ({record.status}) by client pid {record.client_pid} on "
        f"{record.host}, which is gone",
        hint="resume it (agentdb online resume) or abort it (agentdb online abort)",
    )


def _check_throttle(connection: sa.Connection, table: str, settings: OnlineSettings) -> None:
    if settings.throttle_sql:
        try:
            throttle_reason(connection, settings)
        except DBAPIError as exc:
            raise OnlineChangeRefused(table, f"throttle_sql fails: {_first_line(exc)}") from None


def run(plan: Plan, *, database_url: str | None = None, data_dir: str | Path | None = None,
        progress: ProgressCallback | None = None, throttle: ThrottleCheck | None = None,
        revision: str | None = None, migration_file: str | Path | None = None, wait: float = 0.0) -> ChangeStatus:
    """Execute a plan from :func:`plan`: start the change and drive it to completion (or to the cut-over,
    with ``settings.complete`` False).

    Refuses (:class:`~agentdb.errors.OnlineChangeBusy`) when another change of
    the table is under way or was left unfinished, after waiting up to
    ``wait`` seconds for a live one; refuses
    (:class:`~agentdb.errors.OnlineSourceChanged`) when the table changed since
    it was planned.  ``revision`` and ``migration_file`` record the migration
    that started it: a resume refuses to go on if that file changes.
    """
    kind_class = get_kind(plan.kind, plan.qualified)
    with _session(database_url, data_dir) as (connection, target):
        state.ensure_table(connection)
        _take_table(connection, plan.schema, plan.table, wait)
        try:
            leftover = state.find_active(connection, plan.schema, plan.table)
            if leftover is not None:
                raise _busy_with_leftover(leftover)
            if describe(connection, plan.schema, plan.table).fingerprint() != plan.design.get("fingerprint"):
                raise OnlineSourceChanged(plan.qualified, None)
            _check_throttle(connection, plan.qualified, plan.settings)
            path = Path(migration_file).resolve() if migration_file else None
            with _transaction(connection):
                backend = int(connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
                change_id = state.insert_change(connection, {
                    "token": plan.design["token"], "kind": plan.kind, "table_schema": plan.schema,
                    "table_name": plan.table, "status": "running", "phase": plan.phases[0].name, "step": 0,
                    "design": plan.design, "settings": plan.settings.as_dict(), "rows_estimated": plan.rows_estimated,
                    "backend_pid": backend, "revision": revision,
                    "migration_file": str(path) if path else None,
                    "migration_checksum": file_checksum(path) if path else None,
                    **state.who(),
                })
            record = state.load(connection, change_id)
            connection.commit()
            assert record is not None
            _log.info("online change %d started: %s of %s", change_id, plan.kind, plan.qualified)
            _Driver(connection, target, record, kind_class, plan.settings, progress, throttle).drive()
            return _status_of(connection, _reload(connection, change_id))
        finally:
            state.release_table_lock(connection, plan.schema, plan.table)


def start(table: str, kind: str = "partition", *, database_url: str | None = None,
          data_dir: str | Path | None = None, settings: OnlineSettings | None = None,
          progress: ProgressCallback | None = None, throttle: ThrottleCheck | None = None,
          revision: str | None = None, migration_file: str | Path | None = None, wait: float = 0.0,
          **options: Any) -> ChangeStatus:
    """Plan and run an online change in one call (see :func:`plan` and :func:`run`)."""
    planned = plan(table, kind, database_url=database_url, data_dir=data_dir, settings=settings, **options)
    return run(planned, database_url=database_url, data_dir=data_dir, progress=progress, throttle=throttle,
               revision=revision, migration_file=migration_file, wait=wait)


def ensure(table: str, kind: str = "partition", *, database_url: str | None = None,
           data_dir: str | Path | None = None, settings: OnlineSettings | None = None,
           progress: ProgressCallback | None = None, throttle: ThrottleCheck | None = None,
           revision: str | None = None, migration_file: str | Path | None = None, wait: float = 0.0,
           **options: Any) -> ChangeStatus | None:
    """What a migration calls: start the change, or carry on the unfinished one of this kind on this table,
    or do nothing when the table already is what the change makes it.

    Running the migration again after a crash (``agentdb upgrade``) therefore
    resumes from the checkpoint.  Returns the change's status, or None when there
    was nothing to do.  An unfinished change of another kind is refused
    (:class:`~agentdb.errors.OnlineChangeBusy`).
    """
    kind_class = get_kind(kind, table)
    with _session(database_url, data_dir) as (connection, _target):
        state.ensure_table(connection)
        schema, name = find_table(connection, table)
        active = state.find_active(connection, schema, name)
        done = active is None and kind_class.already_done(connection, schema, name, options)
        connection.commit()
    if active is not None:
        if active.kind != kind:
            raise OnlineChangeBusy(active.table, active.id, None,
                                   f"it is a {active.kind} change at phase {active.phase}, not {kind}")
        if active.status == "cut_over":
            if settings is not None and not settings.complete:
                # --expand-only: the change stays expanded (or cut over) until `agentdb online complete`.
                return _status_of_id(active.id, database_url, data_dir)
            return complete(active.id, database_url=database_url, data_dir=data_dir, progress=progress)
        return resume(active.id, database_url=database_url, data_dir=data_dir, progress=progress,
                      throttle=throttle, migration_file=migration_file)
    if done:
        _log.info("%s of %s.%s: nothing to do, it is done already", kind, schema, name)
        return None
    return start(table, kind, database_url=database_url, data_dir=data_dir, settings=settings, progress=progress,
                 throttle=throttle, revision=revision, migration_file=migration_file, wait=wait, **options)


def _status_of_id(change_id: int, database_url: str | None, data_dir: str | Path | None) -> ChangeStatus:
    with _session(database_url, data_dir) as (connection, _target):
        return _status_of(connection, _reload(connection, change_id))


def _reload(connection: sa.Connection, change_id: int) -> ChangeRecord:
    record = state.load(connection, change_id)
    connection.commit()
    assert record is not None
    return record


def _find(connection: sa.Connection, change: int | str) -> ChangeRecord:
    """A change by id, or the unfinished change of a table (``analytics`` / ``public.analytics``)."""
    state.ensure_table(connection)
    if isinstance(change, int) or (isinstance(change, str) and change.isdigit()):
        record = state.load(connection, int(change))
    else:
        schema, _, table = change.rpartition(".")
        record = state.find_active(connection, schema or "public", table)
    connection.commit()
    if record is None:
        raise OnlineChangeNotFound(str(change))
    return record


def _check_file(record: ChangeRecord, migration_file: str | Path | None) -> None:
    if not record.migration_file:
        return
    path = Path(migration_file) if migration_file else Path(record.migration_file)
    if not path.is_file():
        raise OnlineFileChanged(record.table, record.id, str(path), "is gone")
    checksum = file_checksum(path)
    if checksum != record.migration_checksum:
        raise OnlineFileChanged(
            record.table, record.id, str(path),
            f"has changed since the change started (sha256 {checksum[:12]}..., recorded "
            f"{(record.migration_checksum or '?')[:12]}...)")


def resume(change: int | str, *, database_url: str | None = None, data_dir: str | Path | None = None,
           progress: ProgressCallback | None = None, throttle: ThrottleCheck | None = None,
           migration_file: str | Path | None = None, settings: OnlineSettings | None = None,
           wait: float = 10.0) -> ChangeStatus:
    """Carry on a change (by id or table name) from its checkpoint; or, when a live process drives it and
    it is paused, let it go on.

    After a crash this process becomes the driver.  A killed driver's database
    session can outlive it for a moment (until the server notices the closed
    connection), so the table's lock is waited for up to ``wait`` seconds.
    Refuses when the migration file that started the change has changed since
    (checksum).  ``settings`` replaces the stored settings for this run (e.g. a
    longer cut-over lock_timeout).
    """
    with _session(database_url, data_dir) as (connection, target):
        record = _find(connection, change)
        if record.status in ("completed", "aborted"):
            raise OnlineChangeNotFound(str(change))
        holder = state.lock_holder(connection, record.table_schema, record.table_name)
        connection.commit()
        if holder is not None and record.requested == "pause":
            with _transaction(connection):
                state.update(connection, record.id, requested=None)
            return _status_of(connection, _reload(connection, record.id))
        _check_file(record, migration_file)
        try:
            _take_table(connection, record.table_schema, record.table_name, wait)
        except OnlineChangeBusy as busy:
            raise OnlineChangeBusy(record.table, record.id, busy.holder_pid,
                                   f"a live process drives it (client pid {record.client_pid} on {record.host})",
                                   hint="it is running; agentdb online status shows its progress") from None
        try:
            record = _reload(connection, record.id)
            if record.status in ("completed", "aborted"):
                return _status_of(connection, record)
            effective = settings or OnlineSettings.from_dict(record.settings)
            _check_throttle(connection, record.table, effective)
            with _transaction(connection):
                backend = int(connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
                state.update(connection, record.id, status="running", error=None, backend_pid=backend,
                             requested=None if record.requested == "pause" else record.requested, **state.who())
            record = _reload(connection, record.id)
            _log.info("online change %d resumed at phase %s (step %d, %d rows done)", record.id, record.phase,
                      record.step, record.rows_done)
            kind_class = get_kind(record.kind, record.table)
            _Driver(connection, target, record, kind_class, effective, progress, throttle).drive()
            return _status_of(connection, _reload(connection, record.id))
        finally:
            state.release_table_lock(connection, record.table_schema, record.table_name)


def complete(change: int | str, *, database_url: str | None = None, data_dir: str | Path | None = None,
             keep_old: bool | None = None, progress: ProgressCallback | None = None) -> ChangeStatus:
    """Finish a change that was left cut over (``settings.complete`` False): drop or archive the old table.

    Also one whose completion was interrupted (a crash leaves it ``running`` at phase complete): a plain
    resume would only leave it cut over again, as its stored settings say."""
    with _session(database_url, data_dir) as (connection, _target):
        record = _find(connection, change)
    if record.status not in ("cut_over", "failed", "running", "paused") or record.phase != "complete":
        if record.status == "completed":
            raise OnlineChangeNotFound(str(change))
        raise OnlineChangeRefused(record.table, f"change {record.id} is at phase {record.phase}, not cut over yet",
                                  change_id=record.id, hint="resume it; it completes after its cut-over")
    settings = OnlineSettings.from_dict(record.settings).merged(complete=True, keep_old=keep_old)
    return resume(record.id, database_url=database_url, data_dir=data_dir, progress=progress, settings=settings)


#: Settings :func:`tune` may change while a change runs (the rest shape the change's design or its resume).
TUNABLE = ("batch_seconds", "batch_size", "min_batch_size", "max_batch_size", "max_replica_lag", "throttle_sql",
           "throttle_poll", "lock_timeout", "lock_retries", "batch_lock_timeout")


def tune(change: int | str, *, database_url: str | None = None, data_dir: str | Path | None = None,
         **changes: Any) -> ChangeStatus:
    """Change how a change runs while it runs, as gh-ost's interactive commands do: the target time of a batch
    (``batch_seconds``) or a fixed batch size (``min_batch_size = max_batch_size``), the replica-lag limit
    (``max_replica_lag``, None for none), the throttle expression, the cut-over's ``lock_timeout``...
    (:data:`TUNABLE`).  The settings are stored with the change: the driving process takes them up at its next
    checkpoint (a batch, or a poll while paused or throttled), and a resume after a crash keeps them.
    """
    unknown = sorted(set(changes) - set(TUNABLE))
    if unknown:
        raise OnlineChangeRefused(str(change), f"{', '.join(unknown)} cannot be changed while a change runs",
                                  hint="these can: " + ", ".join(TUNABLE))
    with _session(database_url, data_dir) as (connection, _target):
        record = _find(connection, change)
        if record.status not in state.ACTIVE:
            raise OnlineChangeNotFound(str(change))
        current = OnlineSettings.from_dict(record.settings)
        new = replace(current, **changes)
        problems = _settings_problems(new)
        if problems:
            raise OnlineChangeRefused(record.table, "; ".join(problems), change_id=record.id)
        with _transaction(connection):
            state.set_settings(connection, record.id, {**dict(record.settings), **{
                k: v for k, v in new.as_dict().items() if k in changes}})
        return _status_of(connection, _reload(connection, record.id))


def _settings_problems(settings: OnlineSettings) -> list[str]:
    problems = []
    if not settings.batch_seconds > 0:
        problems.append(f"batch_seconds must be above 0 (not {settings.batch_seconds})")
    if not 1 <= settings.min_batch_size <= settings.max_batch_size:
        problems.append(f"batch sizes must satisfy 1 <= min_batch_size ({settings.min_batch_size}) <= "
                        f"max_batch_size ({settings.max_batch_size})")
    if settings.batch_size < 1:
        problems.append(f"batch_size must be at least 1 (not {settings.batch_size})")
    for name in ("lock_timeout", "batch_lock_timeout", "throttle_poll"):
        if not getattr(settings, name) > 0:
            problems.append(f"{name} must be above 0 (not {getattr(settings, name)})")
    if settings.max_replica_lag is not None and settings.max_replica_lag < 0:
        problems.append(f"max_replica_lag must be 0 or more (not {settings.max_replica_lag})")
    if settings.lock_retries < 1:
        problems.append(f"lock_retries must be at least 1 (not {settings.lock_retries})")
    return problems


def pause(change: int | str, *, database_url: str | None = None, data_dir: str | Path | None = None
          ) -> ChangeStatus:
    """Ask the driving process to pause between batches (it keeps its place and its lock); resume() lets it
    go on.  A change nobody drives is marked paused, so it stays put until resumed."""
    with _session(database_url, data_dir) as (connection, _target):
        record = _find(connection, change)
        if record.status not in state.ACTIVE:
            raise OnlineChangeNotFound(str(change))
        holder = state.lock_holder(connection, record.table_schema, record.table_name)
        with _transaction(connection):
            values: dict[str, Any] = {"requested": "pause"}
            if holder is None:
                values.update(status="paused", waiting="paused (agentdb online resume to go on)")
            state.update(connection, record.id, **values)
        return _status_of(connection, _reload(connection, record.id))


def abort(change: int | str, *, database_url: str | None = None, data_dir: str | Path | None = None,
          wait: float = 120.0) -> ChangeStatus:
    """Undo a change that is not cut over yet: the source ends exactly as it was, and nothing of the change
    is left (no trigger, function or table).

    When a live process drives it, asks it to abort between batches and waits
    up to ``wait`` seconds for it to do so; otherwise aborts here.
    """
    with _session(database_url, data_dir) as (connection, target):
        record = _find(connection, change)
        if record.status in ("completed", "aborted"):
            raise OnlineChangeNotFound(str(change))
        expanded = get_kind(record.kind, record.table).abortable_until_complete
        if (record.status == "cut_over" or record.phase in ("complete", _DONE)) and not (
                expanded and record.phase == "complete" and record.step == 0):
            raise OnlineChangeRefused(record.table, f"change {record.id} is already cut over; it cannot be aborted",
                                      change_id=record.id,
                                      hint="complete it, then change the table back with another online change")
        holder = state.lock_holder(connection, record.table_schema, record.table_name)
        connection.commit()
        if holder is not None or not state.try_table_lock(connection, record.table_schema, record.table_name):
            with _transaction(connection):
                state.update(connection, record.id, requested="abort")
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                current = _reload(connection, record.id)
                if current.status == "aborted":
                    return _status_of(connection, current)
                if (current.phase == _DONE or current.status == "completed" or (
                        not expanded and (current.phase == "complete" or current.status == "cut_over"))):
                    raise OnlineChangeRefused(record.table, f"change {record.id} cut over before it could abort",
                                              change_id=record.id)
                if state.lock_holder(connection, record.table_schema, record.table_name) is None:
                    connection.commit()
                    break
                connection.commit()
                time.sleep(0.2)
            else:
                raise OnlineChangeBusy(record.table, record.id, holder,
                                       f"asked it to abort; it has not done so within {wait:.0f}s")
            if not state.try_table_lock(connection, record.table_schema, record.table_name):
                raise OnlineChangeBusy(record.table, record.id, None, "another process took it over")
        try:
            record = _reload(connection, record.id)
            if record.status != "aborted":
                kind_class = get_kind(record.kind, record.table)
                driver = _Driver(connection, target, record, kind_class, OnlineSettings.from_dict(record.settings))
                try:
                    driver.abort()
                except OnlineChangeRefused:
                    raise
                except BaseException as exc:
                    driver._fail(exc)
                    raise
            return _status_of(connection, _reload(connection, record.id))
        finally:
            state.release_table_lock(connection, record.table_schema, record.table_name)


# --- status ----------------------------------------------------------------------------------------------


_EXISTING = sa.text(
    "SELECT 'table ' || x FROM unnest(CAST(:tables AS text[])) x WHERE to_regclass(x) IS NOT NULL "
    "UNION ALL SELECT 'function ' || x FROM unnest(CAST(:functions AS text[])) x "
    "  WHERE to_regproc(x) IS NOT NULL "
    "UNION ALL SELECT 'trigger ' || t.tgname || ' on ' || t.tgrelid::regclass::text FROM pg_catalog.pg_trigger t "
    "  WHERE t.tgname = ANY(CAST(:triggers AS text[]))"
)
_ORPHANS = sa.text(
    "SELECT 'trigger ' || t.tgname || ' on ' || t.tgrelid::regclass::text, substring(t.tgname FROM "
    "'^agentdb_online_([0-9a-f]{8})_') FROM pg_catalog.pg_trigger t WHERE t.tgname ~ '^agentdb_online_[0-9a-f]{8}_' "
    "UNION ALL SELECT 'function ' || n.nspname || '.' || p.proname, substring(p.proname FROM "
    "'^online_([0-9a-f]{8})_') FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname = 'agentdb' AND p.proname ~ '^online_[0-9a-f]{8}_' "
    "UNION ALL SELECT 'table ' || n.nspname || '.' || c.relname, substring(c.relname FROM "
    "'_([0-9a-f]{8})$') FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
    "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND c.relname ~ '__(online|old)_[0-9a-f]{8}$'"
)


def _objects(connection: sa.Connection, record: ChangeRecord) -> tuple[str, ...]:
    kind_class = get_kind(record.kind, record.table)
    objects = kind_class.objects(record.design)
    triggers = [name.rsplit(".", 1)[-1] for name in objects.get("triggers", [])]
    found = connection.execute(_EXISTING, {
        "tables": objects.get("tables", []), "functions": objects.get("functions", []), "triggers": triggers,
    })
    return tuple(str(r[0]) for r in found)


def _message(s: ChangeStatus) -> str:
    head = f"change {s.id}: {s.kind} of {s.table}, {s.status} at phase {s.phase}"
    if s.rows_estimated:
        head += f", {s.rows_done:,} of ~{s.rows_estimated:,} rows"
    if s.driven:
        head += f"; driven by client pid {s.client_pid} on {s.host} (backend {s.driver_backend_pid})"
    elif s.status in ("running", "paused", "failed"):
        head += (f"; INTERRUPTED: no live process (last driven by client pid {s.client_pid} on {s.host}); "
                 f"left behind: {', '.join(s.objects) or 'nothing'}; resume or abort it")
    if s.waiting:
        head += f"; waiting: {s.waiting}"
    if s.error:
        head += f"; error: {mask_literals(s.error)[:300]}"
    return head


def _status_of(connection: sa.Connection, record: ChangeRecord) -> ChangeStatus:
    holder = None
    objects: tuple[str, ...] = ()
    if record.status in state.ACTIVE:
        holder = state.lock_holder(connection, record.table_schema, record.table_name)
        objects = _objects(connection, record)
    connection.commit()
    result = ChangeStatus(
        id=record.id, kind=record.kind, table=record.table, status=record.status, phase=record.phase,
        step=record.step, requested=record.requested, rows_done=record.rows_done,
        rows_estimated=record.rows_estimated, batch_size=record.batch_size, waiting=record.waiting,
        timings=record.timings, lock_hold_ms=record.lock_hold_ms, error=record.error, driven=holder is not None,
        driver_backend_pid=holder, client_pid=record.client_pid, host=record.host, os_user=record.os_user,
        db_user=record.db_user, revision=record.revision, migration_file=record.migration_file,
        created_at=record.created_at, updated_at=record.updated_at, finished_at=record.finished_at,
        objects=objects, token=record.token,
    )
    return _with_message(result)


def _with_message(s: ChangeStatus) -> ChangeStatus:
    return replace(s, message=_message(s))


def status(*, database_url: str | None = None, data_dir: str | Path | None = None, include_finished: bool = False,
           limit: int = 50) -> list[ChangeStatus]:
    """Every unfinished change (and, with ``include_finished``, the latest finished ones), newest first.

    A change nobody drives is flagged ``interrupted`` with the objects it left
    behind; objects of the engine that belong to no unfinished change are
    listed as ``orphaned`` entries (drop them by hand, or they are from a
    change whose row was deleted).
    """
    with _session(database_url, data_dir) as (connection, _target):
        records = state.read_changes(connection, include_finished=include_finished, limit=limit)
        result = [_status_of(connection, r) for r in records]
        active_tokens = {r.token for r in records if r.status in state.ACTIVE}
        orphans: dict[str, list[str]] = {}
        for description, token in connection.execute(_ORPHANS):
            if token and token not in active_tokens:
                orphans.setdefault(str(token), []).append(str(description))
        connection.commit()
    for token, objects in sorted(orphans.items()):
        result.append(ChangeStatus(
            id=None, kind="?", table="?", status="orphaned", phase="?", step=0, requested=None, rows_done=0,
            rows_estimated=None, batch_size=None, waiting=None, timings={}, lock_hold_ms=None,
            error=None, driven=False, driver_backend_pid=None, client_pid=None, host=None, os_user=None,
            db_user=None, revision=None, migration_file=None, created_at=None, updated_at=None, finished_at=None,
            objects=tuple(objects), token=token,
            message=f"orphaned objects of online change {token} (no unfinished change owns them): "
                    + ", ".join(objects),
        ))
    return result
