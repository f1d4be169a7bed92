"""Verify, before the cut-over, that the new table holds exactly the source's rows.

In one REPEATABLE READ snapshot, both tables are split into the same key
ranges and each range gets a row count and a checksum (the sum of a 64-bit
hash of each row's text).  The capture trigger writes the target in the
writer's own transaction, so in any one snapshot the two tables must agree;
a range that differs stops the cut-over and is named.

.. note::
   It reads both tables completely, under ACCESS SHARE only (writers go on),
   and holds one snapshot for as long, which delays vacuum's cleanup of rows
   deleted meanwhile.  No lock that blocks anyone is taken.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from psycopg import sql

from agentdb.online._sql import execute

__all__ = ["RangeCheck", "VerifyReport", "VerifySpec", "statements", "verify"]

_INTEGER_TYPES = {"smallint", "integer", "bigint"}


@dataclass(frozen=True)
class VerifySpec:
    source: tuple[str, str]
    target: tuple[str, str]
    #: The row as compared, an expression over the alias ``s`` (source) and ``t`` (target), same text both sides.
    source_row: sql.Composable
    target_row: sql.Composable
    #: Ranges are cut on this column (the key's first column); an integer column gives ``ranges`` equal
    #: ranges between its minimum and maximum, any other type one range.
    range_column: str
    range_type: str
    target_range_column: str
    ranges: int = 16


@dataclass(frozen=True)
class RangeCheck:
    label: str
    source_rows: int
    target_rows: int
    equal: bool

    def as_dict(self) -> dict[str, Any]:
        return {"range": self.label, "source_rows": self.source_rows, "target_rows": self.target_rows,
                "equal": self.equal}


@dataclass(frozen=True)
class VerifyReport:
    ranges: tuple[RangeCheck, ...]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(r.source_rows for r in self.ranges)

    @property
    def differences(self) -> tuple[RangeCheck, ...]:
        return tuple(r for r in self.ranges if not r.equal)


def _bucket(spec: VerifySpec, column: str, alias: str, low: int, high: int) -> sql.Composable:
    if spec.range_type not in _INTEGER_TYPES:
        return sql.SQL("0")
    return sql.SQL("width_bucket({}::numeric, {}, {}, {})").format(
        sql.Identifier(alias, column), sql.Literal(low), sql.Literal(high + 1), sql.Literal(spec.ranges))


def _sums(spec: VerifySpec, table: tuple[str, str], column: str, alias: str, row: sql.Composable,
          low: int, high: int) -> sql.Composable:
    return sql.SQL(
        "SELECT {bucket} AS bucket, count(*), coalesce(sum(hashtextextended(({row})::text, 0)::numeric), 0)\n"
        "FROM {table} AS {alias} GROUP BY 1"
    ).format(bucket=_bucket(spec, column, alias, low, high), row=row, table=sql.Identifier(*table),
             alias=sql.Identifier(alias))


def statements(spec: VerifySpec) -> list[sql.Composable]:
    """The verification's queries (for the plan's SQL), with placeholder bounds."""
    return [
        sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
        sql.SQL("SELECT min({c}), max({c}) FROM {t}").format(c=sql.Identifier(spec.range_column),
                                                             t=sql.Identifier(*spec.source)),
        _sums(spec, spec.source, spec.range_column, "s", spec.source_row, 0, 0),
        _sums(spec, spec.target, spec.target_range_column, "t", spec.target_row, 0, 0),
        sql.SQL("COMMIT"),
    ]


def _label(spec: VerifySpec, bucket: int, low: int, high: int) -> str:
    if spec.range_type not in _INTEGER_TYPES:
        return "all rows"
    width = Decimal(high + 1 - low) / spec.ranges
    if bucket == 0:
        return f"{spec.range_column} < {low}"
    if bucket > spec.ranges:
        return f"{spec.range_column} > {high}"
    start = low + int(width * (bucket - 1))
    end = low + int(width * bucket)
    return f"{spec.range_column} in [{start}, {end})"


def verify(connection: sa.Connection, spec: VerifySpec) -> VerifyReport:
    """Compare source and target range by range in one snapshot; the caller decides what a difference means.

    Leaves the connection outside any transaction.
    """
    started = time.monotonic()
    if connection.in_transaction():
        connection.commit()
    with connection.begin():
        # The first statement of the transaction, so the snapshot is taken after it.
        execute(connection, sql.SQL("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        bounds = execute(connection, sql.SQL("SELECT min({c})::text, max({c})::text FROM {t}").format(
            c=sql.Identifier(spec.range_column), t=sql.Identifier(*spec.source))).one()
        integer = spec.range_type in _INTEGER_TYPES
        low = int(bounds[0]) if integer and bounds[0] is not None else 0
        high = int(bounds[1]) if integer and bounds[1] is not None else 0
        source = {int(r[0]): (int(r[1]), r[2]) for r in execute(
            connection, _sums(spec, spec.source, spec.range_column, "s", spec.source_row, low, high))}
        target = {int(r[0]): (int(r[1]), r[2]) for r in execute(
            connection, _sums(spec, spec.target, spec.target_range_column, "t", spec.target_row, low, high))}
    checks = []
    for bucket in sorted(set(source) | set(target)):
        s_rows, s_sum = source.get(bucket, (0, Decimal(0)))
        t_rows, t_sum = target.get(bucket, (0, Decimal(0)))
        checks.append(RangeCheck(_label(spec, bucket, low, high), s_rows, t_rows, s_rows == t_rows and s_sum == t_sum))
    return VerifyReport(tuple(checks), time.monotonic() - started)
