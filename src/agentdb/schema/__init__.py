"""The application schema, declared once as SQLAlchemy Core tables.

Migrations are written by hand (they describe *changes*), and the test suite
proves that ``alembic upgrade head`` produces exactly these tables: Alembic's
autogenerate comparison must find no difference.  Later capabilities (the
personal-data registry, analyst grants, erasure, export) read this
declaration instead of repeating it.
"""

from agentdb.schema._base import metadata
from agentdb.schema.core import artists, users

__all__ = ["artists", "metadata", "users"]
