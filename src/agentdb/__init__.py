"""agentdb: PostgreSQL schema, migrations and data operations of the Spotify AI Agent.

The public API is what ``__all__`` lists; everything else may move.
"""

from __future__ import annotations

__version__ = "0.1.0"

from agentdb.commands import (
    MigrationInfo,
    check,
    current,
    downgrade,
    dry_run,
    heads,
    history,
    list_migrations,
    new_migration,
    repair,
    sql,
    upgrade,
    validate,
)
from agentdb.connection import Target, resolve
from agentdb.errors import AgentdbError

__all__ = [
    "AgentdbError",
    "MigrationInfo",
    "Target",
    "__version__",
    "check",
    "current",
    "downgrade",
    "dry_run",
    "heads",
    "history",
    "list_migrations",
    "new_migration",
    "repair",
    "resolve",
    "sql",
    "upgrade",
    "validate",
]
