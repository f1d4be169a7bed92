"""Server checks: what general tools (check_postgres, pghero) watch, judged with this schema in mind.

Sessions are those of the checked database (``datname = current_database()``),
except where the limit is the server's (connections, wraparound, WAL kept for
replication).  Query texts are shown with their literals masked, never as
sent: a literal can be personal data.
"""

from __future__ import annotations

from typing import Any

from agentdb.health.model import Status
from agentdb.health.registry import Context, Finding, Param, Unknown, check, count_label, counted
from agentdb.runtime.locks import mask_literals

_MB = 1024.0**2
_GB = 1024.0**3


def _query(text: str | None) -> str:
    """A query for evidence: literals masked, whitespace folded, at most 120 characters."""
    shown = " ".join(mask_literals(text or "").split())
    return shown if len(shown) <= 120 else shown[:117] + "..."


def _seconds(value: Any) -> float:
    return round(float(value), 1) if value is not None else 0.0


@check("server.connections", "Connections against max_connections", unit="ratio",
       warning=Param(0.80, "ratio", "share of the usable connections in use"),
       critical=Param(0.95, "ratio"))
def connections(ctx: Context) -> Finding:
    used, limit, reserved = ctx.rows(
        "SELECT count(*) FILTER (WHERE backend_type = 'client backend'), "
        "current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int "
        "FROM pg_catalog.pg_stat_activity")[0]
    usable = max(int(limit) - int(reserved), 1)
    ratio = int(used) / usable
    per_db = ctx.rows(
        "SELECT coalesce(datname, '(none)'), count(*) FROM pg_catalog.pg_stat_activity "
        "WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC")
    status = ctx.grade(ratio)
    return Finding(
        status, f"{used} of {usable} usable connections in use ({ratio:.0%})", ratio,
        [{"database": d, "connections": int(n)} for d, n in per_db],
        "" if status == Status.OK else
        "put a pooler (PgBouncer) in front of the application, end idle sessions "
        "(pg_terminate_backend(pid)), or raise max_connections",
        "" if status == Status.OK else "none; raising max_connections needs a server restart",
    )


def _sessions(ctx: Context, where: str, seconds_expr: str, threshold: float) -> list[tuple[Any, ...]]:
    return ctx.rows(
        "SELECT pid, usename, application_name, state, " + seconds_expr + ", query, "  # noqa: S608 - constants
        "extract(epoch FROM now() - xact_start), backend_xmin IS NOT NULL "
        "FROM pg_catalog.pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
        "AND " + where + " AND " + seconds_expr + " >= %s ORDER BY 5 DESC",
        [threshold])


@check("server.long_running_queries", "Long-running queries", unit="seconds",
       warning=Param(300.0, "seconds", "a query running this long"), critical=Param(1800.0, "seconds"))
def long_running_queries(ctx: Context) -> Finding:
    rows = _sessions(ctx, "state = 'active'", "extract(epoch FROM now() - query_start)", ctx.p("warning"))
    worst = max((float(r[4]) for r in rows), default=0.0)
    evidence = [{"pid": r[0], "user": r[1], "application": r[2], "seconds": _seconds(r[4]), "query": _query(r[5])}
                for r in rows]
    return counted(
        ctx, evidence, f"{count_label(len(rows), 'query', 'queries')} running for at least "
        f"{ctx.p('warning'):.0f}s" + (f", the longest {worst:.0f}s" if rows else ""),
        value=worst,
        remedy="find out why; cancel one with SELECT pg_cancel_backend(pid); "
        "set statement_timeout for the role that runs it",
        lock="none (a cancelled query releases the locks it held)",
    )


@check("server.idle_in_transaction", "Sessions idle in transaction", unit="seconds",
       warning=Param(60.0, "seconds", "idle this long inside an open transaction"), critical=Param(600.0, "seconds"))
def idle_in_transaction(ctx: Context) -> Finding:
    rows = _sessions(ctx, "state IN ('idle in transaction', 'idle in transaction (aborted)')",
                     "extract(epoch FROM now() - state_change)", ctx.p("warning"))
    worst = max((float(r[4]) for r in rows), default=0.0)
    evidence = [{"pid": r[0], "user": r[1], "application": r[2], "state": r[3], "idle_seconds": _seconds(r[4]),
                 "transaction_seconds": _seconds(r[6]), "holds_back_vacuum": bool(r[7]),
                 "last_query": _query(r[5])} for r in rows]
    return counted(
        ctx, evidence, f"{count_label(len(rows), 'session')} idle in transaction for at least {ctx.p('warning'):.0f}s"
        + (f", the longest {worst:.0f}s" if rows else ""),
        value=worst,
        remedy="fix the client that leaves transactions open; end one with "
        "SELECT pg_terminate_backend(pid); set idle_in_transaction_session_timeout",
        lock="none; ending the session releases its locks and lets vacuum proceed",
    )


@check("server.blocked_sessions", "Sessions blocked by another session's lock", unit="seconds",
       warning=Param(10.0, "seconds", "waiting this long for a lock"), critical=Param(120.0, "seconds"))
