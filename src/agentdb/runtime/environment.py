"""What ``env.py`` does: the safety of every migration run.

``env.py`` is a two-line file that calls :func:`run_env`, so plain ``alembic``
and ``agentdb`` take exactly the same path:

1. resolve the database (:mod:`agentdb.connection`);
2. take the run lock, a session-level advisory lock, so concurrent runs on a
   database wait for each other and each revision is applied once;
3. create the ``agentdb`` schema and the run history table if missing;
4. validate the checksums of applied migrations before an upgrade;
5. run each migration in its own transaction under ``lock_timeout`` and
   ``statement_timeout``, retrying a lock timeout under a savepoint;
6. write a history row per migration: inside its transaction on success,
   after the rollback on failure.

A dry run (``settings.dry_run``) takes the same lock and timeouts but runs
every step in one transaction that is rolled back, and writes no history;
see :mod:`agentdb.runtime.dryrun`.

What a run did is said once, after it happened: when a step's transaction has
committed, it is added to :class:`RunReport` and logged as one INFO line on
the ``agentdb.run`` logger (plus one line per archive event).  The ``agentdb``
CLI prints the report instead; plain ``alembic`` shows these lines (see
``alembic.ini``), and turns an :class:`~agentdb.errors.AgentdbError` into the
same one-line ``error: ...`` and exit code as ``agentdb``.

.. warning::
   A migration that needs to run outside a transaction (``CREATE INDEX
   CONCURRENTLY``) must use ``op.get_context().autocommit_block()``; the work
   before that block is committed when it opens.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import logging.config
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError

from agentdb import guards
from agentdb.connection import Target, connect, create_engine, redact_url, resolve
from agentdb.connection import conninfo as libpq_conninfo
from agentdb.errors import AgentdbError, LockTimeout, MigrationFailed
from agentdb.runtime import archive  # registers the archiving drop_table / restoring create_table
from agentdb.runtime.history import INTERNAL_SCHEMA, VERSION_TABLE, RunRecord, bootstrap, file_checksum, record_run
from agentdb.runtime.locks import (
    BlockerWatch,
    RetryPolicy,
    acquire_run_lock,
    release_run_lock,
    retry_on_lock_timeout,
    sqlstate_of,
)
from agentdb.runtime.settings import RunSettings
from agentdb.runtime.validation import current_heads, require_valid

if TYPE_CHECKING:
    from agentdb.online.migration import MigrationHooks

__all__ = [
    "RUN_LOGGER", "RunReport", "StepResult", "configure_options", "describe_event", "describe_online",
    "online_hooks", "run_env",
]

_log = logging.getLogger("agentdb.runtime")

#: One INFO line per migration applied or rolled back, and per archive event, once committed.
RUN_LOGGER = "agentdb.run"
_run_log = logging.getLogger(RUN_LOGGER)
#: A run's log lines fit a terminal this wide.
_WIDTH = 100


@dataclass(frozen=True)
class StepResult:
    """One migration applied or rolled back during a run (committed)."""

    revision: str
    direction: str
    description: str
    #: Wall time of the step, rounded to 0.1 ms.
    duration_ms: float
    #: What the archive did in the step (:attr:`agentdb.runtime.archive.ArchiveScope.events`), as dicts with
    #: ``archived``/``purged``/``restored`` (the table), ``rows``, and ``archive``/``replaced``/``skipped``.
    events: tuple[dict[str, Any], ...] = ()
    #: The migration file's name without ``.py`` (``005_add_analytics_tables``).
    name: str = ""
    #: The online changes the step drove (:mod:`agentdb.online.migration`): id, kind, table, rows, timings.
    online: tuple[dict[str, Any], ...] = ()

    def describe(self) -> str:
        """One line, at most 100 columns: ``upgrade 005_add_analytics_tables (24 ms)``.

        The file name says in a few words what the docstring says in a sentence, and is never cut; without it
        (a step built by hand) the docstring's first line stands in, shortened to fit.
        """
        seconds = self.duration_ms / 1000
        took = f"{self.duration_ms:.0f} ms" if self.duration_ms < 1000 else f"{seconds:.1f} s"
        if self.name:
            return f"{self.direction} {self.name} ({took})"
        head, tail = f"{self.direction} {self.revision} ", f" ({took})"
        room = _WIDTH - len(head) - len(tail)
        text = self.description.rstrip(".")
        if len(text) > room:
            text = text[: max(room - 1, 0)].rstrip(" ,;:") + "…"
        return head + text + tail


def describe_online(change: dict[str, Any]) -> str:
    """An online change a step drove: ``partition of public.analytics: 2,000,000 rows, ACCESS EXCLUSIVE 41 ms``."""
    if change.get("done_already"):
        return f"{change['kind']} of {change['table']}: nothing to do, done already"
    text = f"{change['kind']} of {change['table']} (online change {change.get('id')}): {change.get('rows', 0):,} rows"
    if change.get("lock_hold_ms") is not None:
        text += f", ACCESS EXCLUSIVE held {change['lock_hold_ms']:.0f} ms"
    return text


def describe_event(event: dict[str, Any]) -> str:
    """An archive event in the past tense: ``archived 884 rows of public.consent in agentdb_archive.…``."""

    def rows(count: Any) -> str:
        return f"{count} row" if count == 1 else f"{count} rows"

    if "archived" in event:
        return f"archived {rows(event.get('rows'))} of {event['archived']} in {event.get('archive')}"
    if "purged" in event:
        return f"purged {rows(event.get('rows'))} of {event['purged']} (not archived: --purge)"
    if "restored" in event:
        text = f"restored {rows(event.get('rows'))} of {event['restored']}"
        if event.get("archive"):
            text += f" from {event['archive']}"
        if event.get("replaced"):
            text += f" (in place of the {rows(event['replaced'])} the migration wrote)"
        if event.get("skipped"):
            text += f" ({event['skipped']} skipped)"
        return text
    return ", ".join(f"{key} {value}" for key, value in event.items())


@dataclass
class RunReport:
    """Filled in by a run, for the caller to show (``config.attributes['agentdb_report']``)."""

    database: str = ""
    steps: list[StepResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def configure_options() -> dict[str, Any]:
    """The ``context.configure`` options shared by online and offline runs."""
    from agentdb.runtime import autogenerate
    from agentdb.schema import metadata

    return {
        "target_metadata": metadata,
        "version_table_schema": INTERNAL_SCHEMA,
        "version_table": VERSION_TABLE,
        "transaction_per_migration": True,
        "compare_type": True,
        "compare_server_default": True,
        # Functions, triggers, views, grants of agentdb.schema.entities: compared by autogenerate too.
        **autogenerate.options(),
    }


def run_env(context: EnvironmentContext) -> None:
    """Entry point called by ``env.py``.

    Under the ``alembic`` command line (``config.cmd_opts`` is set) the ini file's
    logging applies and an :class:`AgentdbError` ends the process the way
    ``agentdb`` does; agentdb's own calls (no ``cmd_opts``) get the exception.
    """
    if getattr(context.config, "cmd_opts", None) is None:
        _run(context, _settings(context))
        return
    _run_from_alembic_cli(context)


def _settings(context: EnvironmentContext) -> RunSettings:
    return RunSettings.from_sources(context.config.attributes, context.get_x_argument(as_dictionary=True))


def _run(context: EnvironmentContext, settings: RunSettings) -> None:
    if context.is_offline_mode():
        _run_offline(context, settings)
    else:
        _run_online(context, settings)




def _run_from_alembic_cli(context: EnvironmentContext) -> None:
    """Plain ``alembic``: one ``error: ...`` line on stderr and agentdb's exit code, no traceback.

    The checks ``agentdb`` makes before calling Alembic (an unknown revision, a
    target the database cannot reach) are made here too, so both say the same.
    An unexpected exception (a bug) keeps its traceback: ``alembic`` has no
    ``--debug`` to ask for it.
    """
    from agentdb.runtime.config import OUT_OF_RANGE, check_revision, out_of_range

    config = context.config
    if config.config_file_name:
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
    options = config.cmd_opts
    command = getattr(getattr(options, "cmd", (None,))[0], "__name__", "")
    revision = getattr(options, "revision", None)
    moving = command in {"upgrade", "downgrade"} and isinstance(revision, str)
    try:
        settings = _settings(context)
        if moving:
            check_revision(context.script, str(revision))
        try:
            _run(context, settings)
        except CommandError as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else "alembic command failed"
            if not moving or not OUT_OF_RANGE.search(text):
                raise AgentdbError(text) from exc
            with _connection(context, settings) as (connection, _conninfo):
                at = current_heads(connection)
            raise out_of_range(command, str(revision), at, text) from exc
    except AgentdbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _run_offline(context: EnvironmentContext, settings: RunSettings) -> None:
    """Emit SQL instead of running it (``agentdb sql``, ``alembic upgrade --sql``)."""
    # paramstyle "named": with psycopg's "format" style a literal % in SQL text would come out doubled.
    context.configure(
        url="postgresql+psycopg://", literal_binds=True, dialect_opts={"paramstyle": "named"}, **configure_options()
    )
    context.execute(f"SET lock_timeout = '{int(settings.lock_timeout * 1000)}ms'")
    context.execute(f"SET statement_timeout = '{int(settings.statement_timeout * 1000)}ms'")
    context.execute(f"CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA}")
    hooks = online_hooks(context, "sql", settings)
    # An online change is designed only on a database the caller named (`agentdb sql --database-url`);
    # never on the embedded server, which this would start.
    hooks.data_dir = None
    with context.begin_transaction():
        context.run_migrations()


def online_hooks(context: EnvironmentContext, mode: str, settings: RunSettings) -> MigrationHooks:
    """The :class:`~agentdb.online.migration.MigrationHooks` of this run, created if the caller gave none.

    A caller (the CLI) may put its own in ``config.attributes`` to give a progress callback.
    """
    from agentdb.online.migration import HOOKS_KEY, MigrationHooks

    given = context.config.attributes.get(HOOKS_KEY)
    hooks = given if isinstance(given, MigrationHooks) else MigrationHooks()
    hooks.mode = mode
    hooks.database_url = settings.database_url
    hooks.data_dir = settings.data_dir
    hooks.expand_only = settings.expand_only
    context.config.attributes[HOOKS_KEY] = hooks
    return hooks


def _target_url(context: EnvironmentContext, settings: RunSettings) -> str | None:
    if settings.database_url:
        return settings.database_url
    ini_url = context.config.get_main_option("sqlalchemy.url")
    return ini_url or None


@contextlib.contextmanager
def _connection(context: EnvironmentContext, settings: RunSettings) -> Iterator[tuple[sa.Connection, str]]:
    """The connection to migrate through, and the conninfo of its database (for side connections)."""
    given = context.config.attributes.get("connection")
    if isinstance(given, sa.Connection):
        yield given, libpq_conninfo(given.engine.url)
        return
    if isinstance(given, sa.Engine):
        with given.connect() as conn:
            yield conn, libpq_conninfo(given.url)
        return
    target: Target = resolve(_target_url(context, settings), settings.data_dir)
    engine = create_engine(target)
    try:
        with connect(engine, target) as conn:
            yield conn, target.conninfo()
    finally:
        engine.dispose()


def _set_timeouts(connection: sa.Connection, settings: RunSettings) -> None:
    for name, seconds in (("lock_timeout", settings.lock_timeout), ("statement_timeout", settings.statement_timeout)):
        connection.execute(
            sa.text("SELECT set_config(:name, :value, false)"), {"name": name, "value": f"{int(seconds * 1000)}ms"}
        )
    connection.commit()


def _reset_timeouts(connection: sa.Connection) -> None:
    if connection.in_transaction():
        connection.rollback()
    connection.execute(sa.text("RESET lock_timeout"))
    connection.execute(sa.text("RESET statement_timeout"))
    connection.commit()


class _Run:
    """One online run: wraps each migration step with retry, timing and history."""

    def __init__(
        self, context: EnvironmentContext, connection: sa.Connection, settings: RunSettings, watch: BlockerWatch | None
    ) -> None:
        self.context = context
        self.connection = connection
        self.settings = settings
        self.watch = watch
        self.run_id = uuid.uuid4()
        self.policy = RetryPolicy(attempts=settings.lock_retries, base_delay=settings.retry_delay)
        self.report: RunReport = context.config.attributes.get("agentdb_report") or RunReport()
        self.hooks = online_hooks(context, "run", settings)
        self.current: tuple[RevisionStep, datetime] | None = None
        #: Steps whose transaction has not committed yet: reported by :meth:`committed`, dropped on failure.
        self.pending: list[StepResult] = []

    def committed(self) -> None:
        """Report the pending steps: called when their transactions have committed.

        Alembic commits a step's transaction after its migration function returns
        and before it calls the next one, so the start of the next step (and the
        end of ``run_migrations``) is the first moment a step is known to be done.
        """
        for result in self.pending:
            self.report.steps.append(result)
            _run_log.info("%s", result.describe())
            for event in result.events:
                _run_log.info("  %s", describe_event(event))
            for change in result.online:
                _run_log.info("  %s", describe_online(change))
        self.pending.clear()

    def wrap(self, original: Callable[..., Iterable[Any]]) -> Callable[..., list[Any]]:
        def steps(heads: Any, migration_context: MigrationContext) -> list[Any]:
            planned = list(original(heads, migration_context))
            revision_steps = [s for s in planned if isinstance(s, RevisionStep)]
            if any(s.is_upgrade for s in revision_steps) and not self.settings.ignore_checksums:
                self.report.warnings.extend(require_valid(self.connection, self.context.script))
            for step in revision_steps:
                step.migration_fn = self._tracked(step, step.migration_fn)
            return planned

        return steps

    def _tracked(self, step: RevisionStep, migration_fn: Callable[..., Any]) -> Callable[..., None]:
        @functools.wraps(migration_fn)
        def run(**kw: Any) -> None:
            self.committed()
            direction = "upgrade" if step.is_upgrade else "downgrade"
            revision = step.revision.revision
            started = datetime.now(UTC)
            self.current = (step, started)
            self.hooks.begin_step(revision, step.revision.path)
            clock = time.perf_counter()
            if self.watch is not None:
                self.watch.forget()
            last: list[archive.ArchiveScope] = []

            def attempt() -> None:
                # A fresh scope per attempt: a retried attempt's archive work was rolled back with its savepoint.
                with archive.scope(revision, self.run_id, self.connection, purge=self.settings.purge) as current:
                    last[:] = [current]
                    migration_fn(**kw)

            retry_on_lock_timeout(
                attempt, self.connection, self.policy, what=f"{direction} {revision}", watch=self.watch
            )
            finished = datetime.now(UTC)
            record = self._record(step, started, finished, success=True)
            events = tuple(dict(event) for event in last[0].events) if last else ()
            online = tuple(dict(change) for change in self.hooks.changes)
            details: dict[str, Any] = {}
            if events:
                details["archive"] = list(events)
            if online:
                details["online"] = list(online)
            record.details = details or None
            record_run(self.connection, record)
            self.pending.append(StepResult(
                revision, direction, _first_line(step.revision.doc),
                round((time.perf_counter() - clock) * 1000, 1), events, Path(step.revision.path).stem, online,
            ))

        return run

    def _record(
        self, step: RevisionStep, started: datetime, finished: datetime, *, success: bool,
        sqlstate: str | None = None, error: str | None = None,
    ) -> RunRecord:
        script = step.revision
        return RunRecord(
            run_id=self.run_id,
            revision=script.revision,
            direction="upgrade" if step.is_upgrade else "downgrade",
            started_at=started,
            finished_at=finished,
            success=success,
            filename=script.path.rsplit("/", 1)[-1],
            description=_first_line(script.doc),
            checksum=file_checksum(script.path),
            sqlstate=sqlstate,
            error=error,
        )

    def record_failure(self, exc: BaseException) -> AgentdbError | None:
        """Write the failure row of the step that was running; return the error to raise."""
        if self.current is None:
            return None
        step, started = self.current
        self.current = None
        state = sqlstate_of(exc) or getattr(exc, "sqlstate", None)
        reason = _reason(exc)
        if self.connection.in_transaction():
            self.connection.rollback()
        failed = self._record(step, started, datetime.now(UTC), success=False, sqlstate=state, error=reason)
        if self.hooks.changes:
            failed.details = {"online": list(self.hooks.changes)}
        record_run(self.connection, failed)
        self.connection.commit()
        refusal = guards.refusal_of(exc)
        if refusal is not None:
            # The bulk-change guard refused a statement of the migration: its event_logs row was rolled back
            # with the migration, so write it again now, on a connection of its own.
            try:
                guards.record_refusal(self.connection, refusal, source="agentdb.migration")
            except DBAPIError:
                _log.warning("the bulk-change refusal could not be recorded in event_logs")
        if isinstance(exc, AgentdbError):
            return exc
        direction = "upgrade" if step.is_upgrade else "downgrade"
        return MigrationFailed(step.revision.revision, direction, state, reason)


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


def _reason(exc: BaseException) -> str:
    """A one-line reason without row data: SQLSTATE message only, never DETAIL."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        diag = getattr(exc.orig, "diag", None)
        primary = getattr(diag, "message_primary", None)
        if primary:
            return str(primary)
        return str(exc.orig).strip().splitlines()[0]
    if isinstance(exc, LockTimeout):
        return exc.message
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _run_online(context: EnvironmentContext, settings: RunSettings) -> None:
    # Not get_revision_argument(): it turns "base" into None, and a downgrade to base mutates.
    mutating = context.context_opts.get("destination_rev") is not None
    with _connection(context, settings) as (connection, conninfo):
        if connection.in_transaction():
            connection.commit()
        report = context.config.attributes.get("agentdb_report")
        if isinstance(report, RunReport):
            report.database = redact_url(connection.engine.url)
        if not mutating:
            # Reading (current, autogenerate): never create the version table as a side effect.
            context.configure(connection=connection, dont_mutate=True, **configure_options())
            with context.begin_transaction():
                context.run_migrations()
            return
        acquire_run_lock(connection, settings.run_lock_timeout)
        if settings.dry_run:
            _run_dry(context, connection, conninfo, settings)
            return
        try:
            bootstrap(connection)
            _set_timeouts(connection, settings)
            backend_pid = int(connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
            connection.commit()
            with BlockerWatch(conninfo, backend_pid) as watch:
                run = _Run(context, connection, settings, watch)
                original = context.context_opts.get("fn")
                options = configure_options()
                if original is not None:
                    options["fn"] = run.wrap(original)
                context.configure(connection=connection, **options)
                try:
                    context.run_migrations()
                    run.committed()
                except BaseException as exc:
                    error = run.record_failure(exc)
                    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C: recorded, rolled back, still an interrupt
                        raise
                    if error is not None and error is not exc:
                        raise error from exc
                    raise
        finally:
            _reset_timeouts(connection)
            release_run_lock(connection)


def _run_dry(context: EnvironmentContext, connection: sa.Connection, conninfo: str, settings: RunSettings) -> None:
    """A dry run (:mod:`agentdb.runtime.dryrun`): same lock and timeouts, one transaction, rolled back.

    No :func:`bootstrap`: a dry run leaves no trace, not even agentdb's own schema.
    Called with the run lock held; releases it.
    """
    from agentdb.runtime.dryrun import run_dry

    try:
        _set_timeouts(connection, settings)
        backend_pid = int(connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        connection.commit()
        with BlockerWatch(conninfo, backend_pid) as watch:
            run_dry(context, connection, settings, watch, configure_options())
    finally:
        _reset_timeouts(connection)
        release_run_lock(connection)
