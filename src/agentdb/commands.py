"""Every user command as a plain typed function; :mod:`agentdb.cli` is a thin layer over these.

Each function resolves its database the same way (see :mod:`agentdb.connection`),
raises :class:`agentdb.errors.AgentdbError` subclasses for anything the user can
fix, and returns data (never prints), so the CLI can render it as a table or JSON.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError, RevisionError
from alembic.util import CommandError

from agentdb.connection import Target, connect, create_engine, resolve
from agentdb.errors import AgentdbError, ChecksumMismatch, RevisionOutOfRange, UnknownRevision
from agentdb.governance import CheckReport
from agentdb.runtime import history as _history
from agentdb.runtime.dryrun import REPORT_KEY as _DRY_RUN_KEY
from agentdb.runtime.dryrun import DryRunReport
from agentdb.runtime.environment import RunReport
from agentdb.runtime.settings import RunSettings
from agentdb.runtime.validation import ValidationIssue, current_heads, validate_database

__all__ = [
    "CurrentState",
    "MigrationInfo",
    "check",
    "current",
    "downgrade",
    "dry_run",
    "heads",
    "history",
    "list_migrations",
    "make_config",
    "new_migration",
    "plan_rollback",
    "repair",
    "rollback",
    "rollback_target",
    "sql",
    "upgrade",
    "validate",
]

#: Where the migrations live; ``AGENTDB_SCRIPT_LOCATION`` overrides it (tests use this).
SCRIPT_LOCATION = "agentdb:migrations"
_SPECIAL = re.compile(r"^(head|heads|base|[+-]\d+|\w+@[+-]?\w+)$")


def make_config(settings: RunSettings | None = None, *, output_buffer: Any = None) -> Config:
    """An Alembic :class:`Config` for agentdb's migrations, without any ini file."""
    import os

    config = Config(output_buffer=output_buffer, stdout=io.StringIO())
    config.set_main_option("script_location", os.environ.get("AGENTDB_SCRIPT_LOCATION", SCRIPT_LOCATION))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.set_main_option("truncate_slug_length", "40")
    config.attributes["agentdb"] = settings or RunSettings()
    return config


def _script(config: Config) -> ScriptDirectory:
    return ScriptDirectory.from_config(config)


def _check_revision(script: ScriptDirectory, revision: str) -> None:
    """Raise :class:`UnknownRevision` for an id (or prefix) that names no migration."""
    for part in revision.split(":"):
        if not part or _SPECIAL.match(part):
            continue
        try:
            found = script.get_revisions(part)
        except (ResolutionError, CommandError):
            found = ()
        if not found:
            raise UnknownRevision(part, [s.revision for s in reversed(list(script.walk_revisions()))])


@contextmanager
def _alembic_errors() -> Iterator[None]:
    """Turn Alembic's CommandError into one-line agentdb errors."""
    try:
        yield
    except CommandError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else "alembic command failed"
        raise AgentdbError(text) from exc


_OUT_OF_RANGE = re.compile(r"Relative revision \S+ didn't produce|is not a valid (?:up|down)grade target")


@contextmanager
def _moving(direction: str, revision: str, settings: RunSettings) -> Iterator[None]:
    """Like :func:`_alembic_errors`, and a target the database cannot reach names where the database is."""
    try:
        with _alembic_errors():
            yield
    except AgentdbError as exc:
        cause = exc.__cause__
        if not isinstance(cause, CommandError) or not _OUT_OF_RANGE.search(str(cause)):
            raise
        with _connected(settings.database_url, settings.data_dir) as (connection, _target):
            at = current_heads(connection)
        reason = str(cause).strip().splitlines()[0].rstrip(".")
        if reason.startswith("Relative revision"):
            reason = f"there are not that many migrations to {direction} from there"
        elif "not a valid" in reason:
            reason = f"that revision is not {'below' if direction == 'downgrade' else 'above'} the current one"
        raise RevisionOutOfRange(revision, direction, at, reason) from cause


def _settings(database_url: str | None, data_dir: str | Path | None, **options: Any) -> RunSettings:
    base = RunSettings.from_sources({}, {})
    return base.merged(database_url=database_url, data_dir=str(data_dir) if data_dir else None, **options)


