"""Writing migrations and their SQL: ``agentdb new`` and ``agentdb sql``."""

from __future__ import annotations

from pathlib import Path

from alembic import command as alembic_command

from agentdb.errors import AgentdbError
from agentdb.migrate._common import settings_from as _settings
from agentdb.runtime.config import alembic_errors, make_config, script_directory
from agentdb.runtime.offline import offline_sql
from agentdb.runtime.settings import RunSettings

__all__ = ["new_migration", "sql"]


def sql(revision_range: str, *, lock_timeout: float | None = None, statement_timeout: float | None = None,
        database_url: str | None = None) -> str:
    """Offline SQL for ``FROM:TO`` (or ``TO`` from base), upgrade or downgrade as the order implies.

    Nothing runs on a database.  With ``database_url``, an online change in a
    migration (007's partitioning) is designed on that database -- its catalogue
    is read -- so that its phases' SQL can be shown; without, the output says how
    to get it.
    """
    settings = RunSettings().merged(lock_timeout=lock_timeout, statement_timeout=statement_timeout,
                                    database_url=database_url)
    return offline_sql(revision_range, settings)


def new_migration(message: str, *, autogenerate: bool = False, database_url: str | None = None) -> Path:
    """Write ``versions/NNN_slug.py`` with the next sequential revision id and return its path."""
    if not message.strip():
        raise AgentdbError("a migration needs a message", hint='agentdb new "add playlists table"')
    config = make_config(_settings(database_url, None))
    script = script_directory(config)
    numbers = [int(s.revision) for s in script.walk_revisions() if s.revision.isdigit()]
    rev_id = f"{(max(numbers) if numbers else 0) + 1:03d}"
    with alembic_errors():
        created = alembic_command.revision(config, message=message, rev_id=rev_id, autogenerate=autogenerate)
    scripts = created if isinstance(created, list) else [created]
    first = scripts[0]
    if first is None:
        raise AgentdbError("alembic did not write a migration")
    return Path(first.path)
