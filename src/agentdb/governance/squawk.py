"""squawk over each migration's offline SQL, with exceptions declared in the migration.

The SQL is what ``agentdb sql PREV:REV`` prints for the migration alone.
Alembic's own statements on ``agentdb.alembic_version`` (create, insert,
update, delete) are not the migration's doing: they are blanked out before
linting (line numbers stay the same).

A migration that must break a rule says so at module level, with the reason::

    squawk_exceptions = {"prefer-bigint-over-smallint": "0..100 by a CHECK constraint; cannot overflow"}

The exception covers every occurrence of that rule in that migration's SQL.
An exception without a reason, or for a rule squawk does not raise there (any
more), is a violation: exceptions must stay true.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from agentdb.governance._model import CheckReport, Exemption, Violation
from agentdb.governance.files import MigrationFile

__all__ = ["check_squawk", "find_squawk", "lint", "strip_version_table"]

_VERSION_TABLE_STATEMENT = re.compile(
    r"^(?:CREATE TABLE|INSERT INTO|UPDATE|DELETE FROM|DROP TABLE)\s+agentdb\.alembic_version\b.*?;[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def find_squawk() -> str | None:
    """The squawk binary installed next to this Python (the ``squawk-cli`` wheel), else on ``PATH``."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.exists():
        return str(beside)
    return shutil.which("squawk")


def strip_version_table(sql: str) -> str:
    """Blank out Alembic's statements on its version table, keeping every other line where it was."""
    def blank(match: re.Match[str]) -> str:
        return "\n".join("-- (alembic version table)" for _ in match.group(0).splitlines())

    return _VERSION_TABLE_STATEMENT.sub(blank, sql)


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


def check_squawk(migrations: list[MigrationFile], report: CheckReport) -> dict[str, str]:
    """Lint every migration's upgrade SQL; returns that SQL by revision (for other checks to read)."""
    from agentdb import commands

    binary = find_squawk()
    if binary is None:
        report.violations.append(Violation(
            "squawk", "-", "squawk not found next to Python or on PATH; install squawk-cli (pip install squawk-cli)",
        ))
        return {}
    sql_by_revision: dict[str, str] = {}
    for migration in migrations:
        rev, name = migration.revision, migration.filename
        if rev is None or migration.problems:
            continue
        previous = migration.parents[0] if len(migration.parents) == 1 else "base"
        try:
            sql = commands.sql(f"{previous}:{rev}")
        except Exception as exc:  # any failure to render is reported, not raised
            first = str(exc).strip().splitlines()
            report.violations.append(Violation(
                "offline-sql", name, f"cannot render its offline SQL: {first[0] if first else type(exc).__name__}", rev,
            ))
            continue
        sql_by_revision[rev] = sql
        try:
            findings = lint(strip_version_table(sql), name.removesuffix(".py") + ".sql", binary)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            report.violations.append(Violation("squawk", name, str(exc), rev))
            continue
        counts = Counter(str(f["rule_name"]) for f in findings)
        lines = sql.splitlines()
        for finding in findings:
            rule = str(finding["rule_name"])
            if rule in migration.squawk_exceptions and migration.squawk_exceptions[rule].strip():
                continue
            line = int(finding["line"])
            statement = lines[line - 1].strip() if 0 < line <= len(lines) else ""
            report.violations.append(Violation(
                "squawk", name,
                f"{rule}: {finding.get('message', '')} {finding.get('help') or ''} "
                f"(offline SQL line {line}: {statement[:80]}); fix it, or declare "
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
    return sql_by_revision
