"""Merge several columns into one, expand/contract: both application versions read and write meanwhile.

``into`` is the new column, ``type`` its type and ``expression`` how it is
computed from the old columns (``coalesce(city, '') || ', ' || country``);
``split_back`` gives each old column from the new one.  Expand adds the new
column, a trigger keeps both sides in step, a backfill fills the existing
rows; contract (``agentdb online complete``) drops the trigger and the old
columns.  See :mod:`agentdb.online.kinds._expand`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa

from agentdb.errors import OnlineChangeRefused
from agentdb.online.catalog import describe
from agentdb.online.kinds import _ddl, _expand
from agentdb.online.kinds.split_column import _check_over_new, new_columns

__all__ = ["MergeColumnsKind"]


class MergeColumnsKind(_expand.ExpandKind):
    name: ClassVar[str] = "merge_columns"
    summary: ClassVar[str] = "merge columns into one, expand/contract: both application versions work"
    options: ClassVar[Mapping[str, Any]] = {"columns": None, "into": None, "type": None, "expression": None,
                                            "split_back": None}
    abortable_until_complete: ClassVar[bool] = True

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        qualified = f"{schema}.{table}"
        _ddl.check_options(qualified, cls.name, options, cls.options,
                           ("columns", "into", "type", "expression", "split_back"))
        info = describe(connection, schema, table)
        olds = [info.column(str(c)) for c in options["columns"]]
        add, forward = new_columns(connection, info, {options["into"]: (options["type"], options["expression"])},
                                   "into")
        split_back = options["split_back"]
        if not isinstance(split_back, Mapping) or set(split_back) != {c.name for c in olds}:
            raise OnlineChangeRefused(qualified, "split_back must give an expression for each of "
                                      + ", ".join(c.name for c in olds))
        backward = {}
        for column in olds:
            _check_over_new(connection, info, add, str(split_back[column.name]), column.type)
            backward[column.name] = f"({split_back[column.name]})::{column.type}"
        return _expand.expand_design(info, token, add=add, forward=forward, backward=backward,
                                     old_columns=[c.name for c in olds], not_null=[],
                                     contract={"drop": [c.name for c in olds]})

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        columns = _expand.column_state(connection, schema, table)
        return str(options.get("into")) in columns and not any(str(c) in columns for c in options.get("columns") or [])
