"""Deep checks (``--deep``): amcheck verifies B-tree indexes and heaps, within a time budget.

``bt_index_check(index, heapallindexed => true)`` checks the ordering of every
page and that every heap tuple has its index entry; ``verify_heapam`` checks
every tuple header and TOAST pointer.  Both take ACCESS SHARE only (never the
SHARE lock of ``bt_index_parent_check``), so reads and writes go on; they read
every page, so they cost I/O: smallest relations first, and what the budget
does not reach is named.

amcheck is a contrib extension: a superuser runs ``CREATE EXTENSION amcheck``
once, and grants ``EXECUTE`` on its functions to the monitoring role.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from agentdb.health.registry import Context, Finding, Param, Unknown, check, count_label

_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'"


def _amcheck_function(ctx: Context, name: str) -> sql.Identifier:
    """The schema-qualified amcheck function ``name``, or :class:`Unknown` saying what is missing."""
    found = ctx.rows(
        "SELECT n.nspname, p.oid FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n "
        "ON n.oid = e.extnamespace JOIN pg_catalog.pg_proc p ON p.pronamespace = n.oid AND p.proname = %s "
        "WHERE e.extname = 'amcheck' ORDER BY p.pronargs DESC LIMIT 1", [name])
    if not found:
        raise Unknown("needs the amcheck extension: a superuser runs CREATE EXTENSION amcheck once")
    schema, oid = found[0]
    if not ctx.value("SELECT has_function_privilege(%s::oid, 'EXECUTE')", [oid]):
        raise Unknown(f"needs EXECUTE on {schema}.{name} (GRANT EXECUTE ON FUNCTION ... TO this role)")
    return sql.Identifier(schema, name)


def _verify(ctx: Context, relations: list[tuple[Any, ...]], call: Any, what: str) -> Finding:
    """Run ``call(oid)`` on each relation in its own savepoint until the budget is spent."""
    deadline = time.monotonic() + ctx.p("budget")
    previous_timeout = ctx.value("SELECT current_setting('statement_timeout')")
    corrupt: list[dict[str, Any]] = []
    skipped: list[str] = []
    checked = 0
    try:
        for oid, name, _pages in relations:
            left = deadline - time.monotonic()
            if left <= 0:
                skipped.append(name)
                continue
            ctx.value("SELECT set_config('statement_timeout', %s, true)", [f"{max(int(left * 1000), 1)}ms"])
            ctx.rows("SAVEPOINT agentdb_health_deep")
            try:
                problem = call(oid)
                ctx.rows("RELEASE SAVEPOINT agentdb_health_deep")
            except psycopg.Error as exc:
                ctx.rows("ROLLBACK TO SAVEPOINT agentdb_health_deep")
                state = exc.sqlstate or ""
                if state in ("57014", "55P03"):  # out of budget, or a lock it may not wait for
                    skipped.append(name)
                    continue
                primary = exc.diag.message_primary or str(exc).splitlines()[0]
                problem = f"[{state}] {primary}"
            checked += 1
            if problem:
                corrupt.append({what: name, "problem": problem[:300]})
    finally:
        ctx.value("SELECT set_config('statement_timeout', %s, true)", [previous_timeout])
    status = ctx.grade(len(corrupt))
    message = (f"{count_label(len(corrupt), what)} corrupt of {checked} checked"
               + (f"; {len(skipped)} not reached within the {ctx.p('budget'):.0f} s budget" if skipped else ""))
    evidence = corrupt + [{what: name, "problem": "not checked (budget)"} for name in skipped]
    return Finding(
        status, message, float(len(corrupt)), evidence,
        "" if not corrupt else "REINDEX INDEX CONCURRENTLY a corrupt index; for a corrupt heap, restore from "
        "backup or salvage rows (pg_surgery) with an expert; find the cause (storage, a collation change)",
        "" if not corrupt else "REINDEX CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and writes go on",
    )


@check("deep.btree_indexes", "B-tree indexes verified with amcheck (--deep)", unit="count", deep=True,
       critical=Param(1, "count", "corrupt indexes"),
       budget=Param(60.0, "seconds", "time allowed for all indexes"))
def btree_indexes(ctx: Context) -> Finding:
    function = _amcheck_function(ctx, "bt_index_check")
    indexes = ctx.rows(
        "SELECT i.indexrelid, n.nspname || '.' || c.relname, c.relpages FROM pg_catalog.pg_index i "  # noqa: S608
        "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_catalog.pg_am am ON am.oid = c.relam AND am.amname = 'btree' "
        "WHERE c.relkind = 'i' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't' AND " + _SCHEMAS
        + " ORDER BY c.relpages, 2")

    def call(oid: int) -> str:
        ctx.rows(sql.SQL("SELECT {}(%s::oid::regclass, true)").format(function), [oid])
        return ""

    return _verify(ctx, indexes, call, "index")


@check("deep.heap_tables", "Tables (heap and TOAST) verified with amcheck (--deep)", unit="count", deep=True,
       critical=Param(1, "count", "corrupt tables"),
       budget=Param(60.0, "seconds", "time allowed for all tables"))
def heap_tables(ctx: Context) -> Finding:
    function = _amcheck_function(ctx, "verify_heapam")
    tables = ctx.rows(
        "SELECT c.oid, n.nspname || '.' || c.relname, c.relpages FROM pg_catalog.pg_class c "  # noqa: S608
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' AND " + _SCHEMAS + " ORDER BY c.relpages, 2")

    def call(oid: int) -> str:
        found = ctx.rows(sql.SQL("SELECT count(*), min(msg) FROM {}(%s::oid::regclass, check_toast => true)")
                         .format(function), [oid])
        count, first = found[0]
        return f"{count} problems, e.g. {first}" if count else ""

    return _verify(ctx, tables, call, "table")
