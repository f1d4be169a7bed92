"""Every new column of a user-linked table is declared in the personal-data registry.

A table is *user-linked* when it is ``users`` or reaches ``users`` through
foreign keys (read from the schema declaration, :data:`agentdb.schema.metadata`,
and from the migrations' own SQL).  A column a migration adds to such a table
(``CREATE TABLE`` or ``ALTER TABLE ... ADD COLUMN`` in its offline SQL) must be
in the registry, declared personal or not: erasure, export and grants derive
from it, so a column missing there is a column they silently ignore.

The registry is read through one small interface::

    agentdb.schema.personal_data.declared_columns() -> Iterable[tuple[str, str]]   # (table, column)

It is derived from the ``info={"pii": ...}`` declarations of the schema's
columns, so a column a migration adds without declaring it in the models (a
text column with no declaration, or a column missing from the models) is
reported here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from agentdb.governance._model import CheckReport, Violation
from agentdb.governance.files import MigrationFile

__all__ = ["REGISTRY", "check_personal_data", "new_columns", "registry"]

#: Where the registry lives: module and function.
REGISTRY = ("agentdb.schema.personal_data", "declared_columns")

_CREATE = re.compile(r"^CREATE TABLE (?:IF NOT EXISTS )?(?P<name>[\w.\"]+) \(", re.MULTILINE)
_ADD_COLUMN = re.compile(
    r"^ALTER TABLE (?:ONLY )?(?:IF EXISTS )?(?P<name>[\w.\"]+) ADD (?:COLUMN )?(?:IF NOT EXISTS )?(?P<column>[\w\"]+)",
    re.MULTILINE,
)
_ALTER_FK = re.compile(r"^ALTER TABLE (?:ONLY )?(?P<name>[\w.\"]+) ADD CONSTRAINT .*?REFERENCES (?P<parent>[\w.\"]+)",
                       re.MULTILINE)
_REFERENCES = re.compile(r"\bREFERENCES (?P<parent>[\w.\"]+)")
_NOT_COLUMNS = {"CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN", "EXCLUDE", "LIKE"}


def _name(raw: str) -> str:
    name = raw.replace('"', "")
    return name.removeprefix("public.")


def registry() -> Callable[[], Iterable[tuple[str, str]]]:
    """The registry's ``declared_columns`` function."""
    from agentdb.schema.personal_data import declared_columns

    return declared_columns


def _body(sql: str, start: int) -> str:
    """The text between the parenthesis at ``start - 1`` and its match, quotes respected."""
    depth, index, quote = 1, start, ""
    while index < len(sql) and depth:
        char = sql[index]
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        index += 1
    return sql[start:index - 1]


def _split(body: str) -> list[str]:
    items: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in body:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


def new_columns(sql: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(table, column)`` pairs a migration's SQL adds, and its ``(child, parent)`` foreign-key edges."""
    columns: list[tuple[str, str]] = []
    edges: list[tuple[str, str]] = []
    for match in _CREATE.finditer(sql):
        table = _name(match.group("name"))
        for item in _split(_body(sql, match.end())):
            for ref in _REFERENCES.finditer(item):
                edges.append((table, _name(ref.group("parent"))))
            first = item.split(None, 1)[0]
            if first.upper() not in _NOT_COLUMNS:
                columns.append((table, _name(first)))
    for match in _ADD_COLUMN.finditer(sql):
        if match.group("column").upper() not in _NOT_COLUMNS:
            columns.append((_name(match.group("name")), _name(match.group("column"))))
    for match in _ALTER_FK.finditer(sql):
        edges.append((_name(match.group("name")), _name(match.group("parent"))))
    return columns, edges


def _declared_edges() -> list[tuple[str, str]]:
    from agentdb.schema import metadata

    return [(table.name, fk.column.table.name) for table in metadata.tables.values() for fk in table.foreign_keys]


def _user_linked(edges: Iterable[tuple[str, str]]) -> set[str]:
    linked = {"users"}
    pending = list(edges)
    changed = True
    while changed:
        changed = False
        for child, parent in pending:
            if parent in linked and child not in linked:
                linked.add(child)
                changed = True
    return linked


def check_personal_data(
    migrations: list[MigrationFile], sql_by_revision: dict[str, str], report: CheckReport,
    declared: Callable[[], Iterable[tuple[str, str]]] | None = None,
) -> None:
    """Report every new column of a user-linked table that the registry does not declare."""
    source = declared or registry()
    known = {(_name(table), column) for table, column in source()}
    from agentdb import commands

    added: list[tuple[MigrationFile, str, str]] = []
    edges = _declared_edges()
    for migration in migrations:
        rev = migration.revision
        if rev is None or migration.problems:
            continue
        sql = sql_by_revision.get(rev)
        if sql is None:
            previous = migration.parents[0] if len(migration.parents) == 1 else "base"
            try:
                sql = commands.sql(f"{previous}:{rev}")
            except Exception:  # reported by the squawk check (offline-sql)
                continue
        columns, found_edges = new_columns(sql)
        edges.extend(found_edges)
        added.extend((migration, table, column) for table, column in columns)
    linked = _user_linked(edges)
    for migration, table, column in added:
        if table in linked and (table, column) not in known:
            report.violations.append(Violation(
                "personal-data", migration.filename,
                f"new column {table}.{column} of user-linked table {table} is not in the personal-data registry; "
                "declare it (personal or not)", migration.revision,
            ))
