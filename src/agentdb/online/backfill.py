"""Backfill: set a column of existing rows in key-ordered batches, each its own short transaction.

The expand/contract kinds (add a column with a backfill expression, rename,
split, merge, ...) add columns to the live table and fill them for the rows
that existed before; rows written meanwhile are filled by the kind's trigger in
the writer's own transaction.  A batch is one ``UPDATE`` of a key range,
committed together with the checkpoint, so a crash loses at most one batch.

Each batch sets ``agentdb.online_backfill`` to the change's token for its
transaction (``SET LOCAL``): the kind's own sync trigger skips the batch's
rows (its ``WHEN`` condition, so its function is not even called), so a
backfill never computes the old columns back from the new ones.

.. warning::
   A batch takes ROW EXCLUSIVE on the table and the row locks of its range
   until it commits (one batch, ``batch_seconds``); it waits on writers under
   ``batch_lock_timeout``.  The table's own triggers fire for the batch's
   UPDATEs (an ``updated_at`` trigger touches the rows; an audit trigger
   records them); the plan's notes say so.  Batches run with
   ``agentdb.allow_bulk_change`` on: a backfill is a bulk change by design.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from psycopg import sql

from agentdb.online._sql import execute

__all__ = ["BYPASS_SETTING", "BackfillResult", "BackfillSpec", "begin", "keyset_statement", "next_batch", "statement"]

#: Set (SET LOCAL) to the change's token by every batch; the kind's trigger skips rows while it is.
BYPASS_SETTING = "agentdb.online_backfill"
_INTEGER_TYPES = {"smallint", "integer", "bigint"}


@dataclass(frozen=True)
class BackfillSpec:
    table: tuple[str, str]
    #: The table's key columns and their types; batches are ranges of the first when it is an integer.
    key: tuple[str, ...]
    key_types: tuple[str, ...]
    #: ``SET`` list (``a = expr, b = expr``) over the row's own columns.
    assignments: sql.Composable
    #: Only rows that need it (e.g. ``new IS NULL``): a resumed batch redoes nothing.
    condition: sql.Composable
    token: str

    @property
    def uses_ranges(self) -> bool:
        return self.key_types[0] in _INTEGER_TYPES


def statement(spec: BackfillSpec, low: int | None, high: int | None) -> sql.Composed:
    """One batch: ``low < key <= high`` (placeholders when None, for the SQL listing)."""
    column = sql.Identifier(spec.key[0])
    return sql.SQL(
        "UPDATE {table} SET {assignments} WHERE {column} > {low} AND {column} <= {high} AND ({condition})"
    ).format(
        table=sql.Identifier(*spec.table), assignments=spec.assignments, column=column,
        low=sql.Literal(low) if low is not None else sql.SQL("{after}"),
        high=sql.Literal(high) if high is not None else sql.SQL("{after} + {batch_size}"),
        condition=spec.condition,
    )


def keyset_statement(spec: BackfillSpec, after: list[str] | None, limit: int) -> sql.Composed:
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in spec.key)
    values = sql.SQL(", ").join(sql.SQL("CAST({} AS {})").format(sql.Literal(v), sql.SQL(t))
                                for v, t in zip(after or [], spec.key_types, strict=False))
    lower = sql.SQL("({}) > ({})").format(keys, values) if after else sql.SQL("true")
    return sql.SQL(
        "WITH batch AS (SELECT {keys} FROM {table} WHERE {lower} ORDER BY {keys} LIMIT {limit} FOR UPDATE), "
        "done AS (UPDATE {table} AS u SET {assignments} FROM batch WHERE ({ukeys}) = ({bkeys}) AND ({condition}) "
        "RETURNING 1) "
        "SELECT (SELECT count(*) FROM done), (SELECT ARRAY[{text}] FROM batch ORDER BY {desc} LIMIT 1)"
    ).format(
        keys=keys, table=sql.Identifier(*spec.table), lower=lower, limit=sql.Literal(limit),
        assignments=spec.assignments, ukeys=sql.SQL(", ").join(sql.Identifier("u", k) for k in spec.key),
        bkeys=sql.SQL(", ").join(sql.Identifier("batch", k) for k in spec.key), condition=spec.condition,
        text=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("batch", k)) for k in spec.key),
        desc=sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier("batch", k)) for k in spec.key),
    )


def _bypass(connection: sa.Connection, spec: BackfillSpec) -> None:
    execute(connection, sql.SQL("SELECT set_config({}, {}, true), set_config('agentdb.allow_bulk_change', 'on', true)"
                                ).format(sql.Literal(BYPASS_SETTING), sql.Literal(spec.token)))


def begin(connection: sa.Connection, spec: BackfillSpec) -> dict[str, Any] | None:
    """The checkpoint a backfill starts from (None: the table is empty).  Rows added later are the trigger's."""
    if spec.uses_ranges:
        bounds = execute(connection, sql.SQL("SELECT min({c})::text, max({c})::text FROM {t}").format(
            c=sql.Identifier(spec.key[0]), t=sql.Identifier(*spec.table))).one()
        if bounds[0] is None:
            return None
        return {"mode": "range", "after": [str(int(bounds[0]) - 1)], "until": [bounds[1]]}
    return {"mode": "keyset", "after": None, "until": None}


@dataclass(frozen=True)
class BackfillResult:
    seen: int
    written: int


def next_batch(connection: sa.Connection, spec: BackfillSpec, checkpoint: dict[str, Any], size: int
               ) -> tuple[BackfillResult, dict[str, Any], bool]:
    """Run the batch after ``checkpoint`` in the caller's transaction: result, new checkpoint, done."""
    _bypass(connection, spec)
    if checkpoint.get("mode") == "range":
        low = int(checkpoint["after"][0])
        until = int(checkpoint["until"][0])
        high = min(low + size, until)
        result = execute(connection, statement(spec, low, high))
        written = int(result.rowcount or 0)
        return BackfillResult(written, written), {**checkpoint, "after": [str(high)]}, high >= until
    row = execute(connection, keyset_statement(spec, checkpoint.get("after"), size)).one()
    written = int(row[0])
    if row[1] is None:
        return BackfillResult(written, written), checkpoint, True
    return BackfillResult(written, written), {**checkpoint, "after": list(row[1])}, False
