"""Offline SQL: what a range of migrations would run, rendered without touching a database.

Used by ``agentdb sql`` and by governance (squawk lints this SQL); it lives
below both so neither has to import the other.
"""

from __future__ import annotations

import io

from alembic import command as alembic_command
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError

from agentdb.runtime.config import alembic_errors, check_revision, make_config, script_directory
from agentdb.runtime.settings import RunSettings

__all__ = ["offline_sql"]


def offline_sql(revision_range: str, settings: RunSettings | None = None) -> str:
    """Offline SQL for ``FROM:TO`` (or ``TO`` from base), upgrade or downgrade as the order implies."""
    frm, sep, to = revision_range.partition(":")
    if not sep:
        frm, to = "base", revision_range
    frm, to = frm or "base", to or "head"
    buffer = io.StringIO()
    config = make_config(settings, output_buffer=buffer)
    script = script_directory(config)
    check_revision(script, f"{frm}:{to}")
    with alembic_errors():
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
