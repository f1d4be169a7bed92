"""Governance: checks over the migration files, run in CI and by ``agentdb check``.

No database is needed.  Each kind of check lives in its own module:

* :mod:`~agentdb.governance.files` -- file name matches the revision id
  (``NNN_slug.py`` with revision ``"NNN"``), ids sequential with no gap, a
  single head, a module docstring that says what (first line) and why (a
  body), and a downgrade that does something;
* :mod:`~agentdb.governance.squawk` -- the `squawk <https://squawkhq.com>`_
  PostgreSQL linter over each migration's offline SQL.  A rule a migration
  must break is named in that migration with the reason::

      squawk_exceptions = {"prefer-bigint-over-smallint": "popularity is 0..100 by a CHECK"}

  The exception is reported by ``agentdb check``; one without a reason, or one
  that squawk no longer raises, is itself a violation;
* :mod:`~agentdb.governance.personal_data` -- every new column of a
  user-linked table is declared in the personal-data registry.

:func:`check` runs them all and returns a :class:`CheckReport`; it never raises
for a violation.  ``agentdb check`` exits with :attr:`CheckReport.exit_code`:
0 when every check ran and passed, 7 on a violation, 9 when no violation was
found but a check could not run (squawk missing): a check that did not run is
neither a pass nor a violation of the migrations.

Every SQL check reads the offline SQL with PostgreSQL's own parser (pglast),
never with a hand-written scanner: see :mod:`agentdb.governance._sql`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from agentdb.governance._model import CheckReport, Exemption, Violation
from agentdb.governance.files import (
    MigrationFile,
    check_files,
    load_migrations,
    offline_sql_by_revision,
    versions_dir,
)
from agentdb.governance.personal_data import check_personal_data
from agentdb.governance.squawk import check_squawk

__all__ = ["CheckReport", "Exemption", "MigrationFile", "Violation", "check"]


def check(
    *,
    squawk: bool = True,
    personal_data: Callable[[], Iterable[tuple[str, str]]] | None = None,
) -> CheckReport:
    """Run every governance check over the project's migrations (``AGENTDB_SCRIPT_LOCATION`` moves them).

    ``personal_data`` replaces the registry lookup (the declared ``(table,
    column)`` pairs); by default :mod:`agentdb.governance.personal_data` finds it.
    """
    migrations = load_migrations(versions_dir())
    report = CheckReport(checked=tuple(m.filename for m in migrations))
    report.violations.extend(check_files(migrations))
    sql_by_revision, unrendered = offline_sql_by_revision(migrations)
    report.violations.extend(unrendered)
    if squawk:
        check_squawk(migrations, sql_by_revision, report)
    else:
        report.skipped.append("squawk: skipped on request")
    check_personal_data(migrations, sql_by_revision, report, personal_data)
    report.violations.sort(key=lambda v: (v.filename, v.rule, v.line or 0, v.message))
    return report
