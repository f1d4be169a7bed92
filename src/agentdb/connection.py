"""Which database agentdb talks to, decided in one place.

Resolution order, first match wins:

1. an explicit URL (``--database-url`` on the CLI, ``database_url=`` in Python,
   ``-x database_url=...`` for plain ``alembic``);
2. the ``DATABASE_URL`` environment variable;
3. the embedded PostgreSQL server (the ``pgserver`` package) in the data
   directory: ``--data-dir``, else ``AGENTDB_DATA_DIR``, else ``.agentdb/``
   under the current directory.  It is started on demand and left running for
   the next invocation (``agentdb embedded stop`` stops it).

Passwords never leave this module in clear: :func:`redact_url` (and
:meth:`Target.redacted`) is the one form a URL is shown in, in output, logs,
reports and errors.  It is rebuilt from the parsed parts, never edited from the
text, and :func:`parse_url` refuses a URL that can be read more than one way
(an unencoded ``@`` or ``/`` in a password) without quoting any of it: a wrong
reading is exactly how a piece of a password ends up shown as a host or port.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, quote_plus, unquote

import sqlalchemy as sa
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from agentdb.errors import ConnectionFailed, InvalidDatabaseURL

__all__ = [
    "APPLICATION_NAME",
    "Target",
    "connect",
    "connection_failed",
    "conninfo",
    "create_engine",
    "parse_url",
    "redact",
    "redact_url",
    "resolve",
]

APPLICATION_NAME = "agentdb"

_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2", "postgresql+psycopg3"}
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
#: Query-string parameters whose values are secrets: shown as ``***`` like the password.
_SECRET_KEYS = frozenset({"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"})
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PASSWORD_IN_NETLOC = re.compile(r"(?P<head>[a-zA-Z0-9+.-]+://[^\s/@]*?:)(?P<pw>\S*)(?P<tail>@)")
_PASSWORD_IN_TEXT = re.compile(r"(?i)((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")
_AMBIGUOUS = (
    "it can be read more than one way, or its query string is not key=value pairs: percent-encode "
    "'@', '/', '?' and '&' in the user name, password and values (%40, %2F, %3F, %26)"
)

Source = Literal["option", "environment", "embedded"]


def redact(raw: str) -> str:
    """Best effort for free text (a driver's message): hide what looks like a password.

    URLs themselves are never redacted with this: they are parsed by
    :func:`parse_url` and shown by :func:`redact_url`, which rebuilds them from
    their parts and so cannot let a piece of a password through.
    """
    text = _PASSWORD_IN_NETLOC.sub(r"\g<head>***\g<tail>", raw)
    return _PASSWORD_IN_TEXT.sub(r"\1***", text)


@functools.cache
def _libpq_keywords() -> frozenset[str]:
    """The connection parameters the installed libpq knows (what it would accept in the query string)."""
    from psycopg import pq

    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def _query_pieces(query: str) -> list[tuple[str, str]] | None:
    """``key=value`` pairs of a query string, or None when it is not made of them."""
    pieces = []
    for piece in query.split("&"):
        key, equals, value = piece.partition("=")
        if not equals or not _KEY.match(key):
            return None
        pieces.append((key, value))
    return pieces


def _split(rest: str) -> tuple[str, str | None]:
    """Split what follows ``scheme://`` into (authority and path, query string).

    A password may hold an unencoded ``?`` (libpq allows it), so the query string
    does not simply start at the first ``?``: the first split whose query is made
    of ``key=value`` pairs and whose authority is unambiguous wins, else none.
    Anything that could be read two ways is refused (:data:`_AMBIGUOUS`).
    """
    candidates = [i for i, char in enumerate(rest) if char == "?"] + [len(rest)]
    for index in candidates:
        head, query = rest[:index], (rest[index + 1:] if index < len(rest) else None)
        if head.count("@") > 1:
            continue
        if "@" in head:
            at = head.index("@")
            if "/" in head[:at] or "?" in head[at:]:
                continue
        elif "?" in head or (query is not None and "@" in query):
            # An '@' after a '?' with none before it: the '?' may be in a password.
            continue
        if query is not None and _query_pieces(query) is None:
            continue
        return head, query
    if rest.count("@") > 1:
        raise InvalidDatabaseURL("", "it has more than one '@'; write an '@' in the user name or password as %40")
    raise InvalidDatabaseURL("", _AMBIGUOUS)


def _unquote(text: str) -> str:
    if _BAD_ESCAPE.search(text):
        raise InvalidDatabaseURL("", "a '%' is not followed by two hex digits; write a '%' itself as %25")
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        pass  # raised below, outside the handler: no chained exception to carry the text into a traceback
    raise InvalidDatabaseURL("", "a percent-escape does not decode as UTF-8")


def _host_port(hostspec: str) -> tuple[str | None, int | None]:
    if hostspec.startswith("["):
        close = hostspec.find("]")
        if close < 0:
            raise InvalidDatabaseURL("", "invalid host: a '[' (IPv6 address) is not closed by ']'")
        host, after = hostspec[1:close], hostspec[close + 1:]
        if after and not after.startswith(":"):
            raise InvalidDatabaseURL("", "invalid host: only ':port' may follow an IPv6 address in brackets")
        port_text = after[1:] if after else None
    else:
        if "[" in hostspec or "]" in hostspec:
            raise InvalidDatabaseURL("", "invalid host: brackets are only for an IPv6 address, as [::1]:5432")
        host, colon, port_text = hostspec.partition(":")
        port_text = port_text if colon else None
    port = None
    if port_text is not None:
        # The value is not named: a URL that lost its '@' has the password here.
        if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InvalidDatabaseURL("", "invalid port: it must be a number from 1 to 65535")
        port = int(port_text)
    return (_unquote(host) or None), port


def parse_url(raw: str) -> URL:
    """Parse a PostgreSQL URL into a SQLAlchemy URL that uses psycopg 3.

    Stricter than libpq and SQLAlchemy on purpose: a URL that could be read
    two ways (an unencoded ``@`` or ``/`` in a password) is refused rather than
    guessed, since a wrong guess shows part of the password as a host or port.
    Raises :class:`InvalidDatabaseURL` naming what is wrong, never quoting the
    URL: in a malformed URL there is no telling which part is the password.
    """
    raw = raw.strip()
    if not raw:
        raise InvalidDatabaseURL("", "it is empty")
    if any(ord(char) < 32 or ord(char) == 127 for char in raw):
        raise InvalidDatabaseURL("", "it contains a control character (a line break?)")
    match = _SCHEME.match(raw)
    if match is None:
        raise InvalidDatabaseURL("", "it has no scheme (postgresql://)")
    scheme = match.group("scheme").lower()
    if scheme not in _SCHEMES:
        raise InvalidDatabaseURL("", f"scheme {scheme!r} is not PostgreSQL")
    rest = raw[match.end():]
    if "#" in rest:
        raise InvalidDatabaseURL("", "it contains an unencoded '#'; write it as %23")
    head, query_text = _split(rest)
    userinfo, at, hostpath = head.rpartition("@")
    if not at:
        userinfo, hostpath = "", head
    hostspec, slash, path = hostpath.partition("/")
    username, password = None, None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = _unquote(user_text)
        password = _unquote(password_text) if colon and password_text else None
    host, port = _host_port(hostspec)
    database = _unquote(path) if slash and path else None
    query: dict[str, str | tuple[str, ...]] = {}
    after_secret = False
    pieces = _query_pieces(query_text) if query_text is not None else None
    for key, value in pieces or []:
        if key not in _libpq_keywords():
            # Named only when it cannot be the tail of a secret value cut at an unencoded '&'.
            shown = "" if after_secret else f" {key!r}"
            raise InvalidDatabaseURL("", f"unknown connection parameter{shown} in the query string")
        after_secret = key in _SECRET_KEYS
        decoded = _unquote(value)
        previous = query.get(key)
        if previous is None:
            query[key] = decoded
        else:
            query[key] = (*((previous,) if isinstance(previous, str) else previous), decoded)
    given = query.pop("password", None)
    if given is not None:
        # libpq lets the query string's password win; as the URL's password, every renderer hides it.
        password = given if isinstance(given, str) else given[-1]
    return URL.create(
        "postgresql+psycopg", username=username, password=password or None, host=host, port=port,
        database=database, query=query,
    )


def redact_url(url: URL) -> str:
    """The one form in which a URL is shown: libpq scheme, nothing percent-escaped, secrets as ``***``.

    Rebuilt from the URL's parts (never by editing the text), so no piece of a
    password can come through, whatever it contains.
    """
    text = "postgresql://"
    if url.username is not None or url.password is not None:
        text += (url.username or "") + (":***" if url.password else "") + "@"
    if url.host:
        text += f"[{url.host}]" if ":" in url.host else url.host
    if url.port is not None:
        text += f":{url.port}"
    if url.database or url.query:
        text += "/" + (url.database or "")
    params = []
    for key, value in url.query.items():
        for item in (value,) if isinstance(value, str) else value:
            params.append(f"{key}={'***' if key in _SECRET_KEYS else item}")
    return text + ("?" + "&".join(params) if params else "")


def conninfo(url: URL) -> str:
    """A libpq ``key=value`` connection string for ``url``, every value quoted as libpq wants it.

    Not the URL rendered back to text: libpq refuses an unencoded space in a URL
    with a message that quotes the password (``unexpected spaces found in "..."``).
    """
    params: dict[str, Any] = {
        "host": url.host, "port": url.port, "dbname": url.database, "user": url.username, "password": url.password,
    }
    for key, value in url.query.items():
        params[key] = value if isinstance(value, str) else ",".join(value)
    return make_conninfo("", **{key: value for key, value in params.items() if value is not None})


@dataclass(frozen=True)
class Target:
    """A resolved database: where it is and how it was chosen."""

    url: URL
    source: Source
    data_dir: Path | None = None

    def redacted(self) -> str:
        """The URL as it may be shown to a person (see :func:`redact_url`)."""
        return redact_url(self.url)

    def conninfo(self) -> str:
        """A libpq connection string for psycopg and the PostgreSQL command-line tools (see :func:`conninfo`)."""
        return conninfo(self.url)

    def scrub(self, text: str) -> str:
        """``text`` (a driver's message) with this target's secrets, in any encoding, replaced by ``***``."""
        secrets = [self.url.password or ""]
        for key in _SECRET_KEYS:
            value = self.url.query.get(key)
            secrets.extend((value,) if isinstance(value, str) else value or ())
        for secret in sorted((s for s in secrets if s), key=len, reverse=True):
            for form in {secret, quote(secret, safe=""), quote_plus(secret, safe=""), make_conninfo(password=secret)}:
                if len(form) >= 4:
                    text = text.replace(form, "***")
                else:  # a very short one only where it stands alone, or every "a" of the message would go
                    text = re.sub(rf"(?<![\w]){re.escape(form)}(?![\w])", "***", text)
        return redact(text)

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
        raise connection_failed(target, exc.orig) from None


def connection_failed(target: Target, exc: BaseException | None) -> ConnectionFailed:
    """The one-line error for a failed connection: first line of the driver's message, secrets scrubbed."""
    text = str(exc) if exc is not None else "unknown error"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else "unknown error"
    # psycopg: 'connection failed: connection to server at "h", port 1 failed: Connection refused'
    first = re.sub(r"^connection failed:\s*", "", first)
    return ConnectionFailed(target.redacted(), target.scrub(first))
