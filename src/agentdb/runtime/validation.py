"""Checksum validation of applied migrations (what Flyway calls ``validate``).

Each applied migration's file is hashed and compared with the sha256 recorded
in the run history when it was applied.  A changed file means the database
was built by code that no longer exists; a missing file means nobody can
rebuild or roll back that step.  Both are fatal for ``upgrade`` unless the
user explicitly ignores them.  A revision that is applied but has no history
row (stamped, or applied with offline SQL) is reported but not fatal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError

from agentdb.errors import ChecksumMismatch
from agentdb.runtime.history import INTERNAL_SCHEMA, VERSION_TABLE, applied_migrations, file_checksum

__all__ = ["ValidationIssue", "current_heads", "require_valid", "validate_database"]

IssueKind = Literal["changed", "missing", "unrecorded"]


@dataclass(frozen=True)
class ValidationIssue:
    """One finding of :func:`validate_database`."""

    revision: str
    kind: IssueKind
    message: str

    @property
    def fatal(self) -> bool:
        return self.kind != "unrecorded"


def current_heads(connection: sa.Connection) -> tuple[str, ...]:
    """The revisions recorded in ``agentdb.alembic_version`` (empty for a new database)."""
    context = MigrationContext.configure(
        connection, opts={"version_table_schema": INTERNAL_SCHEMA, "version_table": VERSION_TABLE}
    )
    return context.get_current_heads()


def _script_or_none(script: ScriptDirectory, revision: str) -> object | None:
    try:
        return script.get_revision(revision)
    except (ResolutionError, CommandError, KeyError):
        return None


def validate_database(connection: sa.Connection, script: ScriptDirectory) -> list[ValidationIssue]:
    """Compare every applied migration with its file; return the findings (empty when all is well)."""
    heads = current_heads(connection)
    applied = applied_migrations(connection)
    issues: list[ValidationIssue] = []
    missing: set[str] = set()
    for revision in sorted({*heads, *applied}):
        if _script_or_none(script, revision) is None:
            missing.add(revision)
            issues.append(ValidationIssue(revision, "missing", f"{revision} is applied but its file is gone"))
    lineage: list[str] = []
    for head in heads:
        if head in missing:
            continue
        try:
            lineage.extend(sc.revision for sc in script.iterate_revisions(head, "base"))
        except (ResolutionError, CommandError) as exc:
            issues.append(ValidationIssue(head, "missing", f"history of {head} is broken: {exc}"))
    for revision in sorted(set(lineage)):
        found = script.get_revision(revision)
        assert found is not None
        record = applied.get(revision)
        if record is None or record.checksum is None:
            message = f"{revision} is applied but has no recorded checksum"
            issues.append(ValidationIssue(revision, "unrecorded", message))
            continue
        now = file_checksum(found.path)
        if now != record.checksum:
            issues.append(
                ValidationIssue(
                    revision,
                    "changed",
                    f"{revision} changed since it was applied (sha256 {record.checksum[:12]} then, {now[:12]} now)",
                )
            )
    return issues


def require_valid(connection: sa.Connection, script: ScriptDirectory) -> list[str]:
    """Validate before an upgrade: raise :class:`ChecksumMismatch` on a fatal finding, return the warnings."""
    issues = validate_database(connection, script)
    fatal = [issue.message for issue in issues if issue.fatal]
    if fatal:
        raise ChecksumMismatch(fatal)
    return [issue.message for issue in issues]
