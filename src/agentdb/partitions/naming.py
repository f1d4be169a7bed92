"""Names and bounds of agentdb's monthly partitions: pure functions, no database access.

The scheme shared by the online conversion (:mod:`agentdb.online`) and partition
maintenance (:mod:`agentdb.partitions`):

* RANGE on a ``timestamptz`` column, one partition per calendar month in UTC;
* a month's partition is ``<table>_pYYYYMM`` in the parent's schema, bounds
  ``FROM ('YYYY-MM-01 00:00+00') TO (<first of the next month> 00:00+00)``;
* the DEFAULT partition is ``<table>_default``.

PostgreSQL truncates identifiers to 63 bytes; so do these functions, on the
table part only, so the suffix (which carries the month) always survives.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

__all__ = [
    "DEFAULT_SUFFIX",
    "MAX_IDENTIFIER_BYTES",
    "add_months",
    "default_partition_name",
    "fit_identifier",
    "month_bounds",
    "month_start",
    "parse_partition_name",
    "partition_name",
]

#: PostgreSQL's NAMEDATALEN - 1: longer identifiers are silently truncated by the server.
MAX_IDENTIFIER_BYTES = 63
DEFAULT_SUFFIX = "_default"
_MONTH_SUFFIX = re.compile(r"_p(?P<year>\d{4})(?P<month>0[1-9]|1[0-2])$")


def _utc(ts: datetime | date) -> datetime:
    """``ts`` as an aware UTC datetime; a naive datetime is taken to be UTC already, a date as its midnight."""
    if isinstance(ts, datetime):
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return datetime(ts.year, ts.month, ts.day, tzinfo=UTC)


def month_start(ts: datetime | date) -> datetime:
    """Midnight UTC on the first day of the month (in UTC) that contains ``ts``."""
    utc = _utc(ts)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


def add_months(ts: datetime | date, months: int) -> datetime:
    """The start of the month ``months`` after (or before, when negative) the month of ``ts``."""
    start = month_start(ts)
    index = start.year * 12 + (start.month - 1) + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def month_bounds(ts: datetime | date) -> tuple[datetime, datetime]:
    """``(start, end)`` of the month partition that holds ``ts``: end is exclusive, both UTC midnights."""
    return month_start(ts), add_months(ts, 1)


def fit_identifier(name: str, suffix: str) -> str:
    """``name + suffix``, the name part cut (on a character boundary) so the whole fits in 63 bytes."""
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode())
    encoded = name.encode()
    if len(encoded) > room:
        name = encoded[:room].decode(errors="ignore")
    return name + suffix


def partition_name(table: str, month: datetime | date) -> str:
    """``<table>_pYYYYMM`` for the month that contains ``month`` (UTC)."""
    start = month_start(month)
    return fit_identifier(table, f"_p{start.year:04d}{start.month:02d}")


def default_partition_name(table: str) -> str:
    """``<table>_default``, the parent's DEFAULT partition."""
    return fit_identifier(table, DEFAULT_SUFFIX)


def parse_partition_name(table: str, name: str) -> datetime | None:
    """The month start that ``name`` stands for when it is a month partition name of ``table``, else None.

    The inverse of :func:`partition_name` (including its truncation of long table names).
    """
    match = _MONTH_SUFFIX.search(name)
    if match is None:
        return None
    start = datetime(int(match["year"]), int(match["month"]), 1, tzinfo=UTC)
    return start if partition_name(table, start) == name else None
