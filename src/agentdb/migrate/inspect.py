"""Reading where a database stands: current revision, heads, run history, migrations, checksums."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError

from agentdb.errors import ChecksumMismatch
from agentdb.migrate._common import connected as _connected
from agentdb.runtime import history as _history
from agentdb.runtime.config import script_directory
from agentdb.runtime.validation import ValidationIssue, current_heads, validate_database

__all__ = [
    "CurrentState", "MigrationInfo", "current", "heads", "history", "list_migrations", "repair", "validate",
]


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
    script = script_directory()
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
    script = script_directory()
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
    script = script_directory()
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


def validate(*, database_url: str | None = None, data_dir: str | Path | None = None) -> list[ValidationIssue]:
    """Compare every applied migration with its file; see :mod:`agentdb.runtime.validation`."""
    script = script_directory()
    with _connected(database_url, data_dir) as (connection, _target):
        return validate_database(connection, script)


def repair(*, database_url: str | None = None, data_dir: str | Path | None = None) -> list[str]:
    """Accept the current files of applied migrations: record their checksums as ``repair`` rows.

    For an intended, harmless edit of an applied migration (a comment, a
    docstring).  Each accepted revision leaves an audit row in the run history.
    Returns the revisions whose checksum was recorded anew.
    """
    script = script_directory()
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
