"""What erasure does to each table, derived from the personal-data registry and the foreign keys; and its checks.

Nothing here is a list of tables.  For every declared table,
:func:`table_rules` reads:

* its *owner links*: foreign keys ``ON DELETE CASCADE`` to ``users`` or to a
  table whose rows go with a person (``playlist_tracks.playlist_id`` ->
  ``playlists.owner_user_id`` -> ``users``): those rows are deleted;
* its *kept links*: foreign keys ``ON DELETE SET NULL`` to the same: those rows
  stay (an event, an entry of someone else's playlist) and lose the link;
* the registry's ``NULLIFY`` and ``PSEUDONYMIZE`` columns: cleared, or replaced
  by the keyed pseudonym, in those kept rows;
* *blocking links* (``RESTRICT``/``NO ACTION`` to such a table): a row there
  stops the erasure, which rolls back and names the table;
* its *identity columns* (categories contact, identifier, credential, not
  kept): the values the proof scan looks for afterwards;
* for ``audit_log``, per audited table, the keys of the row images that stay
  (columns not personal, or kept for a legal reason): every other value of the
  person's audit rows becomes the pseudonym.

:func:`registry_problems` lists what would make erasure wrong or impossible;
``agentdb check`` and the tests fail on any of them (see
:mod:`agentdb.governance.personal_data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from agentdb.schema import metadata
from agentdb.schema._pii import Category, Erasure
from agentdb.schema.analytics import AUDITED_TABLES
from agentdb.schema.entities import GUARDED_TABLES
from agentdb.schema.personal_data import ColumnDeclaration, erased_tables, registry, undeclared_columns

__all__ = [
    "AUDIT_TABLE",
    "IDENTITY_CATEGORIES",
    "Link",
    "TableRule",
    "audit_keep_keys",
    "declaration",
    "registry_problems",
    "table_rules",
]

#: The audit trail: its rows stay, their row images are pseudonymised (never a foreign key, never deleted).
AUDIT_TABLE = "audit_log"
#: Categories whose values identify a person on their own: what the proof scan looks for.
IDENTITY_CATEGORIES = frozenset({Category.CONTACT, Category.IDENTIFIER, Category.CREDENTIAL})


@dataclass(frozen=True)
class Link:
    """A foreign key from ``column`` to ``parent.id``."""

    column: str
    parent: str
    on_delete: str


@dataclass(frozen=True)
class TableRule:
    """What erasing a person does to one declared table."""

    table: str
    owner_links: tuple[Link, ...] = ()
    kept_links: tuple[Link, ...] = ()
    blocking_links: tuple[Link, ...] = ()
    nullify: tuple[str, ...] = ()
    pseudonymize: tuple[str, ...] = ()
    #: Identifying columns of the person's own (deleted or kept) rows: the proof's values.
    identity: tuple[str, ...] = ()
    #: Of :attr:`identity`, those a unique constraint makes the person's alone.
    unique_identity: tuple[str, ...] = ()

    @property
    def erased(self) -> bool:
        """Whether the person's rows of this table are deleted."""
        return self.table == "users" or bool(self.owner_links)

    @property
    def touched(self) -> bool:
        return self.erased or bool(self.kept_links) or self.table == AUDIT_TABLE


def _schema_key() -> tuple[tuple[str, int], ...]:
    """What the derived rules depend on: the declared tables (a test may add one) and their column counts."""
    return tuple(sorted((name, len(table.columns)) for name, table in metadata.tables.items()))


@cache
def _declarations(key: tuple[tuple[str, int], ...]) -> dict[tuple[str, str], ColumnDeclaration]:
    return {(d.table, d.column): d for d in registry()}


def declaration(table: str, column: str) -> ColumnDeclaration | None:
    return _declarations(_schema_key()).get((table, column))


def _unique(table: sa.Table, column: str) -> bool:
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint | sa.PrimaryKeyConstraint) and \
                [c.name for c in constraint.columns] == [column]:
            return True
    return any(index.unique and [c.name for c in index.columns] == [column] and not index.dialect_options[
        "postgresql"].get("where") for index in table.indexes)


def table_rules() -> dict[str, TableRule]:
    """table -> its :class:`TableRule`, for every declared table erasure touches (derived once per schema)."""
    return _table_rules(_schema_key())