def blocked_sessions(ctx: Context) -> Finding:
    rows = ctx.rows(
        "SELECT a.pid, a.usename, a.application_name, extract(epoch FROM now() - w.waitstart), a.query, "
        "pg_catalog.pg_blocking_pids(a.pid) "
        "FROM (SELECT pid, min(waitstart) AS waitstart FROM pg_catalog.pg_locks WHERE NOT granted "
        "      AND waitstart IS NOT NULL GROUP BY pid) w "
        "JOIN pg_catalog.pg_stat_activity a ON a.pid = w.pid "
        "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() "
        "AND extract(epoch FROM now() - w.waitstart) >= %s ORDER BY 4 DESC", [ctx.p("warning")])
    blockers: dict[int, dict[str, Any]] = {}
    for pid in {b for r in rows for b in (r[5] or [])}:
        info = ctx.rows(
            "SELECT pid, usename, application_name, state, extract(epoch FROM now() - xact_start), query "
            "FROM pg_catalog.pg_stat_activity WHERE pid = %s", [pid])
        if info:
            b = info[0]
            blockers[pid] = {"pid": b[0], "user": b[1], "application": b[2], "state": b[3],
                             "transaction_seconds": _seconds(b[4]), "query": _query(b[5])}
    worst = max((float(r[3]) for r in rows), default=0.0)
    evidence = [{"pid": r[0], "user": r[1], "application": r[2], "waiting_seconds": _seconds(r[3]),
                 "query": _query(r[4]), "blocked_by": [blockers.get(p, {"pid": p}) for p in (r[5] or [])]}
                for r in rows]
    roots = sorted({p for r in rows for p in (r[5] or [])})
    return counted(
        ctx, evidence, f"{count_label(len(rows), 'session')} waiting at least {ctx.p('warning'):.0f}s for a lock"
        + (f", blocked by pid {', '.join(map(str, roots))}" if rows else ""),
        value=worst,
        remedy="end or commit the blocking transaction (pg_terminate_backend(blocker pid)); "
        "give DDL a short lock_timeout",
        lock="none; ending the blocker releases its locks",
    )


@check("server.xid_wraparound", "Transaction-ID wraparound", unit="xids",
       warning=Param(1.0e9, "xids", "age of the oldest unfrozen transaction id"), critical=Param(1.5e9, "xids"))
def xid_wraparound(ctx: Context) -> Finding:
    databases = ctx.rows("SELECT datname, age(datfrozenxid) FROM pg_catalog.pg_database "
                         "WHERE datallowconn ORDER BY 2 DESC")
    worst = max((int(r[1]) for r in databases), default=0)
    tables = ctx.rows(
        "SELECT n.nspname || '.' || c.relname, age(c.relfrozenxid) FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm', 't') "
        "AND c.relfrozenxid <> '0' ORDER BY 2 DESC LIMIT 5")
    status = ctx.grade(worst)
    evidence = [{"database": d, "xid_age": int(a)} for d, a in databases[:5]]
    evidence += [{"table": t, "xid_age": int(a)} for t, a in tables]
    return Finding(
        status, f"oldest unfrozen transaction id is {worst:,} xids old "
        f"({worst / 2**31:.1%} of the 2^31 limit)", float(worst), evidence,
        "" if status == Status.OK else "VACUUM (FREEZE, VERBOSE) the oldest tables listed; look for what stops "
        "autovacuum (long transactions, replication slots, prepared transactions)",
        "" if status == Status.OK else "SHARE UPDATE EXCLUSIVE per table: blocks DDL and other vacuums, "
        "not reads or writes",
    )


@check("server.multixact_wraparound", "Multixact-ID wraparound", unit="xids",
       warning=Param(1.0e9, "xids", "age of the oldest multixact id"), critical=Param(1.5e9, "xids"))
def multixact_wraparound(ctx: Context) -> Finding:
    databases = ctx.rows("SELECT datname, mxid_age(datminmxid) FROM pg_catalog.pg_database "
                         "WHERE datallowconn ORDER BY 2 DESC")
    worst = max((int(r[1]) for r in databases), default=0)
    status = ctx.grade(worst)
    return Finding(
        status, f"oldest multixact id is {worst:,} multixacts old ({worst / 2**31:.1%} of the 2^31 limit)",
        float(worst), [{"database": d, "mxid_age": int(a)} for d, a in databases[:5]],
        "" if status == Status.OK else "VACUUM (FREEZE) the tables with the oldest relminmxid "
        "(row locks taken by several sessions at once create multixacts)",
        "" if status == Status.OK else "SHARE UPDATE EXCLUSIVE per table: blocks DDL, not reads or writes",
    )


@check("server.replication_slots", "Replication slots holding WAL", unit="bytes",
       warning=Param(1 * _GB, "bytes", "WAL kept for one slot"), critical=Param(10 * _GB, "bytes"))
def replication_slots(ctx: Context) -> Finding:
    rows = ctx.rows(
        "SELECT slot_name, slot_type, active, database, wal_status, pg_catalog.pg_wal_lsn_diff("
        "CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn() "
        "ELSE pg_catalog.pg_current_wal_lsn() END, restart_lsn) "
        "FROM pg_catalog.pg_replication_slots ORDER BY 6 DESC NULLS LAST")
    worst = max((float(r[5]) for r in rows if r[5] is not None), default=0.0)
    lost = [r[0] for r in rows if r[4] == "lost"]
    status = Status.CRITICAL if lost else ctx.grade(worst) if rows else Status.OK
    evidence = [{"slot": r[0], "type": r[1], "active": r[2], "database": r[3], "wal_status": r[4],
                 "retained_bytes": int(r[5]) if r[5] is not None else None} for r in rows]
    inactive = sum(1 for r in rows if not r[2])
    return Finding(
        status, f"{count_label(len(rows), 'slot')} ({inactive} inactive), the largest keeps "
        f"{worst / _MB:,.1f} MB of WAL" + (f"; lost: {', '.join(lost)}" if lost else ""), worst, evidence,
        "" if status == Status.OK else "reconnect the consumer of the slot, or drop a slot nobody uses: "
        "SELECT pg_drop_replication_slot('name'); set max_slot_wal_keep_size",
        "" if status == Status.OK else "none",
    )


