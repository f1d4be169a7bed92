"""Alembic configuration for agentdb's migrations, built in code (no ini file needed).

Everything that runs or reads the migration scripts (the migration commands,
governance, the demo loader, offline SQL) gets its :class:`~alembic.config.Config`
and :class:`~alembic.script.ScriptDirectory` here, so this layer sits below every
capability and none of them has to import another to find the migrations.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError

from agentdb.errors import AgentdbError, RevisionOutOfRange, UnknownRevision
from agentdb.runtime.settings import RunSettings

__all__ = [
    "OUT_OF_RANGE", "SCRIPT_LOCATION", "alembic_errors", "check_revision", "make_config", "out_of_range",
    "script_directory",
]

#: Where the migrations live; ``AGENTDB_SCRIPT_LOCATION`` overrides it (tests use this).
SCRIPT_LOCATION = "agentdb:migrations"
#: Alembic's messages for a target the database cannot reach from where it is.
OUT_OF_RANGE = re.compile(r"Relative revision \S+ didn't produce|is not a valid (?:up|down)grade target")
_SPECIAL = re.compile(r"^(head|heads|base|[+-]\d+|\w+@[+-]?\w+)$")


def make_config(settings: RunSettings | None = None, *, output_buffer: Any = None) -> Config:
    """An Alembic :class:`Config` for agentdb's migrations, without any ini file."""
    config = Config(output_buffer=output_buffer, stdout=io.StringIO())
    config.set_main_option("script_location", os.environ.get("AGENTDB_SCRIPT_LOCATION", SCRIPT_LOCATION))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.set_main_option("truncate_slug_length", "40")
    config.attributes["agentdb"] = settings or RunSettings()
    return config


def script_directory(config: Config | None = None) -> ScriptDirectory:
    """The migration scripts (``versions/``) of ``config``, default :func:`make_config`."""
    return ScriptDirectory.from_config(config or make_config())


def check_revision(script: ScriptDirectory, revision: str) -> None:
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
def alembic_errors() -> Iterator[None]:
    """Turn Alembic's CommandError into one-line agentdb errors."""
    try:
        yield
    except CommandError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else "alembic command failed"
        raise AgentdbError(text) from exc


def out_of_range(direction: str, revision: str, at: tuple[str, ...], alembic_message: str) -> RevisionOutOfRange:
    """Alembic's "Relative revision ... didn't produce" / "not a valid ... target", in agentdb's words."""
    reason = alembic_message.strip().splitlines()[0].rstrip(".") if alembic_message.strip() else ""
    if reason.startswith("Relative revision"):
        reason = f"there are not that many migrations to {direction} from there"
    elif "not a valid" in reason:
        reason = f"that revision is not {'below' if direction == 'downgrade' else 'above'} the current one"
    return RevisionOutOfRange(revision, direction, at, reason)
