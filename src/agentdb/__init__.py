"""agentdb: PostgreSQL schema, migrations and data operations of the Spotify AI Agent.

The public API is what ``__all__`` lists; everything else may move.  Each
capability is one package with its own ``__all__`` (``agentdb.migrate``,
``agentdb.demo``, ``agentdb.governance``...), and this facade re-exports them.
A name is imported when it is first used (PEP 562), so ``agentdb health``
does not pay for loading the bulk loader, and a Ctrl-C while the command line
starts is seldom caught half-way through an import.  A new capability adds its
package to ``_PACKAGES`` (and to the ``TYPE_CHECKING`` star imports);
``tests/test_facade.py`` checks that ``__all__`` is the union of the packages'.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from agentdb import bulk, demo, governance, health, migrate, online, partitions, privacy  # noqa: F401
    from agentdb.bulk import *  # noqa: F403
    from agentdb.connection import Target, resolve  # noqa: F401
    from agentdb.demo import *  # noqa: F403
    from agentdb.errors import AgentdbError, BulkChangeRefused  # noqa: F401
    from agentdb.governance import *  # noqa: F403
    from agentdb.guards import guarded  # noqa: F401
    from agentdb.health import *  # noqa: F403
    from agentdb.migrate import *  # noqa: F403
    from agentdb.partitions import list_partitions, maintain_partitions  # noqa: F401
    from agentdb.privacy import *  # noqa: F403
    from agentdb.schema.personal_data import registry as personal_data_registry  # noqa: F401

#: Packages whose whole ``__all__`` the facade re-exports.
_PACKAGES = ("migrate", "demo", "governance", "health", "bulk", "privacy")

#: Other public names: name -> (module, attribute); attribute None is the module itself.
_SINGLES: dict[str, tuple[str, str | None]] = {
    "AgentdbError": ("agentdb.errors", "AgentdbError"),
    "BulkChangeRefused": ("agentdb.errors", "BulkChangeRefused"),
    "Target": ("agentdb.connection", "Target"),
    "resolve": ("agentdb.connection", "resolve"),
    "guarded": ("agentdb.guards", "guarded"),
    "list_partitions": ("agentdb.partitions", "list_partitions"),
    "maintain_partitions": ("agentdb.partitions", "maintain_partitions"),
    "personal_data_registry": ("agentdb.schema.personal_data", "registry"),
    **{name: (f"agentdb.{name}", None) for name in (*_PACKAGES, "online", "partitions")},
}

#: Each package's ``__all__``, written out so that ``import agentdb`` imports none of them.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "migrate": (
        "CurrentState", "DryRunReport", "MigrationInfo", "RunReport", "StepResult", "current", "downgrade", "dry_run",
        "heads", "history", "list_migrations", "new_migration", "plan_rollback", "repair", "rollback",
        "rollback_target", "sql", "upgrade", "validate",
    ),
    "demo": (
        "DemoPlan", "DemoReport", "DemoScale", "TableLoad", "plan_demo", "seed_demo",
    ),
    "governance": (
        "CheckReport", "Exemption", "MigrationFile", "Violation", "check",
    ),
    "health": (
        "CHECKS", "HEALTH_DDL", "Check", "CheckResult", "HealthReport", "Param", "Status", "check_health",
        "ensure_health_ledger", "list_checks", "render_html", "render_prometheus", "select_checks",
    ),
    "bulk": (
        "LEDGER_DDL", "ExportProgress", "ExportReport", "ImportProgress", "ImportReport", "RejectedRow",
        "bulk_export", "bulk_import", "ensure_ledger", "pseudonym",
    ),
    "privacy": (
        "ErasureReport", "HoldReport", "PrivacyRequest", "ProofReport", "ReapplyReport", "UserExportReport",
        "erase_user", "erase_users", "export_user", "overdue_privacy_requests", "place_hold", "privacy_requests",
        "reapply_erasures", "release_hold", "request_erasure",
    ),
}

_WHERE: dict[str, tuple[str, str | None]] = {
    **{name: (f"agentdb.{package}", name) for package, names in _EXPORTS.items() for name in names},
    **_SINGLES,
}

__all__ = ["__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'agentdb' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