@check("server.replication_lag", "Replication lag of standbys", unit="bytes",
       warning=Param(64 * _MB, "bytes", "WAL not yet replayed by a standby"), critical=Param(1 * _GB, "bytes"))
def replication_lag(ctx: Context) -> Finding:
    if ctx.value("SELECT pg_catalog.pg_is_in_recovery()"):
        lag = ctx.value("SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_receive_lsn(), "
                        "pg_catalog.pg_last_wal_replay_lsn())")
        worst = float(lag or 0)
        status = ctx.grade(worst)
        return Finding(status, f"this is a standby; {worst / _MB:,.1f} MB received but not replayed", worst,
                       [], "" if status == Status.OK else "look for long queries on the standby that conflict "
                       "with replay (max_standby_streaming_delay), and for I/O saturation",
                       "" if status == Status.OK else "none")
    rows = ctx.rows(
        "SELECT application_name, client_addr::text, state, sync_state, "
        "pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), "
        "coalesce(replay_lsn, flush_lsn, write_lsn, sent_lsn)), extract(epoch FROM replay_lag) "
        "FROM pg_catalog.pg_stat_replication ORDER BY 5 DESC NULLS FIRST")
    if rows and all(r[4] is None for r in rows):
        raise Unknown("needs pg_monitor (or pg_read_all_stats) to see the standbys' positions")
    worst = max((float(r[4]) for r in rows if r[4] is not None), default=0.0)
    status = ctx.grade(worst) if rows else Status.OK
    evidence = [{"standby": r[0], "address": r[1], "state": r[2], "sync": r[3],
                 "lag_bytes": int(r[4]) if r[4] is not None else None,
                 "replay_lag_seconds": _seconds(r[5]) if r[5] is not None else None} for r in rows]
    return Finding(
        status, (f"{count_label(len(rows), 'standby', 'standbys')}, the furthest behind by {worst / _MB:,.1f} MB"
                 if rows else "no standby is connected"), worst, evidence,
        "" if status == Status.OK else "check the standby's network, disk and replay conflicts; a lagging "
        "synchronous standby slows every commit",
        "" if status == Status.OK else "none",
    )


@check("server.cache_hit_ratio", "Buffer cache hit ratio", unit="ratio",
       warning=Param(0.90, "ratio", "share of block reads served from shared buffers (lower is worse)"),
       critical=Param(0.80, "ratio"),
       min_blocks=Param(100_000, "count", "block reads needed before the ratio means anything"))
def cache_hit_ratio(ctx: Context) -> Finding:
    hit, read = ctx.rows("SELECT blks_hit, blks_read FROM pg_catalog.pg_stat_database "
                         "WHERE datname = current_database()")[0]
    total = int(hit or 0) + int(read or 0)
    if total < ctx.p("min_blocks") or total == 0:
        return Finding(Status.OK, f"too little I/O to judge yet ({total:,} block reads since the statistics "
                       "were reset)", None)
    ratio = int(hit) / total
    status = ctx.grade(ratio, lower_is_worse=True)
    return Finding(
        status, f"{ratio:.2%} of {total:,} block reads served from shared buffers", ratio,
        [{"blocks_hit": int(hit), "blocks_read": int(read)}],
        "" if status == Status.OK else "raise shared_buffers if memory allows; look for sequential scans of "
        "big tables (missing indexes) in pg_stat_user_tables",
        "" if status == Status.OK else "none; shared_buffers needs a restart",
    )


def _user_tables(ctx: Context) -> list[tuple[Any, ...]]:
    """Statistics of every table of the user schemas, once per run."""
    def compute() -> list[tuple[Any, ...]]:
        return ctx.rows(
            "SELECT s.relid, s.schemaname || '.' || s.relname, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze, "
            "greatest(s.last_vacuum, s.last_autovacuum), greatest(s.last_analyze, s.last_autoanalyze), "
            "c.reltuples, c.relpages, extract(epoch FROM now() - greatest(s.last_analyze, s.last_autoanalyze)) "
            "FROM pg_catalog.pg_stat_user_tables s JOIN pg_catalog.pg_class c ON c.oid = s.relid "
            "WHERE c.relkind IN ('r', 'm')")
    result: list[tuple[Any, ...]] = ctx.cached("user_tables", compute)
    return result


@check("server.dead_tuples", "Dead tuples waiting for vacuum", unit="ratio",
       warning=Param(0.20, "ratio", "dead share of a table's tuples"), critical=Param(0.50, "ratio"),
       min_rows=Param(10_000, "count", "dead tuples a table needs before it counts"))
