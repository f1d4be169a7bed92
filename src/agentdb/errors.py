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
    "AdvisoryLockBusy",
    "AgentdbError",
    "BulkBusy",
    "BulkChangeRefused",
    "BulkError",
    "BulkFailed",
    "BulkInputInvalid",
    "BulkRowsRejected",
    "BulkTableInvalid",
    "ChecksumMismatch",
    "ConnectionFailed",
    "DatabaseNotEmpty",
    "DryRunFailed",
    "EmbeddedServerError",
    "ErasureFailed",
    "ErasureRefused",
    "ExportFailed",
    "HealthOptionInvalid",
    "HoldReasonRejected",
    "InvalidDatabaseURL",
    "InvalidLedger",
    "LockTimeout",
    "MigrationFailed",
    "NoActiveHold",
    "NotAtHead",
    "NotTransactional",
    "OnlineChangeBusy",
    "OnlineChangeError",
    "OnlineChangeNotFound",
    "OnlineChangeRefused",
    "OnlineFileChanged",
    "OnlineLockTimeout",
    "OnlineSourceChanged",
    "OnlineStepFailed",
    "OnlineVerifyFailed",
    "PartitionConflict",
    "PartitionMaintenanceFailed",
    "PartitionMaintenanceLocked",
    "PartitionTableInvalid",
    "PrivacyError",
    "RestoreFailed",
    "RevisionOutOfRange",
    "RunLockTimeout",
    "SeedFailed",
    "UnknownRevision",
    "UnknownUser",
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


def describe_blockers(blockers: Sequence[Blocker]) -> str:
    """``pid 123 (user@host, state 'idle in transaction', 12s: LOCK ...)``; the sessions that block, for errors."""
    return "; ".join(b.describe() for b in blockers) or "no blocker seen any more"


class AdvisoryLockBusy(AgentdbError):
    """Another agentdb process holds an advisory lock (a run, a maintenance) for longer than we may wait."""

    exit_code = 4

    def __init__(self, waited_seconds: float, blocker: Blocker | None, what: str, hint: str,
                 precision: int = 0) -> None:
        self.waited_seconds = waited_seconds
        self.blocker = blocker
        who = blocker.describe() if blocker else "a backend that has since gone"
        super().__init__(f"{what}; gave up after {waited_seconds:.{precision}f}s: {who}", hint=hint)


class RunLockTimeout(AdvisoryLockBusy):
    """Another migration run holds the run lock for longer than we may wait."""

    def __init__(self, waited_seconds: float, blocker: Blocker | None) -> None:
        super().__init__(waited_seconds, blocker, "another migration run holds the agentdb run lock",
                         "wait for it to finish, or raise --run-lock-timeout")


class LockTimeout(AgentdbError):
    """A migration could not take a lock within ``lock_timeout``, even after retries."""

    exit_code = 4
    sqlstate = "55P03"

    def __init__(self, revision: str | None, attempts: int, blockers: Sequence[Blocker]) -> None:
        self.revision = revision
        self.attempts = attempts
        self.blockers = tuple(blockers)
        who = describe_blockers(self.blockers)
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


class NotAtHead(AgentdbError):
    """The database is not at the newest revision, so the demo rows would not fit its tables."""

    exit_code = 1  # a refusal

    def __init__(self, revisions: Sequence[str], heads: Sequence[str]) -> None:
        self.revisions = tuple(revisions)
        self.heads = tuple(heads)
        at = ", ".join(self.revisions) or "base (no migration applied)"
        super().__init__(
            f"the database is at revision {at}, not at head {', '.join(self.heads)}: demo data needs every table",
            hint="run `agentdb upgrade` first",
        )


