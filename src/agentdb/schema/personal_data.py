"""The personal-data registry, derived from the ``info={"pii": PII(...)}`` of the schema's columns.

Nothing here is a second list: every answer is read from
:data:`agentdb.schema.metadata`.  A column's declaration is, first match wins:

1. ``declared`` -- its own ``info["pii"]``; a :class:`~agentdb.schema._pii.RowTime`
   (the ``created_at``/``updated_at`` helpers) is resolved per table as
   ``row``: behavioural data erased with the row where erasure deletes the
   table's rows about a person, kept (anonymised) where the table only links
   to a person, not personal elsewhere;
2. ``foreign key`` -- a foreign key to ``users.id``: pseudonymous, erased the
   way the key's ``ON DELETE`` says (``CASCADE`` deletes the row, ``SET NULL``
   nulls it);
3. ``not user-linked`` -- its table neither is ``users``, nor reaches it
   through foreign keys, nor declares a personal column: not personal (the
   catalogue, the model registry);
4. ``key`` -- an integer primary key (a surrogate key: ``users.id`` is the
   person's pseudonymous id, erased with the row; any other is not personal),
   or a foreign key to another table (a reference to a row, whose own table
   declares what it holds).

Any other column of a user-linked table -- whatever its type: a timestamp or
a counter says something about a person too -- is *undeclared*:
:func:`undeclared_columns` lists it, the test suite and ``agentdb check``
fail on it, and analysts are not granted it.

.. note::
   ``audit_log`` has no foreign key (it outlives what it records); it is
   user-linked because it declares personal columns (``subject_user_id``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from agentdb.schema import metadata
from agentdb.schema._pii import PII, Category, Erasure, RowTime

__all__ = [
    "PII",
    "Category",
    "ColumnDeclaration",
    "Erasure",
    "analyst_columns",
    "declared_columns",
    "erased_tables",
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
_KEPT_ROW = "the time of a row kept, anonymised, once erasure has cleared its link to the person"


def _tables(tables: Iterable[sa.Table] | None) -> list[sa.Table]:
    return list(metadata.tables.values() if tables is None else tables)


def _declares_personal(table: sa.Table) -> bool:
    return any(isinstance(c.info.get("pii"), PII) and c.info["pii"].personal for c in table.columns)


def user_linked_tables(tables: Iterable[sa.Table] | None = None) -> set[str]:
    """``users``, every table that reaches it through foreign keys, and every table that declares personal data."""
    tables = _tables(tables)
    linked = {"users"} | {table.name for table in tables if _declares_personal(table)}
    changed = True
    while changed:
        changed = False
        for table in tables:
            if table.name not in linked and any(fk.column.table.name in linked for fk in table.foreign_keys):
                linked.add(table.name)
                changed = True
    return linked


def erased_tables(tables: Iterable[sa.Table] | None = None) -> set[str]:
    """``users`` and the tables whose rows go with a person: those reaching it by ``ON DELETE CASCADE`` only."""
    tables = _tables(tables)
    erased = {"users"}
    changed = True
    while changed:
        changed = False
        for table in tables:
            if table.name not in erased and any(
                fk.column.table.name in erased and (fk.ondelete or "").upper() == "CASCADE"
                for fk in table.foreign_keys
            ):
                erased.add(table.name)
                changed = True
    return erased


def _links_users(table: sa.Table) -> bool:
    return any(fk.column.table.name == "users" for fk in table.foreign_keys)


def _row_time(table: sa.Table, declared: RowTime, linked: set[str], erased: set[str]) -> PII:
    """What a row timestamp is in ``table``: see :class:`~agentdb.schema._pii.RowTime`."""
    if table.name in erased:
        return PII(Category.BEHAVIOURAL, Erasure.DELETE_ROW, analyst=True)
    if table.name in linked and _links_users(table):
        return PII(Category.BEHAVIOURAL, Erasure.KEEP, _KEPT_ROW, analyst=True)
    return PII.none(f"{declared.what}, in a table whose rows are not about a person")


def _key(table: sa.Table, column: sa.Column[object]) -> PII | None:
    """A surrogate primary key, or a reference to another table's row; None when the column is neither."""
    if column.primary_key and not column.foreign_keys and isinstance(column.type, sa.Integer):
        if table.name == "users":
            return PII(Category.PSEUDONYMOUS, Erasure.DELETE_ROW, analyst=True)
        return PII.none("a surrogate key generated by the database")
    parents = {fk.column.table.name for fk in column.foreign_keys}
    if parents and "users" not in parents:
        return PII.none(f"a reference to a row of {', '.join(sorted(parents))}, which declares what it holds")
    return None


def _classify(
    table: sa.Table, column: sa.Column[object], linked: set[str], erased: set[str],
) -> ColumnDeclaration | None:
    declared = column.info.get("pii")
    if isinstance(declared, PII):
        return ColumnDeclaration(table.name, column.name, declared, "declared")
    if isinstance(declared, RowTime):
        return ColumnDeclaration(table.name, column.name, _row_time(table, declared, linked, erased), "row")
    for fk in column.foreign_keys:
        if fk.column.table.name == "users" and (fk.ondelete or "").upper() in _ON_DELETE:
            rule = _ON_DELETE[(fk.ondelete or "").upper()]
            return ColumnDeclaration(table.name, column.name, PII(Category.PSEUDONYMOUS, rule), "foreign key")
    if table.name not in linked:
        return ColumnDeclaration(table.name, column.name, PII.none("its table holds no user data"), "not user-linked")
    key = _key(table, column)
    if key is not None:
        return ColumnDeclaration(table.name, column.name, key, "key")
    return None


def _walk() -> Iterator[tuple[sa.Table, sa.Column[object], ColumnDeclaration | None]]:
    linked = user_linked_tables()
    erased = erased_tables()
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        for column in table.columns:
            yield table, column, _classify(table, column, linked, erased)


def registry() -> list[ColumnDeclaration]:
    """Every declared column of the schema, by table then column order."""
    return [declaration for _, _, declaration in _walk() if declaration is not None]


def undeclared_columns() -> list[tuple[str, str]]:
    """Columns of user-linked tables, of any type, that carry no declaration: each must get one."""
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
