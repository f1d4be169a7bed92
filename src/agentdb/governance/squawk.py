"""squawk over each migration's offline SQL, with exceptions declared in the migration.

The SQL is what ``agentdb sql PREV:REV`` prints for the migration alone.
Alembic's own statements on ``agentdb.alembic_version`` (create, insert,
update, delete), found by PostgreSQL's parser, are not the migration's doing:
they are blanked out before linting (line numbers stay the same).

squawk comes with agentdb (the ``squawk-cli`` wheel is a dependency) and is
found where that wheel put it, whatever ``PATH`` says.  When it cannot be
found the check does not pass and is no violation either: it is reported as
*unknown* and ``agentdb check`` exits 9.

A migration that must break a rule says so at module level, with the reason::

    squawk_exceptions = {"prefer-bigint-over-smallint": "0..100 by a CHECK constraint; cannot overflow"}

The exception covers every occurrence of that rule in that migration's SQL.
An exception without a reason, or for a rule squawk does not raise there (any
more), is a violation: exceptions must stay true.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pglast import ast

from agentdb.governance._model import CheckReport, Exemption, Violation
from agentdb.governance._sql import Statement, relation_name, statements
from agentdb.governance.files import MigrationFile
from agentdb.runtime.history import INTERNAL_SCHEMA, VERSION_TABLE

__all__ = ["NOT_INSTALLED", "check_squawk", "find_squawk", "lint", "strip_version_table"]

#: The distribution that ships the squawk binary (a runtime dependency of agentdb).
DISTRIBUTION = "squawk-cli"
#: What ``agentdb check`` reports when no squawk binary can be found (squawk-cli is a dependency of agentdb,
#: so this is a partial install; one line that fits 100 columns with its "not checked: " prefix).
NOT_INSTALLED = "squawk: not installed (pip install squawk-cli next to agentdb; --no-squawk skips it)"
_MARK = "/* (alembic version table) */"


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _installed_binaries() -> Iterator[Path]:
    """Where an installed squawk-cli put its binary, whatever ``PATH`` says.

    First the distribution's own file list (exact for any install: venv,
    ``--user``, ``--target``), then the scripts directory of the running
    interpreter, the directory of the interpreter itself, and the user
    scripts directory.
    """
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        for file in distribution.files or ():
            if file.name in ("squawk", "squawk.exe"):
                yield Path(str(distribution.locate_file(file))).resolve()
    directories = [sysconfig.get_path("scripts")]
    if sys.executable:
        directories.append(str(Path(sys.executable).parent))
    directories.append(sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("user")))
    for directory in directories:
        found = shutil.which("squawk", path=directory)
        if found:
            yield Path(found)


def find_squawk() -> str | None:
    """The squawk binary installed with agentdb (next to this Python), else the first on ``PATH``."""
    for path in _installed_binaries():
        if _runnable(path):
            return str(path)
    return shutil.which("squawk")


def _on_version_table(node: ast.Node | None) -> bool:
    """Whether ``node`` is Alembic's own statement on its version table (create, insert, update, delete, drop)."""
    wanted = f"{INTERNAL_SCHEMA}.{VERSION_TABLE}"
    if isinstance(node, ast.CreateStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
        return node.relation is not None and relation_name(node.relation) == wanted
    if isinstance(node, ast.DropStmt):
        names = [".".join(str(part.sval) for part in name) for name in node.objects or ()
                 if isinstance(name, tuple) and all(isinstance(part, ast.String) for part in name)]
        return bool(names) and all(name == wanted for name in names)
    return False


def strip_version_table(sql: str) -> str:
    """Blank out Alembic's statements on its version table, keeping every other line where it was.

    Statements are found by PostgreSQL's parser; each line of one (with its
    ``;``) becomes a comment, so squawk's line numbers still point into the
    SQL ``agentdb sql`` prints.
    """
    pieces: list[str] = []
    done = 0
    for statement in statements(sql):
        if not _on_version_table(statement.node):
            continue
        end = statement.end
        after = len(sql) - len(sql[end:].lstrip())
        if sql[after:after + 1] == ";":
            end = after + 1
        pieces.append(sql[done:statement.start])
        pieces.append("\n".join(_MARK for _ in sql[statement.start:end].split("\n")))
        done = end
    pieces.append(sql[done:])
    return "".join(pieces)


def lint(sql: str, filename: str, binary: str) -> list[dict[str, Any]]:
    """squawk's findings for ``sql`` (``rule_name``, ``message``, ``help``, 1-based ``line``)."""
    result = subprocess.run(
        [binary, "--reporter", "json", "--stdin-filepath", filename],
        input=sql, capture_output=True, text=True, check=False, timeout=120,
    )
    text = result.stdout.strip()
    try:
        findings = json.loads(text) if text else []
    except json.JSONDecodeError:
        first = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError(f"squawk failed: {first[0] if first else 'no output'}") from None
    for finding in findings:
        finding["line"] = int(finding.get("line", 0)) + 1  # squawk counts lines from 0
    return list(findings)


def _statement_at(found: list[Statement], line: int) -> str:
    """The statement (squeezed to one line, 80 characters) that spans ``line`` of the script."""
    for statement in found:
        if statement.line <= line <= statement.last_line:
            return " ".join(statement.text.split())[:80]
    return ""


def check_squawk(migrations: list[MigrationFile], sql_by_revision: dict[str, str], report: CheckReport) -> None:
    """Lint every migration's upgrade SQL (``sql_by_revision``); a missing squawk is reported as unknown."""
    binary = find_squawk()
    if binary is None:
        report.unknown.append(NOT_INSTALLED)
        return
    for migration in migrations:
        rev, name = migration.revision, migration.filename
        if rev is None or rev not in sql_by_revision:
            continue
        sql = sql_by_revision[rev]
        try:
            findings = lint(strip_version_table(sql), name.removesuffix(".py") + ".sql", binary)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            report.unknown.append(f"squawk: could not lint {name}: {exc}")
            continue
        counts = Counter(str(f["rule_name"]) for f in findings)
        parsed = statements(sql)
        for finding in findings:
            rule = str(finding["rule_name"])
            if rule in migration.squawk_exceptions and migration.squawk_exceptions[rule].strip():
                continue
            line = int(finding["line"])
            report.violations.append(Violation(
                "squawk", name,
                f"{rule}: {finding.get('message', '')} {finding.get('help') or ''} "
                f"(offline SQL line {line}: {_statement_at(parsed, line)}); fix it, or declare "
                f'squawk_exceptions = {{"{rule}": "<why>"}} in the migration',
                rev, line,
            ))
        for rule, reason in sorted(migration.squawk_exceptions.items()):
            if not reason.strip():
                report.violations.append(Violation(
                    "squawk-exception", name, f"squawk exception {rule!r} gives no reason", rev,
                ))
            elif rule not in counts:
                report.violations.append(Violation(
                    "squawk-exception", name,
                    f"squawk exception {rule!r} is declared but squawk does not raise it here; remove it", rev,
                ))
            else:
                report.exemptions.append(Exemption(name, rev, rule, reason.strip(), counts[rule]))
