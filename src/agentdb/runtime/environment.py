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

.. warning::
   A migration that needs to run outside a transaction (``CREATE INDEX
   CONCURRENTLY``) must use ``op.get_context().autocommit_block()``; the work
   before that block is committed when it opens.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, RevisionStep
from sqlalchemy.exc import DBAPIError

from agentdb import guards
from agentdb.connection import Target, connect, create_engine, resolve
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
from agentdb.runtime.validation import require_valid

__all__ = ["RunReport", "StepResult", "configure_options", "run_env"]

_log = logging.getLogger("agentdb.runtime")


@dataclass(frozen=True)
class StepResult:
    """One migration applied or rolled back during a run."""

    revision: str
    direction: str
    description: str
    duration_ms: float


@dataclass
class RunReport:
    """Filled in by a run, for the caller to show (``config.attributes['agentdb_report']``)."""

    database: str = ""
    steps: list[StepResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def configure_options() -> dict[str, Any]:
    """The ``context.configure`` options shared by online and offline runs."""
    from agentdb.schema import metadata

    return {
        "target_metadata": metadata,
        "version_table_schema": INTERNAL_SCHEMA,
        "version_table": VERSION_TABLE,
        "transaction_per_migration": True,
        "compare_type": True,
        "compare_server_default": True,
    }


def run_env(context: EnvironmentContext) -> None:
    """Entry point called by ``env.py``."""
    settings = RunSettings.from_sources(context.config.attributes, context.get_x_argument(as_dictionary=True))
    if context.is_offline_mode():
        _run_offline(context, settings)
    else:
        _run_online(context, settings)


def _run_offline(context: EnvironmentContext, settings: RunSettings) -> None:
    """Emit SQL instead of running it (``agentdb sql``, ``alembic upgrade --sql``)."""
    # paramstyle "named": with psycopg's "format" style a literal % in SQL text would come out doubled.
    context.configure(
        url="postgresql+psycopg://", literal_binds=True, dialect_opts={"paramstyle": "named"}, **configure_options()
    )
    context.execute(f"SET lock_timeout = '{int(settings.lock_timeout * 1000)}ms'")
    context.execute(f"SET statement_timeout = '{int(settings.statement_timeout * 1000)}ms'")
    context.execute(f"CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA}")
    with context.begin_transaction():
        context.run_migrations()


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
        yield given, given.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return
    if isinstance(given, sa.Engine):
        with given.connect() as conn:
            yield conn, given.url.set(drivername="postgresql").render_as_string(hide_password=False)
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
        self.current: tuple[RevisionStep, datetime] | None = None

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
            direction = "upgrade" if step.is_upgrade else "downgrade"
            revision = step.revision.revision
            started = datetime.now(UTC)
            self.current = (step, started)
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
            if last and last[0].events:
                record.details = {"archive": last[0].events}
            record_run(self.connection, record)
            self.report.steps.append(
                StepResult(revision, direction, _first_line(step.revision.doc), (time.perf_counter() - clock) * 1000)
            )
            _log.debug("%s %s done in %.0f ms", direction, revision, record.duration_ms)

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
        record_run(
            self.connection,
            self._record(step, started, datetime.now(UTC), success=False, sqlstate=state, error=reason),
        )
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
            report.database = connection.engine.url.render_as_string(hide_password=True)
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
                except BaseException as exc:
                    error = run.record_failure(exc)
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
