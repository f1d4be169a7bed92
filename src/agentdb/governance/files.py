"""Checks on the migration files themselves: names, ids, heads, docstrings, downgrades.

Files are read with :mod:`ast`, never imported, so a broken migration is
reported instead of crashing the check, and nothing in it runs.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentdb.governance._model import Violation

__all__ = ["MigrationFile", "check_files", "load_migrations", "offline_sql_by_revision", "versions_dir"]

FILE_NAME = re.compile(r"^(?P<id>\d{3})_(?P<slug>[a-z0-9]+(?:_[a-z0-9]+)*)\.py$")
REVISION_ID = re.compile(r"^\d{3}$")
#: Lines of the template that say nothing about the change.
_BOILERPLATE = re.compile(r"^(Revision ID:|Revises:|Create Date:|Why: <say why this change is needed>)")


@dataclass
class MigrationFile:
    """What the checks need from one file in ``versions/``."""

    path: Path
    revision: str | None = None
    down_revision: str | tuple[str, ...] | None = None
    docstring: str | None = None
    #: ``None`` when there is no ``downgrade`` function at all.
    downgrade_empty: bool | None = None
    squawk_exceptions: dict[str, str] = field(default_factory=dict)
    #: Problems found while reading the file (syntax error, non-literal values).
    problems: list[str] = field(default_factory=list)

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def parents(self) -> tuple[str, ...]:
        if self.down_revision is None:
            return ()
        return (self.down_revision,) if isinstance(self.down_revision, str) else self.down_revision


def versions_dir() -> Path:
    """The project's ``versions/`` directory (``AGENTDB_SCRIPT_LOCATION`` moves it, as for every command)."""
    from alembic.script import ScriptDirectory

    from agentdb.runtime.config import make_config

    return Path(ScriptDirectory.from_config(make_config()).versions)


def _literal(node: ast.expr, name: str, migration: MigrationFile) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        migration.problems.append(f"{name} must be a literal")
        return None


def _is_empty_body(body: list[ast.stmt]) -> bool:
    for statement in body:
        if isinstance(statement, ast.Pass):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring or a bare ``...``
        return False
    return True


