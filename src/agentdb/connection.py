"""Which database agentdb talks to, decided in one place.

Resolution order, first match wins:

1. an explicit URL (``--database-url`` on the CLI, ``database_url=`` in Python,
   ``-x database_url=...`` for plain ``alembic``);
2. the ``DATABASE_URL`` environment variable;
3. the embedded PostgreSQL server (the ``pgserver`` package) in the data
   directory: ``--data-dir``, else ``AGENTDB_DATA_DIR``, else ``.agentdb/``
   under the current directory.  It is started on demand and left running for
   the next invocation (``agentdb embedded stop`` stops it).

Passwords never leave this module in clear: :meth:`Target.redacted` is the
only form used in output, logs and errors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import NullPool

from agentdb.errors import ConnectionFailed, InvalidDatabaseURL

__all__ = [
    "APPLICATION_NAME",
    "Target",
    "connect",
    "create_engine",
    "parse_url",
    "redact",
    "resolve",
]

APPLICATION_NAME = "agentdb"

_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2", "postgresql+psycopg3"}
_PASSWORD_IN_NETLOC = re.compile(r"(?P<head>^[a-zA-Z0-9+.-]+://[^/:@]*:)(?P<pw>[^@/]*)(?P<tail>@)")

Source = Literal["option", "environment", "embedded"]


def redact(raw: str) -> str:
    """Return ``raw`` with any password in it replaced by ``***``."""
    text = _PASSWORD_IN_NETLOC.sub(r"\g<head>***\g<tail>", raw)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", text)


def parse_url(raw: str) -> URL:
    """Parse a PostgreSQL URL into a SQLAlchemy URL that uses psycopg 3.

    Raises :class:`InvalidDatabaseURL` naming what is wrong.
    """
    raw = raw.strip()
    if not raw:
        raise InvalidDatabaseURL("", "it is empty")
    if "://" not in raw:
        # Not shown: without a scheme there is no telling which part is a password.
        raise InvalidDatabaseURL("", "it has no scheme (postgresql://)")
    try:
        url = sa.make_url(raw)
    except (ArgumentError, ValueError) as exc:
        raise InvalidDatabaseURL(redact(raw), str(exc).split("\n")[0]) from None
    if url.drivername not in _SCHEMES:
        raise InvalidDatabaseURL(redact(raw), f"scheme {url.drivername!r} is not PostgreSQL")
    try:
        port = url.port
    except ValueError:
        raise InvalidDatabaseURL(redact(raw), "the port is not a number") from None
    if port is not None and not 0 < port < 65536:
        raise InvalidDatabaseURL(redact(raw), f"port {port} is out of range")
    if url.password == "":
        url = url.set(password=None)
    return url.set(drivername="postgresql+psycopg")


@dataclass(frozen=True)
class Target:
    """A resolved database: where it is and how it was chosen."""

    url: URL
    source: Source
    data_dir: Path | None = None

    def redacted(self) -> str:
        """The URL as it may be shown to a person: password hidden, libpq scheme."""
        return unquote(self.url.set(drivername="postgresql").render_as_string(hide_password=True))

    def conninfo(self) -> str:
        """A libpq connection string for psycopg and the PostgreSQL command-line tools."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    @property
    def database(self) -> str:
        return self.url.database or ""


def resolve(database_url: str | None = None, data_dir: str | Path | None = None) -> Target:
    """Decide which database to use (see the module docstring for the order)."""
    if database_url:
        return Target(parse_url(database_url), "option")
    env_url = os.environ.get("DATABASE_URL")
    if env_url:
        return Target(parse_url(env_url), "environment")
    from agentdb import embedded

    directory = embedded.resolve_data_dir(data_dir)
    return Target(parse_url(embedded.ensure_running(directory)), "embedded", directory)


def create_engine(target: Target) -> Engine:
    """An engine with no pool: each agentdb command holds one connection for its run."""
    return sa.create_engine(
        target.url,
        poolclass=NullPool,
        connect_args={"application_name": APPLICATION_NAME, "connect_timeout": 10},
    )


def connect(engine: Engine, target: Target) -> sa.Connection:
    """Open a connection, turning a failure into :class:`ConnectionFailed`."""
    try:
        return engine.connect()
    except DBAPIError as exc:
        raise ConnectionFailed(target.redacted(), _first_line(exc.orig)) from None


def _first_line(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else "unknown error"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else text
    # psycopg: 'connection failed: connection to server at "h", port 1 failed: Connection refused'
    first = re.sub(r"^connection failed:\s*", "", first)
    return redact(first)