def dead_tuples(ctx: Context) -> Finding:
    found = []
    for _oid, name, live, dead, _mods, vacuumed, _analyzed, _rt, _rp, _age in _user_tables(ctx):
        live, dead = int(live or 0), int(dead or 0)
        if dead < ctx.p("min_rows") or live + dead == 0:
            continue
        ratio = dead / (live + dead)
        if ctx.grade(ratio) != Status.OK:
            found.append((ratio, {"table": name, "dead_tuples": dead, "live_tuples": live,
                                  "dead_ratio": round(ratio, 3),
                                  "last_vacuum": vacuumed.isoformat() if vacuumed else None}))
    found.sort(key=lambda f: -f[0])
    worst = found[0][0] if found else 0.0
    return counted(
        ctx, [f[1] for f in found],
        f"{count_label(len(found), 'table')} with more than {ctx.p('warning'):.0%} dead tuples"
        + (f", the worst {worst:.0%}" if found else ""),
        value=worst,
        remedy="VACUUM (ANALYZE) the tables listed; if autovacuum never gets there, lower "
        "autovacuum_vacuum_scale_factor for them or end the long transactions that hold it back",
        lock="SHARE UPDATE EXCLUSIVE: blocks DDL and other vacuums, not reads or writes",
    )


_AUTOVACUUM_OFF = r"""
SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
  AND EXISTS (SELECT 1 FROM unnest(c.reloptions) o WHERE o ~* '^autovacuum_enabled=(false|off|no|n|f|0)$')
ORDER BY 1
"""


@check("server.autovacuum", "Autovacuum is on and keeps up with every table", unit="count",
       warning=Param(1, "count", "tables autovacuum does not look after"),
       max_age=Param(7 * 86400.0, "seconds", "past autovacuum's own trigger point and not vacuumed this long"),
       min_rows=Param(1_000, "count", "dead tuples a table needs before it counts"))
def autovacuum(ctx: Context) -> Finding:
    """Autovacuum off (globally, or per table with ``autovacuum_enabled = false``), or a table past its
    trigger point (threshold + scale factor x rows, the server-wide settings) and not vacuumed for
    ``max_age``: dead tuples pile up and wraparound protection comes only as an emergency vacuum."""
    settings = dict(ctx.rows("SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)",
                             [["autovacuum", "track_counts", "autovacuum_vacuum_threshold",
                               "autovacuum_vacuum_scale_factor"]]))
    found: list[dict[str, Any]] = [{"setting": name, "value": settings[name], "problem": "autovacuum never runs"}
                                   for name in ("autovacuum", "track_counts") if settings.get(name) == "off"]
    disabled = {r[0] for r in ctx.rows(_AUTOVACUUM_OFF)}
    found += [{"table": name, "problem": "autovacuum_enabled = false"} for name in sorted(disabled)]
    watched = ctx.value("SELECT stats_reset FROM pg_catalog.pg_stat_database WHERE datname = current_database()")
    threshold = float(settings.get("autovacuum_vacuum_threshold", 50))
    scale = float(settings.get("autovacuum_vacuum_scale_factor", 0.2))
    for _oid, name, _live, dead, _mods, vacuumed, _analyzed, reltuples, _rp, _age in _user_tables(ctx):
        dead = int(dead or 0)
        if name in disabled or dead < max(ctx.p("min_rows"), threshold + scale * max(float(reltuples or 0), 0.0)):
            continue
        # Never vacuumed: judged from when the statistics started counting (a reset, or never).
        since = vacuumed if vacuumed is not None else watched
        if since is None or (ctx.now - since).total_seconds() >= ctx.p("max_age"):
            found.append({"table": name, "problem": "past autovacuum's trigger point, not vacuumed",
                          "dead_tuples": dead, "last_vacuum": vacuumed.isoformat() if vacuumed else None})
    finding = counted(
        ctx, found, f"autovacuum off or behind on {count_label(len(found), 'table or setting', 'tables or settings')}",
        remedy="turn it back on (ALTER TABLE t RESET (autovacuum_enabled); autovacuum = on); for a table it "
        "cannot keep up with, VACUUM it and lower its autovacuum_vacuum_scale_factor",
        lock="VACUUM: SHARE UPDATE EXCLUSIVE (not reads or writes); ALTER TABLE SET/RESET of a storage "
        "parameter: SHARE UPDATE EXCLUSIVE",
    )
    if any("setting" in f for f in found):
        finding.status = Status.CRITICAL
    return finding


@check("server.stale_statistics", "Tables whose planner statistics are stale", unit="count",
       warning=Param(1, "count", "stale tables"),
       changed=Param(0.5, "ratio", "rows changed since the last ANALYZE, as a share of the table"),
       min_rows=Param(1_000, "count", "rows changed before a table counts"))
def stale_statistics(ctx: Context) -> Finding:
    found = []
    for _oid, name, live, _dead, mods, _vacuumed, analyzed, reltuples, _rp, _age in _user_tables(ctx):
        mods = int(mods or 0)
        if mods < ctx.p("min_rows"):
            continue
        size = max(float(reltuples if reltuples is not None and reltuples >= 0 else live or 0), 1.0)
        if analyzed is None or mods / size >= ctx.p("changed"):
            found.append({"table": name, "changed_since_analyze": mods, "rows_estimate": int(size),
                          "last_analyze": analyzed.isoformat() if analyzed else None})
    return counted(
        ctx, found, f"{count_label(len(found), 'table')} with more than {ctx.p('changed'):.0%} changed since ANALYZE "
        "(or never analysed)",
        remedy="ANALYZE the tables listed; check that autovacuum runs (autovacuum = on, "
        "track_counts = on) and is not disabled on them",
        lock="SHARE UPDATE EXCLUSIVE: blocks DDL, not reads or writes",
    )


