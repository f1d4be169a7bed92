"""Locks: the run lock, the lock-timeout retry, and who is blocking us.

Everything in agentdb that takes a PostgreSQL lock it may have to wait for goes
through :func:`retry_on_lock_timeout`, the one place where SQLSTATE 55P03
(``lock_not_available``, raised when ``lock_timeout`` expires) is retried.

.. warning::
   A DDL statement waiting for an ACCESS EXCLUSIVE lock queues *every* later
   query on that table behind it, even plain SELECTs.  That is why every
   migration runs under a short ``lock_timeout`` and retries with backoff
   instead of waiting for as long as the blocker lives.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from agentdb.errors import Blocker, LockTimeout, RunLockTimeout

__all__ = [
    "RUN_LOCK_KEY",
    "BlockerWatch",
    "RetryPolicy",
    "acquire_run_lock",
    "mask_literals",
    "release_run_lock",
    "retry_on_lock_timeout",
    "sqlstate_of",
]

T = TypeVar("T")
_log = logging.getLogger("agentdb.runtime")

#: Advisory lock key of a migration run: the first 8 bytes of sha256("agentdb.migrations").
#: Advisory locks are per database, so runs against different databases never wait for each other.
RUN_LOCK_KEY = 0x3A1F6C0B5E2D4978
_KEY_HI = (RUN_LOCK_KEY >> 32) & 0xFFFFFFFF
_KEY_LO = RUN_LOCK_KEY & 0xFFFFFFFF

LOCK_NOT_AVAILABLE = "55P03"

_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'|\$\$.*?\$\$", re.DOTALL)
_NUMBER_LITERAL = re.compile(r"(?<![\w$.])\d+(?:\.\d+)?\b")


def mask_literals(query: str) -> str:
    """Replace string and number literals with ``?`` so a query can be shown without its data."""
    return _NUMBER_LITERAL.sub("?", _STRING_LITERAL.sub("'?'", query or ""))


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg error, also when wrapped by SQLAlchemy."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    state = getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None


_ACTIVITY_COLUMNS = (
    "SELECT a.pid, coalesce(a.query, ''), coalesce(a.application_name, ''), "
    "extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::float8 FROM pg_stat_activity a "
)
_RUN_LOCK_HOLDER = sa.text(
    _ACTIVITY_COLUMNS  # noqa: S608 - constant fragments only
    + "WHERE a.pid IN (SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1) ORDER BY a.pid"
)
_BLOCKERS_OF = _ACTIVITY_COLUMNS + "WHERE a.pid = ANY(pg_blocking_pids(%s)) ORDER BY a.pid"


def _to_blockers(rows: Sequence[Sequence[Any]]) -> list[Blocker]:
    return [
        Blocker(pid=int(r[0]), query=mask_literals(str(r[1])), application_name=str(r[2]), held_for_seconds=r[3])
        for r in rows
    ]


def _run_lock_holder(connection: sa.Connection) -> Blocker | None:
    rows = [tuple(r) for r in connection.execute(_RUN_LOCK_HOLDER, {"hi": _KEY_HI, "lo": _KEY_LO})]
    return _to_blockers(rows)[0] if rows else None


def acquire_run_lock(connection: sa.Connection, timeout: float, poll: float = 0.1) -> None:
    """Take the session-level advisory lock that serialises migration runs on a database.

    Polls ``pg_try_advisory_lock`` rather than blocking in ``pg_advisory_lock`` so
    that the wait is bounded by ``timeout`` (0 means wait forever) whatever the
    session's ``lock_timeout``, and so that the waiter can say who it waits for.
    Leaves the connection outside any transaction; the lock outlives commits.
    """
    started = time.monotonic()
    announced = False
    while True:
        got = connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": RUN_LOCK_KEY}).scalar()
        if got:
            connection.commit()
            return
        holder = _run_lock_holder(connection)
        connection.commit()
        waited = time.monotonic() - started
        if timeout and waited >= timeout:
            raise RunLockTimeout(waited, holder)
        if not announced:
            _log.info("waiting for another migration run to finish (%s)", holder.describe() if holder else "?")
            announced = True
        time.sleep(poll + random.uniform(0, poll))


def release_run_lock(connection: sa.Connection) -> None:
    """Release the run lock; safe to call when the connection is in a failed transaction."""
    if connection.in_transaction():
        connection.rollback()
    connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": RUN_LOCK_KEY})
    connection.commit()


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to sleep after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)


class BlockerWatch:
    """Watches, from a second connection, which backends block a given backend.

    Once ``lock_timeout`` fires the wait is over and ``pg_blocking_pids()`` is
    empty again, so the blockers must be seen *while* the migration waits.  A
    daemon thread polls every ``interval`` seconds and keeps the last
    non-empty answer.  If the side connection cannot be made, the watch stays
    silent: it only ever improves an error message.
    """

    def __init__(self, conninfo: str, backend_pid: int, interval: float = 0.2) -> None:
        self._conninfo = conninfo
        self._pid = backend_pid
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._blockers: list[Blocker] = []
        self._thread = threading.Thread(target=self._run, name="agentdb-blocker-watch", daemon=True)

    def __enter__(self) -> BlockerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def blockers(self) -> list[Blocker]:
        with self._lock:
            return list(self._blockers)

    def forget(self) -> None:
        with self._lock:
            self._blockers = []

    def _run(self) -> None:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, application_name="agentdb-watch")
        except psycopg.Error:
            return
        with conn:
            while not self._stop.wait(self._interval):
                try:
                    rows = conn.execute(_BLOCKERS_OF, (self._pid,)).fetchall()
                except psycopg.Error:
                    return
                if rows:
                    with self._lock:
                        self._blockers = _to_blockers(rows)


def retry_on_lock_timeout(
    fn: Callable[[], T],
    connection: sa.Connection,
    policy: RetryPolicy,
    *,
    what: str | None = None,
    watch: BlockerWatch | None = None,
) -> T:
    """Run ``fn``, retrying it when it fails with SQLSTATE 55P03 (lock timeout).

    Inside a transaction each attempt runs under a SAVEPOINT: rolling back to it
    undoes the attempt and releases the locks the attempt took, while the rest
    of the transaction stays.  Outside a transaction ``fn`` is simply called
    again, so it must be idempotent there.  After ``policy.attempts`` failures,
    raises :class:`LockTimeout` naming the blocking backends.
    """
    for attempt in range(1, policy.attempts + 1):
        savepoint = connection.begin_nested() if connection.in_transaction() else None
        try:
            result = fn()
        except BaseException as exc:
            if savepoint is not None and savepoint.is_active:
                savepoint.rollback()
            if not isinstance(exc, DBAPIError) or sqlstate_of(exc) != LOCK_NOT_AVAILABLE:
                raise
            blockers = watch.blockers() if watch else []
            if attempt == policy.attempts:
                raise LockTimeout(what, attempt, blockers) from None
            pause = policy.delay(attempt)
            _log.warning(
                "%s hit lock_timeout (attempt %d of %d)%s; retrying in %.1fs",
                what or "statement", attempt, policy.attempts,
                f", blocked by pid {', '.join(str(b.pid) for b in blockers)}" if blockers else "",
                pause,
            )
            time.sleep(pause)
            continue
        if savepoint is not None and savepoint.is_active:
            savepoint.commit()
        return result
    raise AssertionError("unreachable")  # pragma: no cover