def _migrate(direction: str, revision: str, settings: RunSettings, report_key: str, report: Any) -> None:
    """Run Alembic's upgrade or downgrade to ``revision`` with ``settings``; ``report`` is filled in by the run."""
    config = make_config(settings)
    _check_revision(_script(config), revision)
    config.attributes[report_key] = report
    with _moving(direction, revision, settings):
        if direction == "upgrade":
            alembic_command.upgrade(config, revision)
        else:
            alembic_command.downgrade(config, revision)


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
) -> RunReport:
    """Apply migrations up to ``revision`` (default: the newest).

    Refuses to run when an applied migration's file has changed since it ran
    (see :func:`validate`) unless ``ignore_checksums`` is set.
    """
    settings = _settings(
        database_url, data_dir, lock_timeout=lock_timeout, statement_timeout=statement_timeout,
        lock_retries=lock_retries, run_lock_timeout=run_lock_timeout, ignore_checksums=ignore_checksums,
    )
    report = RunReport()
    _migrate("upgrade", revision, settings, "agentdb_report", report)
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
) -> RunReport:
    """Roll back to ``revision`` (an id, ``-N`` or ``base``).

    A migration's ``op.drop_table`` of a table that holds rows archives them
    first (see :mod:`agentdb.runtime.archive`); ``purge=True`` drops them for real.
    """
    settings = _settings(
        database_url, data_dir, lock_timeout=lock_timeout, statement_timeout=statement_timeout,
        lock_retries=lock_retries, run_lock_timeout=run_lock_timeout, purge=purge,
    )
    report = RunReport()
    _migrate("downgrade", revision, settings, "agentdb_report", report)
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
    return dry_run(
        rollback_target(revision, steps), direction="downgrade", purge=purge or None,
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
    if expect_at is not None:
        now = current(database_url=database_url, data_dir=data_dir).revisions
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


@dataclass(frozen=True)
class CurrentState:
    """Where a database stands."""

    database: str
    revisions: tuple[str, ...]
    head: str | None
    up_to_date: bool
    pending: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database, "revisions": list(self.revisions), "head": self.head,
            "up_to_date": self.up_to_date, "pending": list(self.pending),
        }


@contextmanager
def _connected(database_url: str | None, data_dir: str | Path | None) -> Iterator[tuple[sa.Connection, Target]]:
    settings = _settings(database_url, data_dir)
    target = resolve(settings.database_url, settings.data_dir)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            yield connection, target
    finally:
        engine.dispose()


def _pending(script: ScriptDirectory, revisions: tuple[str, ...]) -> tuple[str, ...]:
    head = script.get_current_head()
    if head is None:
        return ()
    lower = revisions[0] if revisions else "base"
    try:
        steps = list(script.iterate_revisions(head, lower))
    except (ResolutionError, CommandError):
        return ()
    return tuple(reversed([s.revision for s in steps if s.revision not in revisions]))


def current(*, database_url: str | None = None, data_dir: str | Path | None = None) -> CurrentState:
    """The revision the database is at, and what is pending."""
    script = _script(make_config())
    with _connected(database_url, data_dir) as (connection, target):
        revisions = current_heads(connection)
    head = script.get_current_head()
    return CurrentState(
        database=target.redacted(),
        revisions=revisions,
        head=head,
        up_to_date=revisions == ((head,) if head else ()),
        pending=_pending(script, revisions),
    )


def heads() -> list[dict[str, Any]]:
    """The head revisions of the migration history (one, in a healthy project)."""
    script = _script(make_config())
    return [
        {"revision": s.revision, "description": (s.doc or "").strip().splitlines()[0] if s.doc else "",
         "path": s.path}
        for s in script.get_revisions("heads")
        if s is not None
    ]


def history(
    *, database_url: str | None = None, data_dir: str | Path | None = None, limit: int | None = 50
) -> list[dict[str, Any]]:
    """The run history (newest first): one row per migration applied or rolled back, failures included."""
    with _connected(database_url, data_dir) as (connection, _target):
        return _history.read_runs(connection, limit)


@dataclass(frozen=True)
class MigrationInfo:
    """One migration file, and whether (and when, by whom) it is applied to a database."""

    revision: str
    name: str
    description: str
    state: str
    checksum: str
    path: str
    applied_at: datetime | None = None
    applied_by: str | None = None
    db_user: str | None = None
    #: The file's checksum differs from the one recorded when it was applied (see :func:`validate`).
    changed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_migrations(
    *, database_url: str | None = None, data_dir: str | Path | None = None
) -> list[MigrationInfo]:
    """Every migration in ``versions/``, oldest first: applied or pending, checksum, when and by whom applied.

    *Applied* means in the lineage of the database's current revision; the
    when/who comes from the last successful upgrade (or repair) row of the run
    history, so a revision stamped or applied with offline SQL shows as
    applied with no time.
    """
    script = _script(make_config())
    with _connected(database_url, data_dir) as (connection, _target):
        heads_now = current_heads(connection)
        recorded = _history.applied_migrations(connection)
    applied: set[str] = set()
    for head in heads_now:
        try:
            applied.update(s.revision for s in script.iterate_revisions(head, "base"))
        except (ResolutionError, CommandError):
            applied.add(head)
    result = []
    for found in reversed(list(script.walk_revisions())):
        checksum = _history.file_checksum(found.path)
        is_applied = found.revision in applied
        record = recorded.get(found.revision) if is_applied else None
        result.append(
            MigrationInfo(
                revision=found.revision, name=Path(found.path).stem,
                description=(found.doc or "").strip().splitlines()[0].strip() if (found.doc or "").strip() else "",
                state="applied" if is_applied else "pending", checksum=checksum, path=found.path,
                applied_at=record.applied_at if record else None,
                applied_by=record.os_user if record else None,
                db_user=record.db_user if record else None,
                changed=bool(record and record.checksum and record.checksum != checksum),
            )
        )
    return result


