"""What every migration command shares: settings from arguments, a connection, the Alembic call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.util import CommandError

from agentdb.connection import Target, connect, create_engine, resolve
from agentdb.errors import AgentdbError
from agentdb.runtime.config import (
    OUT_OF_RANGE,
    alembic_errors,
    check_revision,
    make_config,
    out_of_range,
    script_directory,
)
from agentdb.runtime.settings import RunSettings
from agentdb.runtime.validation import current_heads


def settings_from(database_url: str | None, data_dir: str | Path | None, **options: Any) -> RunSettings:
    """Run settings from the environment, overridden by the arguments a command was given."""
    base = RunSettings.from_sources({}, {})
    return base.merged(database_url=database_url, data_dir=str(data_dir) if data_dir else None, **options)


@contextmanager
def connected(database_url: str | None, data_dir: str | Path | None) -> Iterator[tuple[sa.Connection, Target]]:
    """A connection to the database the arguments (or the environment) name."""
    settings = settings_from(database_url, data_dir)
    target = resolve(settings.database_url, settings.data_dir)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            yield connection, target
    finally:
        engine.dispose()


@contextmanager
def _moving(direction: str, revision: str, settings: RunSettings) -> Iterator[None]:
    """Like :func:`alembic_errors`, and a target the database cannot reach names where the database is."""
    try:
        with alembic_errors():
            yield
    except AgentdbError as exc:
        cause = exc.__cause__
        if not isinstance(cause, CommandError) or not OUT_OF_RANGE.search(str(cause)):
            raise
        with connected(settings.database_url, settings.data_dir) as (connection, _target):
            at = current_heads(connection)
        raise out_of_range(direction, revision, at, str(cause)) from cause


def migrate(direction: str, revision: str, settings: RunSettings, report_key: str, report: Any,
            progress: Any = None) -> None:
    """Run Alembic's upgrade or downgrade to ``revision`` with ``settings``; ``report`` is filled in by the run.

    ``progress`` receives the progress of the online changes migrations drive (:mod:`agentdb.online.migration`).
    """
    from agentdb.online.migration import HOOKS_KEY, MigrationHooks

    config = make_config(settings)
    check_revision(script_directory(config), revision)
    config.attributes[report_key] = report
    config.attributes[HOOKS_KEY] = MigrationHooks(progress=progress)
    with _moving(direction, revision, settings):
        if direction == "upgrade":
            alembic_command.upgrade(config, revision)
        else:
            alembic_command.downgrade(config, revision)
