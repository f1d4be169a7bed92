"""The personal-data registry, derived from the ``info={"pii": PII(...)}`` of the schema's columns.

Nothing here is a second list: every answer is read from
:data:`agentdb.schema.metadata`.  A column's declaration is, first match wins:

1. ``declared`` -- its own ``info["pii"]``;
2. ``foreign key`` -- a foreign key to ``users.id``: pseudonymous, erased the
   way the key's ``ON DELETE`` says (``CASCADE`` deletes the row, ``SET NULL``
   nulls it);
3. ``not user-linked`` -- its table neither is ``users`` nor reaches it through
   foreign keys: not personal (the catalogue, the model registry);
4. ``type`` -- a value that cannot carry free-form data (numbers, booleans,
   timestamps): not personal unless declared (``users.last_login_at`` is).

A text, JSON or array column of a user-linked table that has no declaration is
*undeclared*: :func:`undeclared_columns` lists it, the test suite fails on it,
and analysts are not granted it.

.. note::
   ``audit_log`` has no foreign key (it outlives what it records), so it is
   not user-linked by rule 3; its columns are declared explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from agentdb.schema import metadata
from agentdb.schema._pii import PII, Category, Erasure

__all__ = [
    "PII",
    "Category",
    "ColumnDeclaration",
    "Erasure",
    "analyst_columns",
    "declared_columns",
    "registry",
    "undeclared_columns",
    "user_linked_tables",
]


@dataclass(frozen=True)
class ColumnDeclaration:
    """One column of the registry: what it holds, how erasure treats it, and where that was decided."""

    table: str
    column: str
    pii: PII
    #: ``declared``, ``foreign key``, ``not user-linked`` or ``type``.
    source: str

    @property
    def category(self) -> Category:
        return self.pii.category

    @property
    def erasure(self) -> Erasure | None:
        return self.pii.erasure


_ON_DELETE = {"CASCADE": Erasure.DELETE_ROW, "SET NULL": Erasure.NULLIFY}


def _free_form(column: sa.Column[object]) -> bool:
    return isinstance(column.type, sa.String | sa.JSON | sa.ARRAY | sa.LargeBinary)


def user_linked_tables(tables: Iterable[sa.Table] | None = None) -> set[str]:
    """``users`` and every table that reaches it through foreign keys."""
    tables = list(metadata.tables.values() if tables is None else tables)
    linked = {"users"}
    changed = True
    while changed:
        changed = False
        for table in tables:
            if table.name not in linked and any(fk.column.table.name in linked for fk in table.foreign_keys):
                linked.add(table.name)
                changed = True
    return linked


def _classify(table: sa.Table, column: sa.Column[object], linked: set[str]) -> ColumnDeclaration | None:
    declared = column.info.get("pii")
    if isinstance(declared, PII):
        return ColumnDeclaration(table.name, column.name, declared, "declared")
    for fk in column.foreign_keys:
        if fk.column.table.name == "users" and (fk.ondelete or "").upper() in _ON_DELETE:
            rule = _ON_DELETE[(fk.ondelete or "").upper()]
            return ColumnDeclaration(table.name, column.name, PII(Category.PSEUDONYMOUS, rule), "foreign key")
    if table.name not in linked:
        return ColumnDeclaration(table.name, column.name, PII.none("its table holds no user data"), "not user-linked")
    if not _free_form(column):
        return ColumnDeclaration(
            table.name, column.name, PII.none(f"a {column.type} value, not free-form"), "type",
        )
    return None


def _walk() -> Iterator[tuple[sa.Table, sa.Column[object], ColumnDeclaration | None]]:
    linked = user_linked_tables()
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        for column in table.columns:
            yield table, column, _classify(table, column, linked)


def registry() -> list[ColumnDeclaration]:
    """Every declared column of the schema, by table then column order."""
    return [declaration for _, _, declaration in _walk() if declaration is not None]


def undeclared_columns() -> list[tuple[str, str]]:
    """Text, JSON and array columns of user-linked tables that carry no declaration: each must get one."""
    return [(table.name, column.name) for table, column, declaration in _walk() if declaration is None]


def declared_columns() -> Iterator[tuple[str, str]]:
    """``(table, column)`` of every declared column; what ``agentdb check`` compares migrations with."""
    for declaration in registry():
        yield declaration.table, declaration.column


def analyst_columns() -> dict[str, list[str]]:
    """table -> the columns the analyst role may SELECT, in table order; undeclared columns are never granted."""
    granted: dict[str, list[str]] = {}
    for declaration in registry():
        if declaration.pii.analyst_visible:
            granted.setdefault(declaration.table, []).append(declaration.column)
    return granted
