"""``check_health()``: run the checks in one read-only transaction and report.

How a run stays harmless on a busy production database:

* one ``REPEATABLE READ, READ ONLY`` transaction: a check cannot write, and all
  of them see one snapshot;
* ``statement_timeout`` and ``lock_timeout`` on every statement (``SET
  LOCAL``): a check waiting behind an ACCESS EXCLUSIVE lock gives up after
  ``lock_timeout`` and says so instead of queueing writers behind it;
* nothing above ACCESS SHARE: only SELECTs and catalogue functions; amcheck's
  ``bt_index_check`` and ``verify_heapam`` (``--deep``) take ACCESS SHARE too.
  The report lists the lock modes the run held (:attr:`HealthReport.locks`);
* each check in a savepoint of its own: a check that fails (a privilege, a
  timeout, a bug) is ``unknown`` with the reason, and the run goes on.

Recording (``record=True``) is the only write, in a transaction of its own
after the read-only one (:mod:`agentdb.health.ledger`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

import psycopg
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from agentdb.errors import HealthOptionInvalid
from agentdb.health import deep as _deep  # noqa: F401 - registers the checks
from agentdb.health import operations as _operations  # noqa: F401
from agentdb.health import schema as _schema  # noqa: F401
from agentdb.health import server as _server  # noqa: F401
from agentdb.health.ledger import previous_run, record_run
from agentdb.health.model import MAX_EVIDENCE, CheckResult, HealthReport, Status
from agentdb.health.registry import CHECKS, GROUPS, Check, Context, Unknown, parse_value

__all__ = ["check_health", "list_checks", "select_checks"]


def list_checks() -> list[Check]:
    """Every registered check, by group then id."""
    return sorted(CHECKS.values(), key=lambda c: (GROUPS.index(c.group), c.id))


def _matches(check: Check, names: Iterable[str]) -> bool:
    return any(check.id == n or check.group == n for n in names)


def select_checks(only: Iterable[str] | None = None, skip: Iterable[str] | None = None, *,
                  deep: bool = False) -> list[Check]:
    """The checks a run does: ``only`` and ``skip`` take ids or groups (``server``, ``schema.orphan_rows``)."""
    only, skip = list(only or []), list(skip or [])
    known = set(CHECKS) | set(GROUPS)
    unknown = [n for n in only + skip if n not in known]
    if unknown:
        raise HealthOptionInvalid(f"no check or group named {', '.join(map(repr, unknown))}")
    chosen = []
    for check in list_checks():
        if only and not _matches(check, only):
            continue
        if not only and check.deep and not deep:
            continue
        if _matches(check, skip):
            continue
        chosen.append(check)
    return chosen


def _parse_thresholds(thresholds: Mapping[str, str | float] | None) -> dict[str, float]:
    parsed = {}
    for key, raw in (thresholds or {}).items():
        check_id, _, name = key.rpartition(".")
        check = CHECKS.get(check_id)
        if check is None or name not in check.params:
            raise HealthOptionInvalid(f"no threshold {key!r}: thresholds are CHECK_ID.NAME, "
                                      "e.g. server.idle_in_transaction.warning=30s")
        parsed[key] = parse_value(raw, check.params[name].unit, key)
    return parsed


def _reason(exc: BaseException) -> str:
    """One line for a check that failed: SQLSTATE and primary message (never the DETAIL, which can quote rows)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, psycopg.Error):
        state = orig.sqlstate or ""
        primary = orig.diag.message_primary or str(orig).splitlines()[0]
        if state == "42501":
            return f"needs a privilege: {primary}"
        if state == "55P03":
            return f"blocked by another session's lock (lock_timeout): {primary}"
        if state == "57014":
            return f"took longer than statement_timeout: {primary}"
        return f"[{state}] {primary}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"internal error: {type(exc).__name__}: {text}"


def _run_one(ctx: Context, check: Check) -> CheckResult:
    ctx.current = check
    thresholds = {name: ctx.p(name) for name in ("warning", "critical") if name in check.params}
    started = time.perf_counter()
    ctx.rows("SAVEPOINT agentdb_health")
    try:
        finding = check.run(ctx)
        ctx.rows("RELEASE SAVEPOINT agentdb_health")
    except Exception as exc:
        ctx.rows("ROLLBACK TO SAVEPOINT agentdb_health")
        message = str(exc) if isinstance(exc, Unknown) else _reason(exc)
        return CheckResult(check.id, check.title, check.group, Status.UNKNOWN, f"unknown: {message}",
                           unit=check.unit, thresholds=thresholds, seconds=time.perf_counter() - started)
    finally:
        ctx.current = None
    return CheckResult(
        check.id, check.title, check.group, finding.status, finding.message, finding.value, check.unit, thresholds,
        finding.evidence[:MAX_EVIDENCE], len(finding.evidence), finding.remediation, finding.lock,
        time.perf_counter() - started,
    )


def check_health(
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    only: Iterable[str] | None = None,
    skip: Iterable[str] | None = None,
    thresholds: Mapping[str, str | float] | None = None,
    deep: bool = False,
    statement_timeout: float = 5.0,
    lock_timeout: float = 0.5,
    record: bool = False,
) -> HealthReport:
    """Run the health checks on a database and return the report (nothing is written unless ``record``).

    ``only``/``skip`` take check ids or groups (``server``, ``schema``, ``ops``,
    ``deep``); ``thresholds`` overrides ``{"CHECK_ID.NAME": value}`` with values
    in the parameter's unit (``"30s"``, ``"1GB"``, ``"90%"``, or a number);
    ``deep`` adds the amcheck checks.  With ``record`` the results (statuses
    and values) are stored in ``agentdb.health_runs``, and the next report says
    what changed since.
    """
    from agentdb.connection import redact_url
    from agentdb.migrate._common import connected

    checks = select_checks(only, skip, deep=deep)
    params = _parse_thresholds(thresholds)
    wall = time.perf_counter()
    with connected(database_url, data_dir) as (connection, target):
        connection.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        connection.execute(sa.text("SELECT set_config('statement_timeout', :v, true), "
                                   "set_config('lock_timeout', :l, true), "
                                   "set_config('application_name', 'agentdb health', true)"),
                           {"v": f"{int(statement_timeout * 1000)}ms", "l": f"{int(lock_timeout * 1000)}ms"})
        ctx = Context(connection, params, deep=deep, deep_budget=0.0)
        started_at: datetime = ctx.now
        version = str(ctx.value("SELECT current_setting('server_version')"))
        results = [_run_one(ctx, check) for check in checks]
        locks = sorted({str(r[0]) for r in ctx.rows(
            "SELECT DISTINCT mode FROM pg_catalog.pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation'")})
        previous = previous_run(connection)
        connection.rollback()
        report = HealthReport(
            database=redact_url(target.url), server_version=version, started_at=started_at,
            seconds=time.perf_counter() - wall, results=results, locks=locks,
            previous_run_at=previous[0] if previous else None,
        )
        if previous:
            for result in results:
                result.previous = previous[1].get(result.id)
        if record:
            with connection.begin():
                record_run(connection, report)
            report.recorded = True
    return report