class DatabaseNotEmpty(AgentdbError):
    """The database already holds application rows; seeding would mix demo data into them."""

    exit_code = 1  # a refusal

    def __init__(self, table: str, rows: int, *, more: bool = False) -> None:
        """``rows`` is the exact count, or with ``more`` the limit the count stopped at (there are more)."""
        self.table = table
        self.rows = rows
        self.more = more
        counted = f"more than {rows:,} rows" if more else f"{rows:,} row{'' if rows == 1 else 's'}"
        super().__init__(
            f"table public.{table} already has {counted}: refusing to seed demo data into it",
            hint="use a fresh database, or `agentdb seed-demo --append` / seed_demo(append=True) to add to it",
        )


class SeedFailed(AgentdbError):
    """PostgreSQL rejected a demo row; the whole seeding was rolled back."""

    exit_code = 6

    def __init__(self, table: str, sqlstate: str | None, reason: str) -> None:
        self.table = table
        self.sqlstate = sqlstate
        super().__init__(
            f"seeding public.{table} failed [{sqlstate or '?'}]: {reason}; nothing was written (rolled back)"
        )


class RestoreFailed(MigrationFailed):
    """Archived rows could not be put back into the table a migration created again.

    The migration step's transaction was rolled back, so the archive table and
    its registry row are exactly as they were: remove the cause (named by
    :attr:`sqlstate` and :attr:`reason`, PostgreSQL's primary message, never its
    DETAIL line, which can quote row values) and upgrade again.
    """

    exit_code = 6

    def __init__(self, table: str, archive: str, sqlstate: str | None, reason: str, *,
                 revision: str | None = None, direction: str = "upgrade") -> None:
        self.revision = revision or "?"
        self.direction = direction
        self.table = table
        self.archive = archive
        self.sqlstate = sqlstate
        self.reason = reason
        code = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
        AgentdbError.__init__(
            self,
            f"cannot restore the archived rows of {table} from {archive}{code}: {reason}; "
            f"migration {self.revision} was rolled back",
            hint="the archive is kept as it was; remove the cause and upgrade again",
        )


class PartitionTableInvalid(AgentdbError):
    """A table or column named for partition maintenance is not in the catalogue, or cannot be managed.

    The name is looked up as a value in ``pg_class``/``pg_attribute``, never pasted into SQL.
    """

    exit_code = 2

    def __init__(self, table: str, reason: str, *, hint: str | None = None) -> None:
        self.table = table
        self.reason = reason
        super().__init__(f"cannot manage the partitions of {table}: {reason}", hint=hint)


class PartitionConflict(AgentdbError):
    """Maintenance met something in the way of one partition (a foreign table of the same name, a trigger).

    Nothing was changed for that partition; the rest of the run went on.
    """

    exit_code = 1

    def __init__(self, partition: str, reason: str, *, hint: str | None = None) -> None:
        self.partition = partition
        self.reason = reason
        super().__init__(f"partition {partition}: {reason}", hint=hint)


class PartitionMaintenanceLocked(AdvisoryLockBusy):
    """Another partition maintenance holds the maintenance lock of this database for longer than we may wait."""

    def __init__(self, waited_seconds: float, blocker: Blocker | None) -> None:
        super().__init__(waited_seconds, blocker, "another partition maintenance is running on this database",
                         "nothing was changed; the next run catches up (maintenance is safe to run every minute)",
                         precision=1)


class PartitionMaintenanceFailed(AgentdbError):
    """Partition maintenance could not do part of its work; what it did do is kept and recorded.

    :attr:`report` is the run's :class:`agentdb.partitions.MaintenanceReport`, with what succeeded.
    """

    exit_code = 6
    report: object | None = None

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            "partition maintenance failed: " + "; ".join(self.problems),
            hint="what succeeded is kept and in the run history; remove the cause and run it again",
        )


class OnlineChangeError(AgentdbError):
    """An online change (:mod:`agentdb.online`) could not go on.

    :attr:`table` is the table being changed (schema-qualified) and
    :attr:`change_id` the ``agentdb.online_changes`` row, when there is one.
    Whatever the error, the source table is intact: an online change only ever
    swaps tables inside its one short cut-over transaction.
    """

    exit_code = 1

    def __init__(self, table: str, message: str, *, change_id: int | None = None, hint: str | None = None) -> None:
        self.table = table
        self.change_id = change_id
        super().__init__(message, hint=hint)


