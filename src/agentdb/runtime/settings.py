"""Settings of a migration run, read from one of three places.

In order of precedence:

1. ``config.attributes["agentdb"]`` -- a :class:`RunSettings` set by the
   ``agentdb`` commands (and by tests);
2. ``alembic -x key=value`` arguments, for plain ``alembic``;
3. ``AGENTDB_*`` environment variables.

Durations accept ``500ms``, ``5s``, ``2min``, ``1h`` or a bare number of seconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from agentdb.errors import AgentdbError

__all__ = ["RunSettings", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_duration(value: str | float | int, name: str = "duration") -> float:
    """Seconds from ``'5s'``, ``'500ms'``, ``'2min'``, ``'1h'`` or a number."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value.lower())
        if not match or match.group(2) not in {"", *_UNITS}:
            raise AgentdbError(f"invalid {name} {value!r}", hint="use e.g. 500ms, 5s, 2min or 1h")
        seconds = float(match.group(1)) * _UNITS.get(match.group(2) or "s", 1.0)
    if seconds < 0:
        raise AgentdbError(f"invalid {name} {value!r}: it is negative")
    return seconds


def _parse_bool(value: str | bool, name: str) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise AgentdbError(f"invalid {name} {value!r}", hint="use true or false")


@dataclass(frozen=True)
class RunSettings:
    """How a migration run behaves.  Times are in seconds; 0 means no limit."""

    database_url: str | None = None
    data_dir: str | None = None
    lock_timeout: float = 5.0
    statement_timeout: float = 0.0
    lock_retries: int = 5
    retry_delay: float = 0.5
    run_lock_timeout: float = 600.0
    ignore_checksums: bool = False
    #: Run the pending migrations in one transaction and roll it back (see :mod:`agentdb.runtime.dryrun`).
    dry_run: bool = False
    #: Drop the rows of non-empty tables for real on downgrade instead of archiving them
    #: (see :mod:`agentdb.runtime.archive`).
    purge: bool = False
    #: Online changes of expand/contract kinds stop expanded (both application versions work) instead of
    #: contracting; ``agentdb online complete`` contracts later (see :mod:`agentdb.online.migration`).
    expand_only: bool = False

    @classmethod
    def from_sources(
        cls, attributes: Mapping[str, Any], x_args: Mapping[str, str], environ: Mapping[str, str] | None = None
    ) -> RunSettings:
        given = attributes.get("agentdb")
        if isinstance(given, RunSettings):
            return given
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            env_name = "AGENTDB_" + field.name.upper()
            raw = x_args.get(field.name, environ.get(env_name))
            if raw is None or raw == "":
                continue
            values[field.name] = cls._convert(field.name, raw)
        return cls(**values)

    @staticmethod
    def _convert(name: str, raw: str) -> Any:
        if name in {"database_url", "data_dir"}:
            return raw
        if name in {"ignore_checksums", "dry_run", "purge", "expand_only"}:
            return _parse_bool(raw, name)
        if name == "lock_retries":
            try:
                count = int(raw)
            except ValueError:
                raise AgentdbError(f"invalid {name} {raw!r}", hint="use a whole number") from None
            if count < 1:
                raise AgentdbError(f"invalid {name} {raw!r}", hint="at least 1 attempt")
            return count
        return parse_duration(raw, name)

    def merged(self, **changes: Any) -> RunSettings:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        return replace(self, **{key: value for key, value in changes.items() if value is not None})
