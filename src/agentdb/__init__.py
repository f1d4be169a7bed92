"""agentdb: PostgreSQL schema, migrations and data operations of the Spotify AI Agent.

The public API is what ``__all__`` lists; everything else may move.  Each
capability is one package with its own ``__all__`` (``agentdb.migrate``,
``agentdb.demo``, ``agentdb.governance``...), and this facade re-exports them:
a new capability adds its star import and its ``__all__`` line below.
"""

from __future__ import annotations

__version__ = "0.1.0"

from agentdb import bulk, demo, governance, health, migrate, online, partitions, privacy
from agentdb.bulk import *  # noqa: F403
from agentdb.connection import Target, resolve
from agentdb.demo import *  # noqa: F403
from agentdb.errors import AgentdbError, BulkChangeRefused
from agentdb.governance import *  # noqa: F403
from agentdb.guards import guarded
from agentdb.health import *  # noqa: F403
from agentdb.migrate import *  # noqa: F403
from agentdb.partitions import list_partitions, maintain_partitions
from agentdb.privacy import *  # noqa: F403
from agentdb.schema.personal_data import registry as personal_data_registry

__all__ = [
    "AgentdbError",
    "BulkChangeRefused",
    "Target",
    "__version__",
    "bulk",
    "guarded",
    "list_partitions",
    "maintain_partitions",
    "online",
    "partitions",
    "personal_data_registry",
    "privacy",
    "resolve",
]
__all__ += migrate.__all__
__all__ += demo.__all__
__all__ += governance.__all__
__all__ += health.__all__
__all__ += bulk.__all__
__all__ += privacy.__all__