class OnlineChangeRefused(OnlineChangeError):
    """The change cannot be done on this table (unknown name, unsupported feature, wrong phase)."""

    exit_code = 2

    def __init__(self, table: str, reason: str, *, change_id: int | None = None, hint: str | None = None) -> None:
        self.reason = reason
        super().__init__(table, f"cannot change {table} online: {reason}", change_id=change_id, hint=hint)


class OnlineChangeBusy(OnlineChangeError):
    """Another online change holds the table: a live process drives it, or one was left unfinished."""

    exit_code = 4

    def __init__(self, table: str, change_id: int | None, holder_pid: int | None, detail: str,
                 *, hint: str | None = None) -> None:
        self.holder_pid = holder_pid
        who = f"pid {holder_pid}" if holder_pid else "no live process"
        super().__init__(
            table, f"an online change of {table} is already under way (change {change_id or '?'}, {who}): {detail}",
            change_id=change_id,
            hint=hint or "wait for it, or see `agentdb online status`; resume or abort it",
        )


class OnlineChangeNotFound(OnlineChangeError):
    """No online change matches the id or table given."""

    exit_code = 2

    def __init__(self, what: str) -> None:
        super().__init__(what, f"no unfinished online change for {what}", hint="`agentdb online status` lists them")


class OnlineVerifyFailed(OnlineChangeError):
    """Source and copy differ in a key range: the cut-over was not done."""

    exit_code = 5

    def __init__(self, table: str, change_id: int, ranges: Sequence[str]) -> None:
        self.ranges = tuple(ranges)
        shown = "; ".join(self.ranges[:5]) + (f"; and {len(self.ranges) - 5} more" if len(self.ranges) > 5 else "")
        super().__init__(
            table, f"verification of change {change_id} on {table} failed, source and copy differ: {shown}",
            change_id=change_id,
            hint="nothing was swapped; abort the change (the source is intact) and report it",
        )


class OnlineLockTimeout(OnlineChangeError):
    """A step of an online change (the cut-over, installing the capture...) could not take its locks
    within lock_timeout, even after retries; nothing of that step was done."""

    exit_code = 4

    def __init__(self, table: str, change_id: int, what: str, attempts: int, blockers: Sequence[Blocker]) -> None:
        self.what = what
        self.attempts = attempts
        self.blockers = tuple(blockers)
        who = describe_blockers(self.blockers)
        super().__init__(
            table, f"{what} of online change {change_id} on {table} gave up after {attempts} attempts "
            f"(lock_timeout), nothing of it was done; blocked by {who}",
            change_id=change_id,
            hint="end or wait for the blocking session, then resume; or raise lock_timeout / lock_retries",
        )


class OnlineStepFailed(OnlineChangeError):
    """A step of an online change failed in PostgreSQL; its transaction was rolled back, the change can resume."""

    exit_code = 6

    def __init__(self, table: str, change_id: int, phase: str, what: str, sqlstate: str | None, reason: str) -> None:
        self.phase = phase
        self.sqlstate = sqlstate
        self.reason = reason
        code = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
        super().__init__(
            table, f"online change {change_id} on {table} failed in phase {phase} ({what}){code}: {reason}",
            change_id=change_id,
            hint="the step was rolled back and the source is intact; fix the cause and resume, or abort",
        )


class OnlineSourceChanged(OnlineChangeError):
    """The source table's definition changed after the change started, so the copy no longer matches it."""

    exit_code = 1

    def __init__(self, table: str, change_id: int | None) -> None:
        super().__init__(
            table, f"the definition of {table} changed since online change {change_id or '?'} was planned "
            "(columns, indexes, constraints, triggers, grants or owner); nothing was swapped",
            change_id=change_id, hint="abort the change and start it again",
        )