def _stats_trusted(ctx: Context, mods: Any, reltuples: Any, analyzed_age: Any) -> str | None:
    """Why a table's statistics cannot be trusted for a size estimate, or None."""
    if analyzed_age is None or reltuples is None or float(reltuples) < 0:
        return "never analysed"
    if int(mods or 0) > ctx.p("stale_ratio") * max(float(reltuples), 1.0):
        return f"{int(mods):,} rows changed since the last ANALYZE"
    if float(analyzed_age) > ctx.p("stale_age"):
        return f"last analysed {float(analyzed_age) / 86400:.0f} days ago"
    return None


_TABLE_WIDTH = """
SELECT c.oid, n.nspname || '.' || c.relname, c.reltuples, c.relpages,
       current_setting('block_size')::int,
       coalesce((SELECT (regexp_match(o, '^fillfactor=(\\d+)$'))[1]::int FROM unnest(c.reloptions) o
                 WHERE o LIKE 'fillfactor=%%'), 100),
       (SELECT sum((1 - s.null_frac) * s.avg_width) FROM pg_catalog.pg_stats s
         WHERE s.schemaname = n.nspname AND s.tablename = c.relname AND NOT s.inherited),
       (SELECT count(*) FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
         AND NOT a.attisdropped),
       (SELECT count(*) FROM pg_catalog.pg_stats s
         WHERE s.schemaname = n.nspname AND s.tablename = c.relname AND NOT s.inherited),
       coalesce(st.n_mod_since_analyze, 0), extract(epoch FROM now() - greatest(st.last_analyze, st.last_autoanalyze))
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_stat_all_tables st ON st.relid = c.oid
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
  AND CASE WHEN c.reltuples < 0 THEN pg_catalog.pg_relation_size(c.oid)  -- never analysed: relpages is 0
           ELSE c.relpages::float8 * current_setting('block_size')::int END >= %s
"""


@check("server.table_bloat", "Table bloat (estimated from the statistics)", unit="ratio",
       warning=Param(0.50, "ratio", "share of a table's pages that would be free after a rewrite"),
       critical=Param(0.80, "ratio"),
       min_size=Param(10 * _MB, "bytes", "tables smaller than this are not judged"),
       stale_ratio=Param(0.2, "ratio", "changes since ANALYZE above which the estimate is not trusted"),
       stale_age=Param(30 * 86400.0, "seconds", "an ANALYZE older than this is not trusted"))
def table_bloat(ctx: Context) -> Finding:
    found: list[tuple[float, dict[str, Any]]] = []
    untrusted = []
    for _oid, name, reltuples, relpages, block, fill, width, ncols, nstats, mods, age in ctx.rows(
            _TABLE_WIDTH, [ctx.p("min_size")]):
        why = _stats_trusted(ctx, mods, reltuples, age)
        if why is None and (width is None or int(nstats) < int(ncols)):
            why = "column statistics missing"
        if why is not None:
            untrusted.append({"table": name, "size_bytes": int(relpages) * int(block), "unknown": why})
            continue
        # Heap tuple: 23-byte header + null bitmap, aligned to 8, the data, a 4-byte line pointer.
        tuple_bytes = 24 + float(width) + 4
        usable = (int(block) - 24) * int(fill) / 100.0
        expected = max(1.0, float(reltuples) * tuple_bytes / usable)
        ratio = max(0.0, 1.0 - expected / max(int(relpages), 1))
        if ctx.grade(ratio) != Status.OK:
            found.append((ratio, {"table": name, "size_bytes": int(relpages) * int(block),
                                  "bloat_ratio": round(ratio, 3),
                                  "wasted_bytes": int(ratio * int(relpages) * int(block))}))
    found.sort(key=lambda f: -f[0])
    worst = found[0][0] if found else 0.0
    if found:
        status = ctx.grade(worst)
    elif untrusted:
        status = Status.UNKNOWN
    else:
        status = Status.OK
    message = (f"{count_label(len(found), 'table')} estimated more than {ctx.p('warning'):.0%} bloated"
               + (f", the worst {worst:.0%}" if found else ""))
    if untrusted:
        message += f"; {count_label(len(untrusted), 'table')} not judged: statistics too stale to trust (ANALYZE)"
    return Finding(
        status, message, worst, [f[1] for f in found] + untrusted,
        "" if status == Status.OK else "ANALYZE the tables not judged; rewrite a bloated table online "
        "(pg_repack, or agentdb's online rebuild) rather than VACUUM FULL",
        "" if status == Status.OK else "VACUUM FULL takes ACCESS EXCLUSIVE for the whole rewrite (blocks reads "
        "and writes); pg_repack takes it only for a moment at the swap",
    )


_INDEX_WIDTH = """
SELECT i.indexrelid, n.nspname || '.' || ic.relname, n.nspname || '.' || c.relname, ic.reltuples, ic.relpages,
       current_setting('block_size')::int,
       coalesce((SELECT (regexp_match(o, '^fillfactor=(\\d+)$'))[1]::int FROM unnest(ic.reloptions) o
                 WHERE o LIKE 'fillfactor=%%'), 90),
       (SELECT sum((1 - s.null_frac) * s.avg_width) FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname
           AND s.attname = a.attname AND NOT s.inherited
         WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey::int2[])),
       (SELECT count(*) FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_stats s ON s.schemaname = n.nspname
           AND s.tablename = c.relname AND s.attname = a.attname AND NOT s.inherited
         WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey::int2[])),
       i.indnatts, i.indexprs IS NOT NULL, coalesce(st.n_mod_since_analyze, 0),
       extract(epoch FROM now() - greatest(st.last_analyze, st.last_autoanalyze)), c.reltuples
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
LEFT JOIN pg_catalog.pg_stat_all_tables st ON st.relid = c.oid
WHERE ic.relkind = 'i' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
  AND ic.relpages::float8 * current_setting('block_size')::int >= %s
"""


