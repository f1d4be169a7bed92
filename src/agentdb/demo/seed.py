"""Executing a demo plan: checks, the bulk-index path for analytics, one transaction."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from agentdb.connection import APPLICATION_NAME, Target, connection_failed, resolve
from agentdb.demo._loaders import _LOADERS, _METHODS, _Context
from agentdb.demo.plan import ACTOR, ANCHOR, TABLES, DemoReport, DemoScale, TableLoad, plan_demo
from agentdb.errors import DatabaseNotEmpty, NotAtHead, SeedFailed

# --------------------------------------------------------------------------------------------- execute


def _check_head(conn: psycopg.Connection[Any]) -> None:
    from alembic.script import ScriptDirectory

    from agentdb.runtime.config import make_config
    from agentdb.runtime.history import INTERNAL_SCHEMA, VERSION_TABLE

    heads = ScriptDirectory.from_config(make_config()).get_heads()
    revisions: list[str] = []
    exists = conn.execute("SELECT to_regclass(%s)", (f"{INTERNAL_SCHEMA}.{VERSION_TABLE}",)).fetchone()
    if exists and exists[0] is not None:
        revisions = [str(r[0]) for r in conn.execute(
            sql.SQL("SELECT version_num FROM {} ORDER BY 1").format(sql.Identifier(INTERNAL_SCHEMA, VERSION_TABLE))
        ).fetchall()]
    if sorted(revisions) != sorted(heads):
        raise NotAtHead(revisions, heads)


#: ``_check_empty`` counts at most this many rows (one more tells "more than"): a refusal should not scan a big table.
EMPTY_CHECK_LIMIT = 1000


def _check_empty(conn: psycopg.Connection[Any]) -> None:
    for table in (*TABLES, "audit_log"):
        row = conn.execute(sql.SQL("SELECT count(*) FROM (SELECT FROM {} LIMIT %s) AS s").format(
            sql.Identifier("public", table)), (EMPTY_CHECK_LIMIT + 1,)).fetchone()
        rows = int(row[0]) if row else 0
        if rows > EMPTY_CHECK_LIMIT:
            raise DatabaseNotEmpty(table, EMPTY_CHECK_LIMIT, more=True)
        if rows:
            raise DatabaseNotEmpty(table, rows)


def seed_demo(
    scale: DemoScale | str = "small",
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    seed: int = 42,
    users: int | None = None,
    analytics_rows: int | None = None,
    append: bool = False,
    progress: Callable[[TableLoad], None] | None = None,
) -> DemoReport:
    """Fill every application table with demo data, in one transaction.

    ``scale`` is ``small`` (200 users, 5 000 analytics rows: the tests),
    ``medium`` (2 000 / 100 000) or ``large`` (10 000 / 1 000 000), or a
    :class:`DemoScale`; ``users`` and ``analytics_rows`` override it.  The
    database must be at head (:class:`NotAtHead`) and hold no application rows
    (:class:`DatabaseNotEmpty`) unless ``append`` is set.  ``progress`` is
    called after each table, inside the transaction.  Returns the rows and time
    per table; ``audit_log`` counts the rows the audit triggers wrote.
    """
    plan = plan_demo(scale, users=users, analytics_rows=analytics_rows, seed=seed)
    target = resolve(database_url, data_dir)
    report = DemoReport(target.redacted(), plan.scale.name, plan.scale.users, plan.scale.analytics_rows, seed, append)
    started = time.perf_counter()
    try:
        conn = psycopg.connect(target.conninfo(), application_name=APPLICATION_NAME, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise connection_failed(target, exc) from None
    with conn:
        _month_partitions(conn, target)
        conn.execute("SELECT set_config('agentdb.actor', %s, true)", (ACTOR,))
        conn.execute("SET LOCAL lock_timeout = '5s'")
        # One seeding at a time per database: the emptiness check below stays true until we commit.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('agentdb seed-demo'))")
        _check_head(conn)
        if not append:
            _check_empty(conn)
        audit_before = _count(conn, "audit_log")
        ctx = _Context(conn, plan)
        for table in plan.tables:
            t0 = time.perf_counter()
            try:
                rows = _LOADERS[table](ctx)
            except psycopg.Error as exc:
                # The primary message only: DETAIL can quote row values.
                reason = exc.diag.message_primary or str(exc).strip().splitlines()[0]
                raise SeedFailed(table, exc.sqlstate, reason) from exc
            load = TableLoad(table, rows, time.perf_counter() - t0, _METHODS.get(table, "copy"))
            report.tables.append(load)
            if progress is not None:
                progress(load)
        roles = TableLoad("collaboration_roles", _count(conn, "collaboration_roles"), 0.0, "migration")
        audit = TableLoad("audit_log", _count(conn, "audit_log") - audit_before, 0.0, "trigger")
        report.tables += [roles, audit]
        conn.commit()
    report.seconds = time.perf_counter() - started
    return report


#: Demo events go back this far from the anchor (users joined up to two years before it).
_HISTORY_DAYS = 731


def _month_partitions(conn: psycopg.Connection[Any], target: Target) -> None:
    """Give partitioned analytics (migration 007) a partition for every month the demo fills, before loading.

    Its rows would otherwise all land in the DEFAULT partition.  The partitions
    are made by partition maintenance (its locks, its order), each committed
    on its own connection before the seeding transaction starts; they stay,
    empty, if the seeding is then refused -- as maintenance would have made them.
    """
    from agentdb.partitions import create_month_partitions, naming

    row = conn.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass('public.analytics')").fetchone()
    conn.rollback()
    if not row or not row[0]:
        return
    month, last = naming.month_start(ANCHOR - timedelta(days=_HISTORY_DAYS)), naming.month_start(ANCHOR)
    months = []
    while month <= last:
        months.append(month)
        month = naming.add_months(month, 1)
    create_month_partitions("public.analytics", months, database_url=target.url.render_as_string(hide_password=False),
                            lock_timeout=1.0, lock_wait=30.0)


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table))).fetchone()
    return int(row[0]) if row else 0