class OnlineFileChanged(OnlineChangeError):
    """The migration file that started a change is not the one that would resume it."""

    exit_code = 5

    def __init__(self, table: str, change_id: int, filename: str, problem: str) -> None:
        self.filename = filename
        super().__init__(
            table, f"refusing to resume online change {change_id} on {table}: migration file {filename} {problem}",
            change_id=change_id, hint="restore the file it started from, or abort the change",
        )


class HealthOptionInvalid(AgentdbError):
    """A health-check option names no check or threshold, or gives a value that cannot be read.

    Nothing was run.  ``agentdb health --list`` lists the check ids and their thresholds.  The exit code
    is 3, UNKNOWN, as Nagios plugins answer a usage error (2 would read as CRITICAL).
    """

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or "agentdb health --list shows the check ids and thresholds")


class BulkError(AgentdbError):
    """A bulk import or export (:mod:`agentdb.bulk`) could not be done.

    :attr:`table` is the table named; :attr:`report` is the import's report
    when one exists (the rows read, rejected and why).  No message quotes a
    value of the file or the table: lines are named by number, columns by name.
    """

    exit_code = 1
    report: object | None = None

    def __init__(self, table: str, message: str, *, hint: str | None = None) -> None:
        self.table = table
        super().__init__(message, hint=hint)


class BulkTableInvalid(BulkError):
    """The table or a column named for an import or export is not in the catalogue, or cannot be used."""

    exit_code = 2

    def __init__(self, table: str, reason: str, *, hint: str | None = None) -> None:
        self.reason = reason
        shown = table if len(table) <= 80 else table[:77] + "..."
        super().__init__(table, f"cannot use table {shown!r}: {reason}", hint=hint)


class BulkInputInvalid(BulkError):
    """The file (its format, header, encoding), the rejects path or an option is wrong; nothing was written."""

    exit_code = 2

    def __init__(self, table: str, what: str, reason: str, *, hint: str | None = None) -> None:
        self.what = what
        self.reason = reason
        super().__init__(table, f"{what}: {reason}; nothing was written", hint=hint)


class BulkRowsRejected(BulkError):
    """Rows of the file were rejected, more than allowed: nothing (or, with batches, no further batch) was loaded.

    :attr:`report` lists every rejected line with its column, SQLSTATE and reason.
    """

    exit_code = 6

    def __init__(self, table: str, rejected: int, read: int, limit: str, rejects_path: str | None,
                 *, committed: int = 0) -> None:
        self.rejected = rejected
        self.read = read
        self.limit = limit
        self.rejects_path = rejects_path
        kept = (f"{committed:,} rows of earlier batches stay committed" if committed
                else "nothing was loaded")
        super().__init__(
            table, f"import into {table} refused: {rejected:,} of {read:,} rows rejected (allowed: {limit}); "
            f"{kept}",
            hint="the report lists every bad line; the rejects file has them as they were",
        )


class BulkBusy(BulkError):
    """Another process is importing the same file into the same table."""

    exit_code = 4

    def __init__(self, table: str, pid: int | None) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "another session"
        super().__init__(table, f"the same file is being imported into {table} by {who}",
                         hint="wait for it to finish; a second run then finds it done, or resumes it")


class BulkFailed(BulkError):
    """PostgreSQL refused a step of the import or export for a reason that is not one row's; rolled back."""

    exit_code = 6

    def __init__(self, table: str, what: str, sqlstate: str | None, reason: str, *, hint: str | None = None) -> None:
        self.what = what
        self.sqlstate = sqlstate
        self.reason = reason
        code = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
        super().__init__(table, f"{what} of {table} failed{code}: {reason}", hint=hint)