@cache
def _table_rules(key: tuple[tuple[str, int], ...]) -> dict[str, TableRule]:
    erased = erased_tables()
    rules: dict[str, TableRule] = {}
    for table in metadata.tables.values():
        owner: list[Link] = []
        kept: list[Link] = []
        blocking: list[Link] = []
        for fk in sorted(table.foreign_keys, key=lambda f: f.parent.name):
            parent = fk.column.table.name
            if parent not in erased or fk.column.name != "id":
                continue
            link = Link(fk.parent.name, parent, (fk.ondelete or "NO ACTION").upper())
            {"CASCADE": owner, "SET NULL": kept}.get(link.on_delete, blocking).append(link)
        nullify, pseudonymize, identity, unique = [], [], [], []
        for column in table.columns:
            found = declaration(table.name, column.name)
            if found is None or not found.pii.personal or column.foreign_keys:
                continue
            if found.erasure is Erasure.NULLIFY:
                nullify.append(column.name)
            elif found.erasure is Erasure.PSEUDONYMIZE and table.name != AUDIT_TABLE:
                pseudonymize.append(column.name)
            if found.category in IDENTITY_CATEGORIES and found.erasure is not Erasure.KEEP and \
                    isinstance(column.type, sa.String):
                identity.append(column.name)
                if _unique(table, column.name):
                    unique.append(column.name)
        rule = TableRule(table.name, tuple(owner), tuple(kept), tuple(blocking), tuple(nullify),
                         tuple(pseudonymize), tuple(identity), tuple(unique))
        if rule.touched:
            rules[table.name] = rule
    return rules


def audit_keep_keys() -> dict[str, tuple[str, ...]]:
    """``audit_log.entity_type`` -> the keys of its row images that erasure keeps: every other one is pseudonymised."""
    kept: dict[str, tuple[str, ...]] = {}
    for audited in AUDITED_TABLES:
        table = metadata.tables[audited.table]
        kept[audited.entity_type] = tuple(
            column.name for column in table.columns
            if (found := declaration(table.name, column.name)) is not None
            and (not found.pii.personal or found.erasure is Erasure.KEEP)
        )
    return kept


def _pseudonymizable(column: sa.Column[object]) -> bool:
    return isinstance(column.type, sa.String | sa.JSON | pg.JSONB | pg.UUID)


def registry_problems() -> list[str]:
    """Every declaration that would make erasure incomplete or impossible, one line each (empty: none).

    * a column of a user-linked table with no declaration, whatever its type;
    * ``NULLIFY`` on a ``NOT NULL`` column (the UPDATE would fail);
    * ``PSEUDONYMIZE`` on a column that cannot hold a pseudonym (not text, JSON or uuid);
    * ``DELETE_ROW`` on a column of a table whose rows erasure never deletes (it would silently stay);
    * a foreign key to a table erasure deletes from, with neither ``CASCADE`` nor ``SET NULL``;
    * ``audit_log`` without the subject column the bulk-change guard counts.

    (A personal declaration without an erasure rule cannot even be built: :class:`~agentdb.schema._pii.PII`
    refuses it when the schema is imported.)
    """
    problems = [f"{table}.{column}: column of a user-linked table is declared neither personal nor not personal"
                for table, column in undeclared_columns()]
    erased = erased_tables()
    for found in registry():
        column = metadata.tables[found.table].c[found.column]
        where = f"{found.table}.{found.column}"
        if found.erasure is Erasure.NULLIFY and not column.nullable:
            problems.append(f"{where}: erasure NULLIFY on a NOT NULL column cannot run")
        if found.erasure is Erasure.PSEUDONYMIZE and not _pseudonymizable(column):
            problems.append(f"{where}: erasure PSEUDONYMIZE on a {column.type} column: no pseudonym fits it")
        if found.erasure is Erasure.DELETE_ROW and found.table not in erased and found.source != "row":
            problems.append(f"{where}: erasure DELETE_ROW, but erasure never deletes rows of {found.table} "
                            "(no ON DELETE CASCADE path to users)")
    for rule in table_rules().values():
        for link in rule.blocking_links:
            problems.append(f"{rule.table}.{link.column}: foreign key to {link.parent} ON DELETE {link.on_delete} "
                            "would stop erasure; declare CASCADE or SET NULL")
    subject = GUARDED_TABLES.get(AUDIT_TABLE, "")
    if AUDIT_TABLE in metadata.tables and subject not in metadata.tables[AUDIT_TABLE].c:
        problems.append(f"{AUDIT_TABLE}: no subject column: erasure cannot find a person's audit rows")
    return problems
