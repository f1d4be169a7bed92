"""Copy a table's rows into its new version in key-ordered batches, each its own short transaction.

A batch reads the rows of the next key range after the checkpoint, locks
them ``FOR KEY SHARE`` and inserts them into the target with ``ON CONFLICT DO
NOTHING``; the caller commits it together with the new checkpoint.  When the
key's first column is an integer (``analytics.id``), a batch is a range of
that column (``id > a AND id <= b``, the width adapted to the target batch
time), read without sorting; otherwise it is the next ``LIMIT n`` rows in key
order after the last key copied (keyset).  With the
capture trigger (:mod:`agentdb.online.capture`) applying every write of the
source to the target in the writer's own transaction, this never resurrects a
deleted row nor puts an old version over a newer one:

* a DELETE, or an UPDATE of the key, needs a lock that conflicts with the
  batch's ``FOR KEY SHARE``: if it came first, the batch waits for it and then
  skips the row (or reads its new version); if the batch came first, the
  writer waits until the batch has committed, and its trigger then deletes
  the copied row;
* an UPDATE of other columns does not wait for the batch.  If the writer's
  trigger wrote the new version first, the batch's insert of the old version
  conflicts with it (waiting for the writer to commit) and does nothing; if
  the batch inserted first, the trigger's ``ON CONFLICT DO UPDATE`` waits for
  the batch to commit and then overwrites the old version.

.. warning::
   The batch holds ``FOR KEY SHARE`` row locks until it commits, so a writer
   deleting one of its rows waits up to one batch (``batch_seconds``).  A batch
   waits on writers under ``batch_lock_timeout`` (below ``deadlock_timeout``),
   so when a writer's multi-row transaction and a batch wait for each other,
   the batch is the one that gives up and retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from psycopg import sql

from agentdb.online._sql import execute

__all__ = ["BatchResult", "CopySpec", "batch_statement", "begin", "copy_batch", "last_key", "next_batch",
           "range_statement"]

_INTEGER_TYPES = {"smallint", "integer", "bigint"}


@dataclass(frozen=True)
class CopySpec:
    """What to copy: source and target (schema, table), the key, and one source expression per target column."""

    source: tuple[str, str]
    target: tuple[str, str]
    #: The source's key columns in key order (its primary key), and their types (``format_type``).
    key: tuple[str, ...]
    key_types: tuple[str, ...]
    target_columns: tuple[str, ...]
    #: One SQL expression per target column over the source row aliased ``s`` (``s.col`` for a plain copy).
    expressions: tuple[sql.Composable, ...]
    #: The target has an identity column: insert with OVERRIDING SYSTEM VALUE.
    overriding: bool = False
    #: Batches by ranges of the key's first column (None: when it is an integer), else keyset batches.
    ranged: bool | None = None

    @property
    def uses_ranges(self) -> bool:
        return self.ranged if self.ranged is not None else self.key_types[0] in _INTEGER_TYPES

    def key_row(self, alias: str) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(alias, k) for k in self.key)

    def key_values(self, values: Sequence[str]) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("CAST({} AS {})").format(sql.Literal(v), sql.SQL(t))
            for v, t in zip(values, self.key_types, strict=True)
        )


@dataclass(frozen=True)
class BatchResult:
    #: Source rows read (and locked) by the batch.
    seen: int
    #: Rows it inserted; the others were already there, written by the capture trigger.
    written: int
    #: The batch's last key, as text, or None when there was nothing left.
    last: tuple[str, ...] | None


def batch_statement(spec: CopySpec, after: Sequence[str] | None, until: Sequence[str], limit: int | None
                    ) -> sql.Composed:
    """The one statement of a batch: read, lock, insert, and report the count and last key."""
    conditions = [sql.SQL("({}) <= ({})").format(spec.key_row("s"), spec.key_values(until))]
    if after is not None:
        conditions.insert(0, sql.SQL("({}) > ({})").format(spec.key_row("s"), spec.key_values(after)))
    key_aliases = [sql.Identifier(f"_k{n}") for n in range(len(spec.key))]
    value_aliases = [sql.Identifier(f"_c{n}") for n in range(len(spec.target_columns))]
    select = sql.SQL(", ").join(
        [sql.SQL("{} AS {}").format(sql.Identifier("s", k), a) for k, a in zip(spec.key, key_aliases, strict=True)]
        + [sql.SQL("{} AS {}").format(e, a) for e, a in zip(spec.expressions, value_aliases, strict=True)]
    )
    return sql.SQL(
        "WITH batch AS (\n"
        "    SELECT {select}\n"
        "    FROM {source} AS s\n"
        "    WHERE {conditions}\n"
        "    ORDER BY {order}\n"
        "    LIMIT {limit}\n"
        "    FOR KEY SHARE OF s\n"
        "), written AS (\n"
        "    INSERT INTO {target} ({columns}){overriding}\n"
        "    SELECT {values} FROM batch\n"
        "    ON CONFLICT DO NOTHING\n"
        "    RETURNING 1\n"
        ")\n"
        "SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM written),\n"
        "       (SELECT ARRAY[{key_text}] FROM batch ORDER BY {order_desc} LIMIT 1)"
    ).format(
        select=select,
        source=sql.Identifier(*spec.source),
        conditions=sql.SQL(" AND ").join(conditions),
        order=sql.SQL(", ").join(sql.Identifier("s", k) for k in spec.key),
        limit=sql.Literal(limit) if limit is not None else sql.SQL("{batch_size}"),
        target=sql.Identifier(*spec.target),
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in spec.target_columns),
        overriding=sql.SQL(" OVERRIDING SYSTEM VALUE") if spec.overriding else sql.SQL(""),
        values=sql.SQL(", ").join(value_aliases),
        key_text=sql.SQL(", ").join(sql.SQL("{}::text").format(a) for a in key_aliases),
        order_desc=sql.SQL(", ").join(sql.SQL("{} DESC").format(a) for a in key_aliases),
    )


def _select_list(spec: CopySpec) -> tuple[sql.Composable, list[sql.Identifier]]:
    aliases = [sql.Identifier(f"_c{n}") for n in range(len(spec.target_columns))]
    select = sql.SQL(", ").join(sql.SQL("{} AS {}").format(e, a) for e, a in zip(spec.expressions, aliases,
                                                                                   strict=True))
    return select, aliases


def range_statement(spec: CopySpec, low: int | None, high: int | None) -> sql.Composed:
    """A range batch: every row with ``low < first key column <= high``, locked, inserted; its counts."""
    select, aliases = _select_list(spec)
    column = sql.Identifier("s", spec.key[0])
    return sql.SQL(
        "WITH batch AS (\n"
        "    SELECT {select}\n"
        "    FROM {source} AS s\n"
        "    WHERE {column} > {low} AND {column} <= {high}\n"
        "    FOR KEY SHARE OF s\n"
        "), written AS (\n"
        "    INSERT INTO {target} ({columns}){overriding}\n"
        "    SELECT {values} FROM batch\n"
        "    ON CONFLICT DO NOTHING\n"
        "    RETURNING 1\n"
        ")\n"
        "SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM written)"
    ).format(
        select=select, source=sql.Identifier(*spec.source), column=column,
        low=sql.Literal(low) if low is not None else sql.SQL("{after}"),
        high=sql.Literal(high) if high is not None else sql.SQL("{after} + {batch_size}"),
        target=sql.Identifier(*spec.target),
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in spec.target_columns),
        overriding=sql.SQL(" OVERRIDING SYSTEM VALUE") if spec.overriding else sql.SQL(""),
        values=sql.SQL(", ").join(aliases),
    )


def begin(connection: sa.Connection, spec: CopySpec) -> dict[str, Any] | None:
    """The checkpoint a copy starts from, or None when the source is empty.

    The copy ends at the source's greatest key *now*: rows written later reach
    the target through the capture trigger.
    """
    if spec.uses_ranges:
        bounds = execute(connection, sql.SQL("SELECT min({c})::text, max({c})::text FROM {t}").format(
            c=sql.Identifier(spec.key[0]), t=sql.Identifier(*spec.source))).one()
        if bounds[0] is None:
            return None
        return {"mode": "range", "after": [str(int(bounds[0]) - 1)], "until": [bounds[1]]}
    until = last_key(connection, spec)
    return None if until is None else {"mode": "keyset", "after": None, "until": list(until)}


def next_batch(connection: sa.Connection, spec: CopySpec, checkpoint: dict[str, Any], size: int
               ) -> tuple[BatchResult, dict[str, Any], bool]:
    """Run the batch after ``checkpoint`` (in the caller's transaction): its result, the new checkpoint,
    and whether the copy is done.  ``size`` is a width of the key range, or a row count (keyset)."""
    until = checkpoint["until"]
    if checkpoint.get("mode") == "range":
        low = int(checkpoint["after"][0])
        high = min(low + size, int(until[0]))
        row = execute(connection, range_statement(spec, low, high)).one()
        result = BatchResult(int(row[0]), int(row[1]), (str(high),))
        return result, {**checkpoint, "after": [str(high)]}, high >= int(until[0])
    result = copy_batch(connection, spec, checkpoint["after"], until, size)
    if result.last is None:
        return result, checkpoint, True
    return result, {**checkpoint, "after": list(result.last)}, False


def copy_batch(connection: sa.Connection, spec: CopySpec, after: Sequence[str] | None, until: Sequence[str],
               limit: int) -> BatchResult:
    """Run one batch in the connection's current transaction; the caller commits it with the checkpoint."""
    row = execute(connection, batch_statement(spec, after, until, limit)).one()
    return BatchResult(int(row[0]), int(row[1]), tuple(row[2]) if row[2] is not None else None)


def last_key(connection: sa.Connection, spec: CopySpec) -> tuple[str, ...] | None:
    """The source's greatest key now, as text: the copy ends there (later rows arrive through the trigger)."""
    statement = sql.SQL("SELECT ARRAY[{}] FROM {} AS s ORDER BY {} LIMIT 1").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("s", k)) for k in spec.key),
        sql.Identifier(*spec.source),
        sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier("s", k)) for k in spec.key),
    )
    found = execute(connection, statement).first()
    return tuple(found[0]) if found is not None else None
