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
    plan_rollback,
    repair,
    rollback,
    sql,
    upgrade,
    validate,
)
from agentdb.connection import Target, resolve
from agentdb.demo import DemoReport, DemoScale, seed_demo
from agentdb.errors import AgentdbError, BulkChangeRefused
from agentdb.guards import guarded
from agentdb.schema.personal_data import registry as personal_data_registry

__all__ = [
    "AgentdbError",
    "BulkChangeRefused",
    "DemoReport",
    "DemoScale",
    "MigrationInfo",
    "Target",
    "__version__",
    "check",
    "current",
    "downgrade",
    "dry_run",
    "guarded",
    "heads",
    "history",
    "list_migrations",
    "new_migration",
    "personal_data_registry",
    "plan_rollback",
    "repair",
    "resolve",
    "rollback",
    "seed_demo",
    "sql",
    "upgrade",
    "validate",
]