@check("server.index_bloat", "B-tree index bloat (estimated from the statistics)", unit="ratio",
       warning=Param(0.50, "ratio", "share of an index's pages that a rebuild would free"),
       critical=Param(0.80, "ratio"),
       min_size=Param(10 * _MB, "bytes", "indexes smaller than this are not judged"),
       stale_ratio=Param(0.2, "ratio", "changes since ANALYZE above which the estimate is not trusted"),
       stale_age=Param(30 * 86400.0, "seconds", "an ANALYZE older than this is not trusted"))
def index_bloat(ctx: Context) -> Finding:
    found: list[tuple[float, dict[str, Any]]] = []
    untrusted = []
    for (_oid, name, table, reltuples, relpages, block, fill, width, nstats, natts, expr, mods, age,
         table_tuples) in ctx.rows(_INDEX_WIDTH, [ctx.p("min_size")]):
        why = _stats_trusted(ctx, mods, table_tuples, age)
        if why is None and (expr or width is None or int(nstats) < int(natts)):
            why = "an expression index or column statistics missing"
        if why is not None:
            untrusted.append({"index": name, "table": table, "size_bytes": int(relpages) * int(block),
                              "unknown": why})
            continue
        # Index tuple: 8-byte header + key data aligned to 8, a 4-byte line pointer; 16 bytes of special space.
        tuple_bytes = 8 + 8 * -(-float(width) // 8) + 4
        usable = (int(block) - 24 - 16) * int(fill) / 100.0
        expected = max(1.0, float(reltuples) * tuple_bytes / usable) + 1  # + the metapage
        ratio = max(0.0, 1.0 - expected / max(int(relpages), 1))
        if ctx.grade(ratio) != Status.OK:
            found.append((ratio, {"index": name, "table": table, "size_bytes": int(relpages) * int(block),
                                  "bloat_ratio": round(ratio, 3),
                                  "wasted_bytes": int(ratio * int(relpages) * int(block))}))
    found.sort(key=lambda f: -f[0])
    worst = found[0][0] if found else 0.0
    status = ctx.grade(worst) if found else (Status.UNKNOWN if untrusted else Status.OK)
    message = (f"{count_label(len(found), 'index', 'indexes')} estimated more than {ctx.p('warning'):.0%} "
               "bloated" + (f", the worst {worst:.0%}" if found else ""))
    if untrusted:
        message += f"; {count_label(len(untrusted), 'index', 'indexes')} not judged: statistics too stale to trust"
    return Finding(
        status, message, worst, [f[1] for f in found] + untrusted,
        "" if status == Status.OK else "REINDEX INDEX CONCURRENTLY the indexes listed (ANALYZE the tables of "
        "those not judged first)",
        "" if status == Status.OK else "REINDEX CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and writes go on; "
        "plain REINDEX blocks writes and reads that use the index",
    )


def _fk_covering_indexes(ctx: Context) -> set[int]:
    """Indexes that are the only ones covering some foreign key: dropping them would slow parent deletes."""
    def compute() -> set[int]:
        rows = ctx.rows(
            "SELECT array_agg(i.indexrelid) FROM pg_catalog.pg_constraint k "
            "JOIN pg_catalog.pg_index i ON i.indrelid = k.conrelid AND i.indpred IS NULL "
            " AND (i.indkey::int2[])[0:cardinality(k.conkey) - 1] @> k.conkey "
            " AND (i.indkey::int2[])[0:cardinality(k.conkey) - 1] <@ k.conkey "
            "WHERE k.contype = 'f' GROUP BY k.oid")
        return {int(r[0][0]) for r in rows if r[0] and len(r[0]) == 1}
    result: set[int] = ctx.cached("fk_covering_indexes", compute)
    return result


@check("server.unused_indexes", "Indexes never used since the statistics were reset", unit="count",
       warning=Param(1, "count", "unused indexes"),
       min_size=Param(1 * _MB, "bytes", "smaller indexes are not worth reporting"),
       min_age=Param(7 * 86400.0, "seconds", "statistics younger than this cannot tell unused from rarely used"))
def unused_indexes(ctx: Context) -> Finding:
    age = ctx.value(
        "SELECT extract(epoch FROM now() - coalesce(stats_reset, pg_catalog.pg_postmaster_start_time())) "
        "FROM pg_catalog.pg_stat_database WHERE datname = current_database()")
    covering = _fk_covering_indexes(ctx)
    rows = ctx.rows(
        "SELECT s.indexrelid, s.schemaname || '.' || s.indexrelname, s.schemaname || '.' || s.relname, "
        "c.relpages::int8 * current_setting('block_size')::int "
        "FROM pg_catalog.pg_stat_user_indexes s JOIN pg_catalog.pg_index i ON i.indexrelid = s.indexrelid "
        "JOIN pg_catalog.pg_class c ON c.oid = s.indexrelid "
        "WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisexclusion AND NOT i.indisprimary "
        "AND i.indisvalid AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid) "
        "AND c.relpages::float8 * current_setting('block_size')::int >= %s ORDER BY 4 DESC", [ctx.p("min_size")])
    candidates = [r for r in rows if int(r[0]) not in covering]
    evidence = [{"index": r[1], "table": r[2], "size_bytes": int(r[3])} for r in candidates]
    if candidates and float(age or 0) < ctx.p("min_age"):
        return Finding(
            Status.UNKNOWN, f"{count_label(len(candidates), 'index', 'indexes')} without a scan, but the "
            f"statistics cover only {float(age or 0) / 3600:.1f} h (need {ctx.p('min_age') / 86400:.0f} days)",
            float(len(candidates)), evidence)
    status = ctx.grade(len(candidates))
    return Finding(
        status, f"{count_label(len(candidates), 'index', 'indexes')} of at least "
        f"{ctx.p('min_size') / _MB:.0f} MB never scanned in {float(age or 0) / 86400:.0f} days "
        "(constraint indexes and the only index covering a foreign key excluded)",
        float(len(candidates)), evidence,
        "" if not candidates else "check the standbys' usage too (statistics are per server), then "
        "DROP INDEX CONCURRENTLY the ones nobody uses",
        "" if not candidates else "DROP INDEX CONCURRENTLY: SHARE UPDATE EXCLUSIVE on the table, reads and "
        "writes go on",
    )


@check("server.duplicate_indexes", "Duplicate and redundant indexes", unit="count",
       warning=Param(1, "count", "redundant indexes"))
def duplicate_indexes(ctx: Context) -> Finding:
    rows = ctx.rows(
        "WITH ix AS (SELECT i.indexrelid, i.indrelid, (i.indkey::int2[])[0:i.indnkeyatts - 1] AS keys, "
        "  i.indclass::text AS opclasses, i.indcollation::text AS collations, i.indisunique, "
        "  coalesce(pg_get_expr(i.indexprs, i.indrelid), '') AS exprs, "
        "  coalesce(pg_get_expr(i.indpred, i.indrelid), '') AS pred, c.relam, "
        "  EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid) AS is_constraint, "
        "  n.nspname || '.' || c.relname AS name, n.nspname || '.' || t.relname AS table_name "
        "  FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
        "  JOIN pg_catalog.pg_class t ON t.oid = i.indrelid "
        "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        # Indexes of partitions are clones of their parent's: judged once, on the parent.
        "  WHERE i.indisvalid AND NOT t.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "  AND n.nspname !~ '^pg_') "
        "SELECT a.name, b.name, a.table_name, "
        "  a.keys = b.keys "
        "FROM ix a JOIN ix b ON a.indrelid = b.indrelid AND a.indexrelid <> b.indexrelid AND a.relam = b.relam "
        " AND a.exprs = '' AND b.exprs = '' AND a.pred = b.pred "
        " AND b.keys[1:cardinality(a.keys)] = a.keys "
        " AND split_part(b.opclasses, ' ', 1) IS NOT NULL "
        " AND (string_to_array(b.opclasses, ' '))[1:cardinality(a.keys)] = string_to_array(a.opclasses, ' ') "
        " AND (string_to_array(b.collations, ' '))[1:cardinality(a.keys)] = string_to_array(a.collations, ' ') "
        "WHERE NOT a.is_constraint AND NOT (a.indisunique AND NOT b.indisunique) "
        " AND (a.keys <> b.keys OR b.is_constraint OR a.indexrelid > b.indexrelid) "
        "ORDER BY 3, 1")
    evidence = [{"index": r[0], "covered_by": r[1], "table": r[2], "kind": "duplicate" if r[3] else "prefix"}
                for r in rows]
    status = ctx.grade(len(rows))
    return Finding(
        status, f"{count_label(len(rows), 'index', 'indexes')} made redundant by another index (on the same "
        "columns, or a longer one that starts with them)", float(len(rows)), evidence,
        "" if not rows else "DROP INDEX CONCURRENTLY the redundant index (the one in 'index'); keep the one "
        "it is covered by",
        "" if not rows else "DROP INDEX CONCURRENTLY: SHARE UPDATE EXCLUSIVE on the table, reads and writes go on",
    )