def check(*, squawk: bool = True) -> CheckReport:
    """Governance checks over the migration files (no database); see :mod:`agentdb.governance`.

    Returns the report (violations, allowed squawk exceptions, skipped checks);
    never raises for a violation.
    """
    from agentdb import governance

    return governance.check(squawk=squawk)


def validate(*, database_url: str | None = None, data_dir: str | Path | None = None) -> list[ValidationIssue]:
    """Compare every applied migration with its file; see :mod:`agentdb.runtime.validation`."""
    script = _script(make_config())
    with _connected(database_url, data_dir) as (connection, _target):
        return validate_database(connection, script)


def repair(*, database_url: str | None = None, data_dir: str | Path | None = None) -> list[str]:
    """Accept the current files of applied migrations: record their checksums as ``repair`` rows.

    For an intended, harmless edit of an applied migration (a comment, a
    docstring).  Each accepted revision leaves an audit row in the run history.
    Returns the revisions whose checksum was recorded anew.
    """
    import uuid
    from datetime import UTC, datetime

    script = _script(make_config())
    repaired: list[str] = []
    with _connected(database_url, data_dir) as (connection, _target):
        _history.bootstrap(connection)
        issues = validate_database(connection, script)
        missing = [i.message for i in issues if i.kind == "missing"]
        if missing:
            raise ChecksumMismatch(missing)
        run_id = uuid.uuid4()
        for issue in issues:
            found = script.get_revision(issue.revision)
            assert found is not None
            now = datetime.now(UTC)
            _history.record_run(
                connection,
                _history.RunRecord(
                    run_id=run_id, revision=issue.revision, direction="repair", started_at=now, finished_at=now,
                    success=True, filename=Path(found.path).name,
                    description=f"checksum accepted: {issue.kind}", checksum=_history.file_checksum(found.path),
                ),
            )
            repaired.append(issue.revision)
        connection.commit()
    return repaired


def sql(revision_range: str, *, lock_timeout: float | None = None, statement_timeout: float | None = None) -> str:
    """Offline SQL for ``FROM:TO`` (or ``TO`` from base), upgrade or downgrade as the order implies."""
    frm, sep, to = revision_range.partition(":")
    if not sep:
        frm, to = "base", revision_range
    frm, to = frm or "base", to or "head"
    buffer = io.StringIO()
    settings = RunSettings().merged(lock_timeout=lock_timeout, statement_timeout=statement_timeout)
    config = make_config(settings, output_buffer=buffer)
    script = _script(config)
    _check_revision(script, f"{frm}:{to}")
    with _alembic_errors():
        if _is_upgrade(script, frm, to):
            alembic_command.upgrade(config, f"{frm}:{to}", sql=True)
        else:
            alembic_command.downgrade(config, f"{frm}:{to}", sql=True)
    return buffer.getvalue()


def _is_upgrade(script: ScriptDirectory, frm: str, to: str) -> bool:
    if frm == "base":
        return True
    if to == "base":
        return False
    try:
        list(script.iterate_revisions(to, frm))
    except (RevisionError, CommandError):  # RangeNotAncestorError: TO is below FROM
        return False
    return True


def new_migration(message: str, *, autogenerate: bool = False, database_url: str | None = None) -> Path:
    """Write ``versions/NNN_slug.py`` with the next sequential revision id and return its path."""
    if not message.strip():
        raise AgentdbError("a migration needs a message", hint='agentdb new "add playlists table"')
    config = make_config(_settings(database_url, None))
    script = _script(config)
    numbers = [int(s.revision) for s in script.walk_revisions() if s.revision.isdigit()]
    rev_id = f"{(max(numbers) if numbers else 0) + 1:03d}"
    with _alembic_errors():
        created = alembic_command.revision(config, message=message, rev_id=rev_id, autogenerate=autogenerate)
    scripts = created if isinstance(created, list) else [created]
    first = scripts[0]
    if first is None:
        raise AgentdbError("alembic did not write a migration")
    return Path(first.path)
