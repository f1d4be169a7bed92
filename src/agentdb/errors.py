"""Every error agentdb raises on purpose.

:class:`AgentdbError` is the base class: catch it to handle anything agentdb
refuses to do.  Each subclass carries the data a user needs to fix the
problem (the revision, the blocking backend, the changed files) as attributes,
and its ``str()`` is one line that names the problem and what to do about it.
The CLI prints that line and exits with :attr:`AgentdbError.exit_code`.

No message built here ever contains a password or a row's values: URLs are
shown redacted and database errors are reduced to their SQLSTATE and primary
message (the DETAIL line, which can quote row data, is dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AgentdbError",
    "BulkChangeRefused",
    "ChecksumMismatch",
    "ConnectionFailed",
    "EmbeddedServerError",
    "InvalidDatabaseURL",
    "LockTimeout",
    "MigrationFailed",
    "NotTransactional",
    "RevisionOutOfRange",
    "RunLockTimeout",
    "UnknownRevision",
]


class AgentdbError(Exception):
    """Base class of agentdb's errors.

    ``str(error)`` is a complete, single-line message; :attr:`hint`, when set,
    says what to do and is already part of that message.
    """

    exit_code: int = 1
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        if hint is not None:
            self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class InvalidDatabaseURL(AgentdbError):
    """The database URL cannot be parsed or is not a PostgreSQL URL."""

    exit_code = 2

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        shown = f" {url!r}" if url else ""
        super().__init__(
            f"invalid database URL{shown}: {reason}",
            hint="expected postgresql://user:password@host:port/dbname",
        )


class ConnectionFailed(AgentdbError):
    """The server could not be reached or refused the connection."""

    exit_code = 3

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(
            f"cannot connect to {url}: {reason}",
            hint="check that the server is running and the URL, user and password are right",
        )


class EmbeddedServerError(AgentdbError):
    """The embedded PostgreSQL server cannot be started or used."""

    exit_code = 3

    def __init__(self, data_dir: str, problem: str, *, hint: str | None = None) -> None:
        self.data_dir = data_dir
        self.problem = problem
        super().__init__(f"embedded PostgreSQL in {data_dir}: {problem}", hint=hint)


class UnknownRevision(AgentdbError):
    """A revision named by the user does not exist in ``versions/``."""

    exit_code = 2

    def __init__(self, revision: str, known: Sequence[str] = ()) -> None:
        self.revision = revision
        self.known = tuple(known)
        shown = ", ".join(self.known[-12:]) if self.known else "none"
        super().__init__(
            f"unknown revision {revision!r}",
            hint=f"known revisions: {shown}; or head, base, +N, -N",
        )


@dataclass(frozen=True)
class Blocker:
    """A backend that holds a lock someone else is waiting for."""

    pid: int
    query: str
    held_for_seconds: float | None
    application_name: str = ""

    def describe(self) -> str:
        held = f"{self.held_for_seconds:.1f}s" if self.held_for_seconds is not None else "an unknown time"
        query = " ".join(self.query.split())
        if len(query) > 160:
            query = query[:157] + "..."
        app = f" ({self.application_name})" if self.application_name else ""
        return f"pid {self.pid}{app}, holding it for {held}, running: {query or '<idle>'}"


class RunLockTimeout(AgentdbError):
    """Another migration run holds the run lock for longer than we may wait."""

    exit_code = 4

    def __init__(self, waited_seconds: float, blocker: Blocker | None) -> None:
        self.waited_seconds = waited_seconds
        self.blocker = blocker
        who = blocker.describe() if blocker else "a backend that has since gone"
        super().__init__(
            f"another migration run holds the agentdb run lock; gave up after {waited_seconds:.0f}s: {who}",
            hint="wait for it to finish, or raise --run-lock-timeout",
        )


class LockTimeout(AgentdbError):
    """A migration could not take a lock within ``lock_timeout``, even after retries."""

    exit_code = 4
    sqlstate = "55P03"

    def __init__(self, revision: str | None, attempts: int, blockers: Sequence[Blocker]) -> None:
        self.revision = revision
        self.attempts = attempts
        self.blockers = tuple(blockers)
        who = "; ".join(b.describe() for b in self.blockers) or "no blocker seen any more"
        super().__init__(
            f"migration {revision or '?'} could not take its locks after {attempts} attempts "
            f"(lock_timeout); blocked by {who}",
            hint="end or wait for the blocking session, or raise --lock-timeout / --lock-retries",
        )


class ChecksumMismatch(AgentdbError):
    """Applied migrations whose files changed or disappeared since they ran."""

    exit_code = 5

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            "validation failed: " + "; ".join(self.problems),
            hint="restore the original files, or run 'agentdb repair' to accept them as they are now",
        )


class MigrationFailed(AgentdbError):
    """A migration raised an error; its transaction was rolled back."""

    exit_code = 6

    def __init__(self, revision: str, direction: str, sqlstate: str | None, reason: str) -> None:
        self.revision = revision
        self.direction = direction
        self.sqlstate = sqlstate
        self.reason = reason
        code = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
        super().__init__(
            f"{direction} of {revision} failed and was rolled back{code}: {reason}",
            hint="earlier migrations of this run stay applied; fix the migration and run again",
        )


class NotTransactional(AgentdbError):
    """A dry run reached a migration that cannot run inside a transaction.

    Such a migration opens ``op.get_context().autocommit_block()`` (for
    ``CREATE INDEX CONCURRENTLY`` and the like), which commits: it cannot be
    rolled back, so it cannot be rehearsed.  The dry run stops before any of it
    runs and rolls back what ran before.
    """

    exit_code = 2

    def __init__(self, revision: str, direction: str, filename: str) -> None:
        self.revision = revision
        self.direction = direction
        self.filename = filename
        super().__init__(
            f"cannot dry-run {direction} {revision} ({filename}): it uses autocommit_block(), which commits "
            "and cannot be rolled back; nothing was run and the database is unchanged",
            hint=f"dry-run up to the revision before it, and read 'agentdb sql' for {revision}",
        )


class RevisionOutOfRange(AgentdbError):
    """A relative target (``-N``, ``+N``) or a revision that the database cannot reach from where it is."""

    exit_code = 2

    def __init__(self, revision: str, direction: str, at: Sequence[str], reason: str) -> None:
        self.revision = revision
        self.direction = direction
        self.at = tuple(at)
        where = ", ".join(self.at) or "base (no migration applied)"
        super().__init__(
            f"cannot {direction} to {revision!r}: {reason}; the database is at {where} and was not changed",
            hint="agentdb migrations lists every revision and whether it is applied",
        )


class BulkChangeRefused(AgentdbError):
    """The bulk-change guard refused a statement (SQLSTATE ``YB001``, see :mod:`agentdb.guards`).

    The transaction was rolled back.  :attr:`event_log_id` is the ``event_logs``
    row that records the refusal, when :func:`agentdb.guarded` could write it.
    """

    exit_code = 8

    def __init__(self, table: str, operation: str, users: int | None, rows: int | None, limit: int,
                 event_log_id: int | None = None) -> None:
        self.table = table
        self.operation = operation
        self.users = users
        self.rows = rows
        self.limit = limit
        self.event_log_id = event_log_id
        touched = "all rows" if users is None else f"{users} users ({rows} rows)"
        super().__init__(
            f"refused: {operation} on {table} touches {touched} in one statement, more than the limit of {limit}",
            hint="run it in a transaction that first does SET LOCAL agentdb.allow_bulk_change = on",
        )
