"""The checks, each registered once under a stable id, and what a check gets to work with.

A check is a plain function ``(ctx: Context) -> Finding`` decorated with
:func:`check`, which gives it its id (``group.name``: ``server.connections``,
``schema.orphan_rows``), its title and its thresholds (:class:`Param`, each
overridable as ``<id>.<name>``).  The ids are a public interface: monitoring
alerts, ``--only``/``--skip`` and Prometheus labels use them, so an id never
changes meaning.

A check only reads: it runs inside the run's ``READ ONLY`` transaction, in a
savepoint of its own, under ``statement_timeout`` and ``lock_timeout``
(:mod:`agentdb.health.run`).  It raises :class:`Unknown` when it cannot judge
(a privilege it lacks, statistics too stale to trust), and the run goes on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

import sqlalchemy as sa
from psycopg import sql
from psycopg.rows import tuple_row

from agentdb.health.model import MAX_EVIDENCE, Status

__all__ = [
    "CHECKS",
    "GROUPS",
    "Check",
    "Context",
    "Finding",
    "Param",
    "Unknown",
    "check",
    "count_label",
    "counted",
    "parse_value",
]

#: The groups, in the order a report lists them.
GROUPS = ("server", "schema", "ops", "deep")

Query: TypeAlias = str | sql.Composable


class Unknown(Exception):
    """The check cannot judge; the message says why (``needs SELECT on agentdb.imports``)."""


@dataclass(frozen=True)
class Param:
    """A threshold or setting of a check; ``unit`` says how an override is parsed."""

    default: float
    #: ``seconds``, ``bytes``, ``ratio``, ``count`` or ``xids``.
    unit: str
    help: str = ""


@dataclass
class Finding:
    """What a check function returns; the runner adds id, title, thresholds and timing."""

    status: Status
    message: str
    value: float | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    remediation: str = ""
    lock: str = ""


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    run: Callable[[Context], Finding]
    params: Mapping[str, Param]
    #: The unit of :attr:`Finding.value`.
    unit: str = ""
    #: Deep checks (amcheck) run only with ``deep=True`` or when named in ``only``.
    deep: bool = False

    @property
    def group(self) -> str:
        return self.id.split(".", 1)[0]


CHECKS: dict[str, Check] = {}
_ID = re.compile(r"^(server|schema|ops|deep)\.[a-z][a-z0-9_]*$")


def check(check_id: str, title: str, *, unit: str = "", deep: bool = False,
          **params: Param) -> Callable[[Callable[[Context], Finding]], Callable[[Context], Finding]]:
    """Register a check function under ``check_id``."""
    if not _ID.match(check_id) or check_id in CHECKS:
        raise ValueError(f"bad or duplicate check id {check_id!r}")

    def register(fn: Callable[[Context], Finding]) -> Callable[[Context], Finding]:
        CHECKS[check_id] = Check(check_id, title, fn, params, unit=unit, deep=deep)
        return fn

    return register


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb)?\s*$", re.IGNORECASE)
_SIZES = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def parse_value(text: str | float, unit: str, name: str) -> float:
    """An override in the unit of its parameter: ``5min`` for seconds, ``1GB`` for bytes, ``90%`` for a ratio."""
    from agentdb.errors import HealthOptionInvalid
    from agentdb.runtime.settings import parse_duration

    if isinstance(text, int | float):
        return float(text)
    value = text.strip()
    try:
        if unit == "seconds":
            return parse_duration(value, name)
        if unit == "bytes":
            match = _SIZE.match(value)
            if not match:
                raise ValueError(value)
            return float(match.group(1)) * _SIZES[(match.group(2) or "b").lower()]
        if unit == "ratio" and value.endswith("%"):
            return float(value[:-1]) / 100.0
        return float(value)
    except (ValueError, Exception) as exc:
        if isinstance(exc, HealthOptionInvalid):
            raise
        raise HealthOptionInvalid(f"threshold {name}={text!r} is not a valid {unit} value") from None


class Context:
    """What a check works with: the run's connection (one READ ONLY transaction), its thresholds, a cache.

    Queries run on the DBAPI (psycopg) cursor of the SQLAlchemy connection,
    with bound parameters or :mod:`psycopg.sql` composition, never formatting.
    """

    def __init__(self, connection: sa.Connection, params: Mapping[str, float], *, deep: bool,
                 deep_budget: float) -> None:
        self.connection = connection
        self.params = params
        self.deep = deep
        self.deep_budget = deep_budget
        self.cache: dict[str, Any] = {}
        self.current: Check | None = None
        self.now: datetime = self.value("SELECT now()")
        self.version_num = int(self.value("SELECT current_setting('server_version_num')"))

    # --- parameters --------------------------------------------------------------------------------------------

    def p(self, name: str) -> float:
        """The value of parameter ``name`` of the running check (its default, or the override)."""
        assert self.current is not None
        key = f"{self.current.id}.{name}"
        if key in self.params:
            return self.params[key]
        return self.current.params[name].default

    def grade(self, value: float | None, *, lower_is_worse: bool = False) -> Status:
        """ok, warning or critical for ``value`` against the running check's ``warning``/``critical``."""
        if value is None:
            return Status.OK
        assert self.current is not None
        for level, status in (("critical", Status.CRITICAL), ("warning", Status.WARNING)):
            if level not in self.current.params:
                continue
            limit = self.p(level)
            if (value <= limit) if lower_is_worse else (value >= limit):
                return status
        return Status.OK

    # --- queries -----------------------------------------------------------------------------------------------

    def rows(self, query: Query, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        dbapi = self.connection.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor(row_factory=tuple_row)
        try:
            cursor.execute(query, params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        finally:
            cursor.close()

    def value(self, query: Query, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        found = self.rows(query, params)
        return found[0][0] if found else None

    def _oid(self, relation: str) -> int | None:
        """The oid of ``schema.name`` from the catalogue (``to_regclass`` fails without USAGE on the schema)."""
        schema, _, name = relation.partition(".")
        found = self.value("SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                           "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s", [schema, name])
        return int(found) if found is not None else None

    def exists(self, relation: str) -> bool:
        """Whether ``relation`` (``schema.name``) exists; reading the catalogue needs no privilege on it."""
        return self._oid(relation) is not None

    def require_select(self, *relations: str, columns: Sequence[str] = ()) -> None:
        """Raise :class:`Unknown` naming the first relation this role may not read (schema USAGE included).

        With ``columns``, SELECT on those columns is enough (a column grant to a monitoring role).
        """
        for relation in relations:
            oid = self._oid(relation)
            schema = relation.partition(".")[0]
            if oid is None or not self.value(
                    "SELECT has_schema_privilege(%s, 'USAGE') AND (has_table_privilege(%s::oid, 'SELECT') "
                    "OR (cardinality(%s::text[]) > 0 AND (SELECT bool_and(has_column_privilege(%s::oid, c, "
                    "'SELECT')) FROM unnest(%s::text[]) c)))",
                    [schema, oid, list(columns), oid, list(columns)]):
                needed = f"SELECT ({', '.join(columns)})" if columns else "SELECT"
                raise Unknown(f"needs {needed} on {relation}")

    def ledger(self, relation: str) -> bool:
        """Whether the ledger table of another capability is in use here: False when it does not exist.

        Raises :class:`Unknown` when it exists but this role may not read it.
        """
        if not self.exists(relation):
            return False
        self.require_select(relation)
        return True

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


def bounded(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most :data:`MAX_EVIDENCE` items (the result keeps the total)."""
    return items[:MAX_EVIDENCE]


def counted(ctx: Context, items: list[dict[str, Any]], message: str, *, value: float | None = None,
            remedy: str = "", lock: str = "") -> Finding:
    """The shape most checks share: ``items`` found, graded against the running check's thresholds.

    The graded value is the number of items, or ``value`` (the worst age, ratio...) when given, in which
    case no item means ok; the remedy and its lock are given only when there is an item to act on.
    """
    if value is None:
        measured = float(len(items))
        status = ctx.grade(measured)
    else:
        measured = value
        status = ctx.grade(value) if items else Status.OK
    return Finding(status, message, measured, items, remedy if items else "", lock if items else "")


def count_label(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