class PrivacyError(AgentdbError):
    """A GDPR request (:mod:`agentdb.privacy`) could not be done.

    Messages name the user id and the ledger request id only: never an
    e-mail, a name or another personal value, nor PostgreSQL's DETAIL line.
    """

    def __init__(self, user_id: int | None, message: str, *, request_id: int | None = None,
                 hint: str | None = None) -> None:
        self.user_id = user_id
        self.request_id = request_id
        super().__init__(message, hint=hint)


class UnknownUser(PrivacyError):
    """No row anywhere (live, archive, audit trail) is about this user id, and no erasure of it is recorded."""

    exit_code = 2

    def __init__(self, user_id: int, *, erased_by: int | None = None) -> None:
        self.erased_by = erased_by
        if erased_by is not None:
            super().__init__(user_id, f"user {user_id} was erased (request {erased_by}): nothing is held about it",
                             hint="`agentdb privacy requests --user ID` shows the erasure")
            return
        super().__init__(user_id, f"unknown user id {user_id}: no data about it and no erasure of it in the ledger",
                         hint="check the id; `agentdb privacy requests` lists the requests recorded")


class ErasureRefused(PrivacyError):
    """A legal hold is active on the user: the erasure was not done, and the refusal is in the ledger."""

    exit_code = 1

    def __init__(self, user_id: int, request_id: int | None, hold_id: int) -> None:
        self.hold_id = hold_id
        super().__init__(user_id, f"erasure of user {user_id} refused: legal hold (request {hold_id}) is active; "
                         f"nothing was changed, the refusal is request {request_id}", request_id=request_id,
                         hint=f"`agentdb privacy release {user_id}` once the hold ends, then erase again")


class ErasureFailed(PrivacyError):
    """PostgreSQL refused a statement of the erasure; its transaction was rolled back, nothing was erased."""

    exit_code = 6

    def __init__(self, user_id: int, request_id: int | None, sqlstate: str | None, reason: str) -> None:
        self.sqlstate = sqlstate
        self.reason = reason
        code = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
        super().__init__(user_id, f"erasure of user {user_id} failed and was rolled back{code}: {reason}",
                         request_id=request_id,
                         hint=f"request {request_id} is marked failed in the ledger; fix the cause and erase again")


class NoActiveHold(PrivacyError):
    """``release`` of a user who has no active legal hold."""

    exit_code = 2

    def __init__(self, user_id: int) -> None:
        super().__init__(user_id, f"user {user_id} has no active legal hold",
                         hint=f"`agentdb privacy requests --user {user_id}` lists its requests")


class HoldReasonRejected(PrivacyError):
    """A hold's reason would put personal data into the ledger (or is empty or too long)."""

    exit_code = 2

    def __init__(self, user_id: int, problem: str) -> None:
        super().__init__(user_id, f"hold reason for user {user_id} rejected: {problem}",
                         hint="give a case reference (e.g. 'litigation case 2026-114'), never a name or e-mail")


class InvalidLedger(PrivacyError):
    """The ledger to reapply erasures from cannot be read (a file that is not a ledger export, a bad database)."""

    exit_code = 2

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        super().__init__(None, f"cannot read the request ledger from {source}: {problem}",
                         hint="give `agentdb privacy requests --json` output, or --from-database URL")


class ExportFailed(PrivacyError):
    """The export file could not be written; nothing was left behind (it is written to a temporary file first)."""

    exit_code = 1

    def __init__(self, user_id: int, problem: str) -> None:
        super().__init__(user_id, f"export of user {user_id} failed: {problem}",
                         hint="check that the directory exists and is writable")


class DryRunFailed(MigrationFailed):
    """A migration failed during a dry run: the real run would fail the same way; nothing was changed."""

    def __init__(self, revision: str, direction: str, sqlstate: str | None, reason: str) -> None:
        super().__init__(revision, direction, sqlstate, reason)
        code = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
        self.message = f"dry run: {direction} of {revision} would fail{code}: {reason}"
        self.hint = "nothing was changed: a dry run rolls everything back"
        self.args = (self.message,)