@check("server.invalid_indexes", "Invalid indexes (a failed CREATE INDEX CONCURRENTLY)", unit="count",
       warning=Param(1, "count", "invalid indexes"))
def invalid_indexes(ctx: Context) -> Finding:
    rows = ctx.rows(
        "SELECT n.nspname || '.' || c.relname, n.nspname || '.' || t.relname, "
        "c.relpages::int8 * current_setting('block_size')::int "
        "FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_catalog.pg_class t ON t.oid = i.indrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT i.indisvalid AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_progress_create_index p "
        "  WHERE p.index_relid = i.indexrelid) ORDER BY 1")
    return counted(
        ctx, [{"index": r[0], "table": r[1], "size_bytes": int(r[2])} for r in rows],
        f"{count_label(len(rows), 'invalid index', 'invalid indexes')}: never used by queries, "
        "still maintained by every write",
        remedy="DROP INDEX CONCURRENTLY it, then CREATE INDEX CONCURRENTLY it again "
        "(or REINDEX INDEX CONCURRENTLY)",
        lock="SHARE UPDATE EXCLUSIVE on the table (CONCURRENTLY): reads and writes go on",
    )


_TYPE_MAX = {"smallint": 32767, "integer": 2147483647, "bigint": 9223372036854775807}


@check("server.sequence_exhaustion", "Sequences and identity columns running out of values", unit="ratio",
       warning=Param(0.75, "ratio", "share of the values used"), critical=Param(0.90, "ratio"))