def _read(path: Path) -> MigrationFile:
    migration = MigrationFile(path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        migration.problems.append(f"syntax error on line {exc.lineno}: {exc.msg}")
        return migration
    migration.docstring = ast.get_docstring(tree)
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        elif isinstance(node, ast.FunctionDef) and node.name == "downgrade":
            migration.downgrade_empty = _is_empty_body(node.body)
            continue
        else:
            continue
        if name == "revision":
            found = _literal(value, name, migration)
            migration.revision = found if isinstance(found, str) else None
        elif name == "down_revision":
            found = _literal(value, name, migration)
            migration.down_revision = tuple(found) if isinstance(found, list | tuple) else found
        elif name == "squawk_exceptions":
            found = _literal(value, name, migration)
            if isinstance(found, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
                migration.squawk_exceptions = dict(found)
            else:
                migration.problems.append('squawk_exceptions must be a dict literal {"rule-name": "reason"}')
    return migration


def load_migrations(directory: Path) -> list[MigrationFile]:
    """Every ``*.py`` file of ``versions/``, in file-name order."""
    return [_read(path) for path in sorted(directory.glob("*.py")) if path.name != "__init__.py"]


def _check_one(migration: MigrationFile) -> list[Violation]:
    name, rev = migration.filename, migration.revision
    found: list[Violation] = [Violation("readable", name, problem, rev) for problem in migration.problems]
    match = FILE_NAME.match(name)
    if rev is None:
        found.append(Violation("file-name", name, "no literal revision = \"NNN\" in the file", rev))
    elif not REVISION_ID.match(rev):
        found.append(Violation("file-name", name, f"revision {rev!r} is not a three-digit id like \"007\"", rev))
    elif match is None:
        found.append(Violation("file-name", name, f"file name must be {rev}_<slug>.py (lower case, underscores)", rev))
    elif match.group("id") != rev:
        found.append(Violation("file-name", name, f"file name says {match.group('id')} but revision is {rev!r}", rev))
    doc = (migration.docstring or "").strip()
    lines = doc.splitlines()
    if not doc:
        found.append(Violation("docstring", name, "no module docstring: say what the migration does and why", rev))
    else:
        body = [line for line in lines[1:] if line.strip() and not _BOILERPLATE.match(line.strip())]
        if not body:
            found.append(Violation(
                "docstring", name, "the docstring has a first line but no body: say why the change is needed", rev,
            ))
    if migration.downgrade_empty is None:
        found.append(Violation("downgrade", name, "no downgrade() function", rev))
    elif migration.downgrade_empty:
        found.append(Violation("downgrade", name, "downgrade() is empty: write the statements that undo upgrade()",
                               rev))
    return found


def _check_history(migrations: list[MigrationFile]) -> list[Violation]:
    found: list[Violation] = []
    by_revision: dict[str, MigrationFile] = {}
    for migration in migrations:
        if migration.revision is None:
            continue
        if migration.revision in by_revision:
            found.append(Violation("sequence", migration.filename,
                                   f"revision {migration.revision} is also used by "
                                   f"{by_revision[migration.revision].filename}", migration.revision))
            continue
        by_revision[migration.revision] = migration
    numbered = sorted((int(r), m) for r, m in by_revision.items() if REVISION_ID.match(r))
    expected = 1
    for number, migration in numbered:
        if number != expected:
            missing = ", ".join(f"{n:03d}" for n in range(expected, number))
            found.append(Violation(
                "sequence", migration.filename, f"ids must be sequential: {missing} missing before {number:03d}",
                migration.revision,
            ))
        want = (f"{number - 1:03d}",) if number > 1 else ()
        if migration.parents != want:
            said = ", ".join(migration.parents) or "None"
            should = want[0] if want else "None"
            found.append(Violation("sequence", migration.filename,
                                   f"down_revision is {said}, must be {should} (the migration before it)",
                                   migration.revision))
        expected = number + 1
    for migration in by_revision.values():
        for parent in migration.parents:
            if parent not in by_revision:
                found.append(Violation("sequence", migration.filename,
                                       f"down_revision {parent} names no migration", migration.revision))
    referenced = {parent for m in by_revision.values() for parent in m.parents}
    heads = sorted(r for r in by_revision if r not in referenced)
    if by_revision and len(heads) != 1:
        shown = ", ".join(heads) or "none (a cycle)"
        for head in heads or sorted(by_revision):
            found.append(Violation("single-head", by_revision[head].filename,
                                   f"the history must have one head, it has {len(heads)}: {shown}", head))
            if not heads:
                break
    return found


def check_files(migrations: list[MigrationFile]) -> list[Violation]:
    """File names, ids, history shape, docstrings and downgrades of every migration."""
    found: list[Violation] = []
    for migration in migrations:
        found.extend(_check_one(migration))
    found.extend(_check_history(migrations))
    return found


def offline_sql_by_revision(migrations: list[MigrationFile]) -> tuple[dict[str, str], list[Violation]]:
    """Each readable migration's upgrade SQL alone (``agentdb sql PREV:REV``), and the ones that cannot render.

    Rendered once here for every SQL check (squawk, personal data), so a
    migration whose SQL cannot be rendered is reported once, whichever checks run.
    """
    from agentdb.runtime.offline import offline_sql

    sql_by_revision: dict[str, str] = {}
    found: list[Violation] = []
    for migration in migrations:
        rev = migration.revision
        if rev is None or migration.problems:
            continue
        previous = migration.parents[0] if len(migration.parents) == 1 else "base"
        try:
            sql_by_revision[rev] = offline_sql(f"{previous}:{rev}")
        except Exception as exc:  # any failure to render is reported, not raised: it runs the migration's code
            first = str(exc).strip().splitlines()
            found.append(Violation(
                "offline-sql", migration.filename,
                f"cannot render its offline SQL: {first[0] if first else type(exc).__name__}", rev,
            ))
    return sql_by_revision, found
