"""Rename a column while the old and the new application version both read and write the table.

Expand: a copy of the column under the new name, kept equal to the old one
both ways by a trigger (the old version writes the old name, the new version
the new name), backfilled in batches.  Contract (``agentdb online
complete``, when the old version is gone): the trigger and the copy are
dropped and the original column takes the new name, keeping its indexes,
constraints, default, statistics and NOT NULL -- one catalogue change.  No
view and no ``search_path`` change is asked of the application.  See
:mod:`agentdb.online.kinds._expand`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa
from psycopg import sql

from agentdb.online.catalog import describe
from agentdb.online.kinds import _ddl, _expand

__all__ = ["RenameColumnKind"]


class RenameColumnKind(_expand.ExpandKind):
    name: ClassVar[str] = "rename_column"
    summary: ClassVar[str] = "rename a column expand/contract: both application versions work meanwhile"
    options: ClassVar[Mapping[str, Any]] = {"column": None, "new_name": None}
    abortable_until_complete: ClassVar[bool] = True

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        qualified = f"{schema}.{table}"
        _ddl.check_options(qualified, cls.name, options, cls.options, ("column", "new_name"))
        info = describe(connection, schema, table)
        old = info.column(str(options["column"]))
        new = _ddl.check_new_name(info, options["new_name"], "column")
        add = [{"name": new, "type": old.type, "default": None, "comment": old.comment}]
        return _expand.expand_design(info, token, add=add, forward={new: _ident(old.name)},
                                     backward={old.name: _ident(new)}, old_columns=[old.name], not_null=[],
                                     contract={"rename": [old.name, new]})

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        columns = _expand.column_state(connection, schema, table)
        return str(options.get("new_name")) in columns and str(options.get("column")) not in columns


def _ident(name: str) -> str:
    """A column name as SQL text (the name came from the catalogue or was checked)."""
    return sql.Identifier(name).as_string(None)
