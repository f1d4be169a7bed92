"""Alembic environment: every run, from ``alembic`` or ``agentdb``, goes through
:func:`agentdb.runtime.environment.run_env` (run lock, per-migration transactions,
timeouts with lock retries, checksum validation and run history).  Under plain
``alembic`` it also logs one line per migration and turns agentdb's errors into
the one-line ``error: ...`` and exit code of ``agentdb``."""

from alembic import context

from agentdb.runtime.environment import run_env

# alembic installs the EnvironmentContext of this run as context._proxy
run_env(context._proxy)  # type: ignore[attr-defined]
