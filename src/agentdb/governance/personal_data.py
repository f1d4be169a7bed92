"""Every new column of a user-linked table is declared in the personal-data registry.

A table is *user-linked* when it is ``users`` or reaches ``users`` through
foreign keys (read from the schema declaration, :data:`agentdb.schema.metadata`,
and from the migrations' own SQL).  A column a migration adds to such a table
(``CREATE TABLE``, ``ALTER TABLE ... ADD COLUMN``, ``RENAME COLUMN`` in its
offline SQL, read by PostgreSQL's own parser) must be in the registry,
declared personal or not: erasure, export and grants derive from it, so a
column missing there is a column they silently ignore.

The registry is read through one small interface::

    agentdb.schema.personal_data.declared_columns() -> Iterable[tuple[str, str]]   # (table, column)

It is derived from the ``info={"pii": ...}`` declarations of the schema's
columns, so a column a migration adds without declaring it in the models (a
column of any type with no declaration, or a column missing from the models)
is reported here.  With the project's own registry, the declarations erasure
could not carry out are reported too (:func:`agentdb.privacy.rules.registry_problems`:
an undeclared column, ``NULLIFY`` on a ``NOT NULL`` column, a foreign key to
users that would block the deletion...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType

from agentdb.governance._model import CheckReport, Violation
from agentdb.governance._sql import Statement, do_block_statements, relation_name, statements
from agentdb.governance.files import MigrationFile

__all__ = ["REGISTRY", "NewColumns", "check_personal_data", "new_columns", "registry"]

#: Where the registry lives: module and function.
REGISTRY = ("agentdb.schema.personal_data", "declared_columns")


def _name(table: str) -> str:
    return table.removeprefix("public.")


def registry() -> Callable[[], Iterable[tuple[str, str]]]:
    """The registry's ``declared_columns`` function."""
    from agentdb.schema.personal_data import declared_columns

    return declared_columns


@dataclass
class NewColumns:
    """What a migration's SQL adds: columns, foreign-key edges, and the statements that could not be read."""

    #: ``(table, column)`` for each column a statement creates (or renames into being).
    columns: list[tuple[str, str]] = field(default_factory=list)
    #: ``(child, parent)`` for each foreign key (and ``INHERITS``) a statement declares.
    edges: list[tuple[str, str]] = field(default_factory=list)
    #: Statements PostgreSQL's grammar rejects: their columns are unknown.
    unreadable: list[Statement] = field(default_factory=list)


def _references(constraints: Iterable[ast.Node] | None) -> list[str]:
    return [relation_name(c.pktable) for c in constraints or ()
            if isinstance(c, ast.Constraint) and c.contype == ConstrType.CONSTR_FOREIGN and c.pktable is not None]


def _column(found: NewColumns, table: str, column: ast.ColumnDef) -> None:
    found.columns.append((table, str(column.colname)))
    found.edges.extend((table, parent) for parent in _references(column.constraints))


def _create(found: NewColumns, create: ast.CreateStmt) -> None:
    if create.relation is None or create.partbound is not None or create.ofTypename is not None:
        return  # a partition has its parent's columns, a typed table its type's: none is new here
    table = relation_name(create.relation)
    found.edges.extend((table, relation_name(parent)) for parent in create.inhRelations or ())
    for element in create.tableElts or ():
        if isinstance(element, ast.ColumnDef):
            _column(found, table, element)
        elif isinstance(element, ast.Constraint):
            found.edges.extend((table, parent) for parent in _references([element]))


def _alter(found: NewColumns, alter: ast.AlterTableStmt) -> None:
    if alter.objtype != ObjectType.OBJECT_TABLE or alter.relation is None:
        return
    table = relation_name(alter.relation)
    for command in alter.cmds or ():
        if not isinstance(command, ast.AlterTableCmd):
            continue
        if command.subtype == AlterTableType.AT_AddColumn and isinstance(command.def_, ast.ColumnDef):
            _column(found, table, command.def_)
        elif command.subtype == AlterTableType.AT_AddConstraint and isinstance(command.def_, ast.Constraint):
            found.edges.extend((table, parent) for parent in _references([command.def_]))


def _read(found: NewColumns, sql: str) -> None:
    for statement in statements(sql):
        node = statement.node
        if node is None:
            found.unreadable.append(statement)
        elif isinstance(node, ast.CreateStmt):
            _create(found, node)
        elif isinstance(node, ast.AlterTableStmt):
            _alter(found, node)
        elif (isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_COLUMN
              and node.relationType == ObjectType.OBJECT_TABLE and node.relation is not None):
            found.columns.append((relation_name(node.relation), str(node.newname)))  # a new name to declare
        elif isinstance(node, ast.DoStmt):
            for inner in do_block_statements(node) or ():
                _read(found, inner)


def new_columns(sql: str) -> NewColumns:
    """The columns a migration's SQL adds and its foreign-key edges, read by PostgreSQL's parser.

    ``CREATE TABLE``, ``ALTER TABLE ... ADD COLUMN`` (every one of a
    multi-command ``ALTER``), ``RENAME COLUMN`` and the static statements of
    ``DO`` blocks count.  Not seen: columns made by ``CREATE TABLE ... AS``,
    ``LIKE`` or SQL built at run time (``EXECUTE format(...)``), which only
    the database knows.
    """
    found = NewColumns()
    _read(found, sql)
    return found


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
    added: list[tuple[MigrationFile, str, str]] = []
    edges = _declared_edges()
    for migration in migrations:
        rev = migration.revision
        if rev is None or migration.problems:
            continue
        sql = sql_by_revision.get(rev)
        if sql is None:  # its SQL could not be rendered: reported once, as offline-sql
            continue
        found = new_columns(sql)
        edges.extend(found.edges)
        added.extend((migration, table, column) for table, column in found.columns)
        for statement in found.unreadable:
            report.violations.append(Violation(
                "personal-data", migration.filename,
                f"offline SQL line {statement.line} does not parse ({statement.error}); "
                "its new columns cannot be checked", rev, statement.line,
            ))
    if declared is None:  # the project's own registry: also what would make erasure wrong (agentdb.privacy.rules)
        from agentdb.privacy.rules import registry_problems

        report.violations.extend(Violation("personal-data", "agentdb/schema", problem)
                                 for problem in registry_problems())
    linked = _user_linked(edges)
    for migration, table, column in added:
        if table in linked and (table, column) not in known:
            report.violations.append(Violation(
                "personal-data", migration.filename,
                f"new column {table}.{column} of user-linked table {table} is not in the personal-data registry; "
                "declare it (personal or not)", migration.revision,
            ))