def sequence_exhaustion(ctx: Context) -> Finding:
    rows = ctx.rows(
        "SELECT s.oid, n.nspname, s.relname, q.seqmax, q.seqmin, q.seqincrement, "
        "  pg_catalog.has_sequence_privilege(s.oid, 'SELECT'), tn.nspname, t.relname, a.attname, "
        "  format_type(a.atttypid, NULL), t.oid, "
        "  EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = t.oid AND i.indkey[0] = a.attnum) "
        "FROM pg_catalog.pg_class s JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace "
        "JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid "
        "LEFT JOIN pg_catalog.pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass "
        "  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
        "LEFT JOIN pg_catalog.pg_class t ON t.oid = d.refobjid "
        "LEFT JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace "
        "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        # agentdb's own bookkeeping (bigint identities of a few rows per run) is left out: a monitoring
        # role need not read it.
        "WHERE s.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'agentdb', "
        "'agentdb_archive')")
    from psycopg import sql

    found: list[tuple[float, dict[str, Any]]] = []
    unreadable = []
    for (_oid, schema, name, seqmax, seqmin, increment, readable, tschema, table, column, coltype, table_oid,
         indexed) in rows:
        current = None
        if readable:
            # Read as a relation (ACCESS SHARE); pg_sequences' last_value would lock it ROW EXCLUSIVE.
            current, called = ctx.rows(sql.SQL("SELECT last_value, is_called FROM {}").format(
                sql.Identifier(schema, name)))[0]
            if not called:
                continue  # never used
        elif table is not None and indexed and ctx.value("SELECT has_column_privilege(%s::oid, %s, 'SELECT')",
                                                         [table_oid, column]):
            # No privilege on the sequence: the column's highest value, read through its index, is as good.
            current = ctx.value(sql.SQL("SELECT max({}) FROM {}").format(
                sql.Identifier(column), sql.Identifier(tschema, table)))
            if current is None:
                continue
        else:
            unreadable.append(f"{schema}.{name}")
            continue
        limit = min(int(seqmax), _TYPE_MAX.get(coltype or "", int(seqmax)))
        if int(increment) < 0:
            used = (int(seqmax) - int(current)) / max(int(seqmax) - int(seqmin), 1)
        else:
            used = (int(current) - int(seqmin) + 1) / max(limit - int(seqmin) + 1, 1)
        if ctx.grade(used) != Status.OK:
            found.append((used, {"sequence": f"{schema}.{name}",
                                 "column": f"{tschema}.{table}.{column}" if table else None,
                                 "type": coltype, "last_value": int(current), "limit": limit,
                                 "used_ratio": round(used, 4)}))
    found.sort(key=lambda f: -f[0])
    worst = found[0][0] if found else 0.0
    if found:
        status = ctx.grade(worst)
    elif unreadable:
        raise Unknown(f"needs SELECT on {count_label(len(unreadable), 'sequence')} ({', '.join(unreadable[:3])})")
    else:
        status = Status.OK
    return Finding(
        status, f"{count_label(len(found), 'sequence')} past {ctx.p('warning'):.0%} of their values"
        + (f", the worst at {worst:.1%}" if found else ""), worst, [f[1] for f in found],
        "" if not found else "widen the column to bigint online (agentdb's online type change), then "
        "ALTER SEQUENCE ... AS bigint",
        "" if not found else "ALTER SEQUENCE takes a lock on the sequence only; a plain ALTER COLUMN TYPE "
        "rewrites the table under ACCESS EXCLUSIVE",
    )


#: setting -> (the value that is dangerous, status, why).
_RISKY = {
    "fsync": ("off", Status.CRITICAL, "a crash can corrupt the database"),
    "full_page_writes": ("off", Status.CRITICAL, "a crash can leave torn pages"),
    "zero_damaged_pages": ("on", Status.CRITICAL, "damaged pages are silently emptied"),
    "ignore_checksum_failure": ("on", Status.WARNING, "checksum failures are ignored"),
    "synchronous_commit": ("off", Status.WARNING, "the last commits can be lost in a crash (no corruption)"),
}


@check("server.risky_settings", "Settings that risk data loss or corruption", unit="count")
def risky_settings(ctx: Context) -> Finding:
    rows = ctx.rows("SELECT name, setting, source FROM pg_catalog.pg_settings WHERE name = ANY(%s)",
                    [list(_RISKY)])
    found = []
    status = Status.OK
    for name, setting, source in rows:
        bad, level, why = _RISKY[name]
        if setting == bad:
            found.append({"setting": name, "value": setting, "source": source, "risk": why})
            status = level if level > status else status
    return Finding(
        status, (f"{', '.join(f['setting'] + ' = ' + f['value'] for f in found)}" if found
                 else "fsync, full_page_writes and synchronous_commit are on"), float(len(found)), found,
        "" if not found else "set them back (ALTER SYSTEM SET fsync = on; SELECT pg_reload_conf()) unless this "
        "is a throwaway server",
        "" if not found else "none; a reload",
    )
