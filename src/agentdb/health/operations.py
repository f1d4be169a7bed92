"""Data-operations checks: the ledgers of agentdb's other capabilities, read where they exist.

Each capability keeps its state in a table of the ``agentdb`` schema, created
when it is first used: ``partitioned_tables`` (partition maintenance),
``online_changes`` (online changes), ``imports`` (bulk import),
``archived_tables`` (rollback that loses nothing), ``privacy_requests``
(erasure).  A check whose ledger does not exist says "not in use" and is ok;
one whose ledger this role may not read says "unknown: needs SELECT on ...".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql

from agentdb.health.model import Status
from agentdb.health.registry import Context, Finding, Param, check, count_label, counted
from agentdb.partitions import naming

_HOUR = 3600.0
_DAY = 86400.0

#: The partitions of one table with their bounds as timestamptz, in one query (1,000 partitions, one round trip).
#: Managed tables are partitioned by a timestamp or date column; MINVALUE/MAXVALUE bounds come back NULL.
_PARTITIONS = r"""
SELECT c.oid, c.relname, pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', c.reltuples,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), $$FROM \('([^']*)'\)$$))[1]::timestamptz,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), $$TO \('([^']*)'\)$$))[1]::timestamptz
FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = %s
"""


def _managed(ctx: Context) -> list[dict[str, Any]]:
    """The managed partitioned tables with their partitions, bounds as timestamptz, read once."""
    def compute() -> list[dict[str, Any]]:
        if not ctx.ledger("agentdb.partitioned_tables"):
            return []
        managed = []
        for schema, table, premake, retention, oid in ctx.rows(
                "SELECT m.table_schema, m.table_name, m.premake, m.retention, "
                "(SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                " WHERE n.nspname = m.table_schema AND c.relname = m.table_name AND c.relkind = 'p') "
                "FROM agentdb.partitioned_tables m ORDER BY 1, 2"):
            partitions = []
            if oid is not None:
                for part_oid, name, is_default, reltuples, lower, upper in ctx.rows(_PARTITIONS, [oid]):
                    partitions.append({"oid": part_oid, "name": name, "default": bool(is_default),
                                       "rows_estimate": reltuples, "lower": lower, "upper": upper})
            managed.append({"schema": schema, "table": table, "premake": int(premake), "retention": retention,
                            "oid": oid, "partitions": partitions})
        return managed
    result: list[dict[str, Any]] = ctx.cached("managed_partitions", compute)
    return result


def _covered(partitions: list[dict[str, Any]], start: datetime, end: datetime) -> bool:
    for p in partitions:
        if p["default"]:
            continue
        lower_ok = p["lower"] is None or p["lower"] <= start
        upper_ok = p["upper"] is None or p["upper"] >= end
        if lower_ok and upper_ok:
            return True
    return False


_MAINTAIN = "run `agentdb partitions maintain` (and schedule it, e.g. every hour from cron)"
_MAINTAIN_LOCK = ("SHARE UPDATE EXCLUSIVE on the parent (reads and writes go on); ACCESS EXCLUSIVE on a new "
                  "partition and the DEFAULT partition only for the moment of the ATTACH")


@check("ops.partitions_premake", "Partitions exist ahead of now (premake)", unit="count")
def partitions_premake(ctx: Context) -> Finding:
    managed = _managed(ctx)
    if not managed:
        return Finding(Status.OK, "not in use: no table is managed by partition maintenance")
    status = Status.OK
    evidence: list[dict[str, Any]] = []
    fewest: int | None = None
    for m in managed:
        name = f"{m['schema']}.{m['table']}"
        if m["oid"] is None:
            evidence.append({"table": name, "problem": "registered but not a partitioned table any more"})
            status = Status.CRITICAL if status == Status.CRITICAL else Status.WARNING
            continue
        missing = []
        ahead = 0
        for k in range(m["premake"] + 1):
            start = naming.add_months(ctx.now, k)
            if _covered(m["partitions"], start, naming.add_months(start, 1)):
                ahead += 1 if k else 0
                continue
            missing.append(f"{start:%Y-%m}")
            if k == 0:
                status = Status.CRITICAL
        fewest = ahead if fewest is None else min(fewest, ahead)
        if missing:
            status = Status.CRITICAL if status == Status.CRITICAL else Status.WARNING
            evidence.append({"table": name, "premake": m["premake"], "months_missing": missing})
    return Finding(
        status, (f"{len(evidence)} of {count_label(len(managed), 'managed table')} miss partitions for the "
                 f"current or next {max(m['premake'] for m in managed)} months" if evidence else
                 f"partitions up to premake exist for {count_label(len(managed), 'managed table')}"),
        float(fewest or 0), evidence,
        "" if not evidence else _MAINTAIN, "" if not evidence else _MAINTAIN_LOCK,
    )


@check("ops.default_partition_empty", "DEFAULT partitions are empty", unit="count",
       warning=Param(1, "count", "rows in a DEFAULT partition"))
def default_partition_empty(ctx: Context) -> Finding:
    managed = _managed(ctx)
    if not managed:
        return Finding(Status.OK, "not in use: no table is managed by partition maintenance")
    evidence = []
    for m in managed:
        for p in m["partitions"]:
            if not p["default"]:
                continue
            ident = sql.Identifier(m["schema"], p["name"])
            where = {"table": f"{m['schema']}.{m['table']}", "partition": p["name"]}
            if not ctx.value("SELECT has_table_privilege(%s::oid, 'SELECT')", [p["oid"]]):
                # A monitoring role reads the parent, not each partition: the statistics say it (an estimate,
                # as fresh as the last transactions that wrote it).
                live = int(ctx.value("SELECT n_live_tup FROM pg_catalog.pg_stat_all_tables WHERE relid = %s",
                                     [p["oid"]]) or 0)
                if live:
                    evidence.append({**where, "rows_estimate": live})
            elif ctx.value(sql.SQL("SELECT EXISTS (SELECT 1 FROM ONLY {})").format(ident)):
                rows = int(ctx.value(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM ONLY {} LIMIT 100001) d")
                                     .format(ident)))
                evidence.append({**where, "rows": rows if rows <= 100000 else "more than 100000"})
    return counted(
        ctx, evidence, f"{count_label(len(evidence), 'DEFAULT partition')} holding rows: their months have no "
        "partition, and each new partition must move them out first",
        remedy=_MAINTAIN + ": it drains the DEFAULT partition into month partitions",
        lock=_MAINTAIN_LOCK,
    )


@check("ops.partition_retention", "Partitions past their retention are retired", unit="count",
       warning=Param(1, "count", "partitions kept past retention"))
def partition_retention(ctx: Context) -> Finding:
    managed = _managed(ctx)
    if not managed:
        return Finding(Status.OK, "not in use: no table is managed by partition maintenance")
    evidence = []
    with_retention = [m for m in managed if m["retention"] is not None]
    for m in with_retention:
        cutoff = ctx.value("SELECT now() - %s::interval", [m["retention"]])
        for p in m["partitions"]:
            if not p["default"] and p["upper"] is not None and p["upper"] <= cutoff:
                evidence.append({"table": f"{m['schema']}.{m['table']}", "partition": p["name"],
                                 "upper_bound": p["upper"].isoformat(), "retention": str(m["retention"])})
    return counted(
        ctx, evidence,
        (f"{count_label(len(evidence), 'partition')} older than the retention of their table still attached"
         if with_retention else "no managed table has a retention (partitions kept forever)"),
        remedy=_MAINTAIN + ": it archives, drops or detaches them as configured",
        lock="DETACH PARTITION CONCURRENTLY: SHARE UPDATE EXCLUSIVE on the parent (with a "
        "DEFAULT partition a plain DETACH: ACCESS EXCLUSIVE for a moment)",
    )


def _online_changes(ctx: Context) -> list[dict[str, Any]]:
    def compute() -> list[dict[str, Any]]:
        from agentdb.online import state

        if not ctx.ledger("agentdb.online_changes"):
            return []
        changes = []
        for cid, kind, schema, table, status, phase, _updated, age, rows_done in ctx.rows(
                "SELECT id, kind, table_schema, table_name, status, phase, updated_at, "
                "extract(epoch FROM now() - updated_at), rows_done FROM agentdb.online_changes "
                "WHERE status IN ('running', 'paused', 'failed', 'cut_over') ORDER BY id"):
            k1, k2 = state.table_lock_key(schema, table)
            driver = ctx.value(
                "SELECT pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) "
                "AND classid = %s AND objid = %s AND objsubid = 2 LIMIT 1", [k1, k2])
            changes.append({"id": cid, "kind": kind, "table": f"{schema}.{table}", "status": status,
                            "phase": phase, "idle_seconds": round(float(age), 1), "rows_done": int(rows_done),
                            "driver_pid": driver})
        return changes
    result: list[dict[str, Any]] = ctx.cached("online_changes", compute)
    return result


@check("ops.online_changes_stalled", "Online changes making progress", unit="seconds",
       warning=Param(10 * 60.0, "seconds", "a driven change without progress this long"),
       critical=Param(60 * 60.0, "seconds"))
def online_changes_stalled(ctx: Context) -> Finding:
    if not ctx.exists("agentdb.online_changes"):
        return Finding(Status.OK, "not in use: no online change was ever started here")
    changes = _online_changes(ctx)
    stalled = [c for c in changes if c["driver_pid"] is not None and c["status"] == "running"
               and c["idle_seconds"] >= ctx.p("warning")]
    worst = max((c["idle_seconds"] for c in stalled), default=0.0)
    return counted(
        ctx, stalled,
        f"{count_label(len(stalled), 'running online change')} idle for {ctx.p('warning') / 60:.0f} min or more "
        f"({count_label(len(changes), 'unfinished change')} in all)",
        value=worst,
        remedy="see `agentdb online status`: a throttle (replica lag), a lock wait or a blocked "
        "batch; the driver's pid is in the evidence",
        lock="none to look; pausing or aborting an online change takes no lock beyond its step",
    )


@check("ops.online_changes_abandoned", "No online change left behind by a crash", unit="count",
       warning=Param(1, "count", "unfinished changes nobody drives"))
def online_changes_abandoned(ctx: Context) -> Finding:
    if not ctx.exists("agentdb.online_changes"):
        return Finding(Status.OK, "not in use: no online change was ever started here")
    left = [c for c in _online_changes(ctx) if c["driver_pid"] is None and c["status"] in ("running", "failed")]
    return counted(
        ctx, left, f"{count_label(len(left), 'online change')} unfinished with no process driving it "
        "(its capture trigger still slows every write of the table)",
        remedy="`agentdb online resume ID` to finish it from its checkpoint, or "
        "`agentdb online abort ID` to remove what it built",
        lock="resume: the change's own steps (short ones, under lock_timeout); abort drops the "
        "capture trigger: SHARE ROW EXCLUSIVE on the table for a moment",
    )


def _import_driver(ctx: Context, table: str, sha256: str) -> int | None:
    """The pid holding the import's advisory lock (agentdb.bulk takes it for the whole import), or None."""
    from agentdb.bulk.ledger import lock_key

    key = lock_key(table, sha256)
    found = ctx.value(
        "SELECT pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) "
        "AND classid = %s AND objid = %s LIMIT 1", [(key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF])
    return int(found) if found is not None else None


@check("ops.imports_unfinished", "No bulk import left unfinished", unit="seconds",
       warning=Param(1 * _HOUR, "seconds", "an import failed, killed or stalled for this long"),
       critical=Param(24 * _HOUR, "seconds"))
def imports_unfinished(ctx: Context) -> Finding:
    """An import is unfinished when its row says ``failed``, or ``running`` while no process holds its lock
    (killed), or ``running`` and driven but without a committed batch for ``warning``: all resumable."""
    if not ctx.ledger("agentdb.imports"):
        return Finding(Status.OK, "not in use: no bulk import was ever run here")
    found = []
    for import_id, table, sha256, status, started, idle, rows_loaded in ctx.rows(
            "SELECT id, table_name, file_sha256, status, started_at, extract(epoch FROM now() - updated_at), "
            "rows_loaded FROM agentdb.imports WHERE status IN ('running', 'failed') "
            "AND now() - updated_at >= make_interval(secs => %s) ORDER BY id", [ctx.p("warning")]):
        driver = _import_driver(ctx, table, sha256) if status == "running" else None
        state = status if status == "failed" else "stalled" if driver is not None else "killed"
        found.append({"import": import_id, "table": table, "state": state, "driver_pid": driver,
                      "started_at": started.isoformat(), "idle_seconds": round(float(idle)),
                      "rows_loaded": int(rows_loaded)})
    return counted(
        ctx, found, f"{count_label(len(found), 'import')} failed, killed or stalled for at least "
        f"{ctx.p('warning') / _HOUR:g} h (resumable from their checkpoint)",
        value=max((float(f["idle_seconds"]) for f in found), default=0.0),
        remedy="run the same `agentdb import TABLE FILE` again: it resumes after the last committed batch "
        "(a stalled one: see what its driver_pid waits for in pg_stat_activity)",
        lock="the import's own: ROW EXCLUSIVE on the target table while it loads",
    )


@check("ops.archive_retention", "Rows kept in agentdb_archive past the retention", unit="count",
       warning=Param(1, "count", "archive tables past retention"),
       retention=Param(90 * _DAY, "seconds", "how long a dropped table's rows may be kept"))
def archive_retention(ctx: Context) -> Finding:
    if not ctx.ledger("agentdb.archived_tables"):
        return Finding(Status.OK, "not in use: no table was ever archived here")
    rows = ctx.rows(
        "SELECT table_schema || '.' || table_name, archive_table, revision, row_count, archived_at, "
        "extract(epoch FROM now() - archived_at) FROM agentdb.archived_tables "
        "WHERE restored_at IS NULL AND archived_at <= now() - make_interval(secs => %s) ORDER BY archived_at",
        [ctx.p("retention")])
    kept = sum(int(r[3]) for r in rows)
    return counted(
        ctx, [{"table": r[0], "archive_table": r[1], "revision": r[2], "rows": int(r[3]),
          "archived_at": r[4].isoformat(), "age_days": round(float(r[5]) / _DAY, 1)} for r in rows],
        f"{count_label(len(rows), 'archived table')} ({kept:,} rows) kept longer than "
        f"{ctx.p('retention') / _DAY:.0f} days; archived rows can hold personal data",
        remedy="upgrade to restore them, or drop the archive (`agentdb rollback --purge` drops "
        "rows for real) once nobody needs them",
        lock="DROP TABLE of the archive copy: ACCESS EXCLUSIVE on that copy only",
    )


_CONTRADICTIONS = """
SELECT count(*) FILTER (WHERE granted AND granted_at IS NULL),
       count(*) FILTER (WHERE granted AND revoked_at IS NOT NULL),
       count(*) FILTER (WHERE NOT granted AND granted_at IS NOT NULL AND revoked_at IS NULL),
       count(*) FILTER (WHERE revoked_at < granted_at),
       count(*) FILTER (WHERE granted_at > now() + interval '5 minutes' OR revoked_at > now() + interval '5 minutes')
FROM public.consent
"""
_KINDS = ("granted without a grant time", "granted and revoked at once", "withdrawn without a revocation time",
          "revoked before granted", "times in the future")


@check("ops.consent_contradictions", "Consent rows that contradict themselves", unit="count",
       critical=Param(1, "count", "contradictory consent rows"))
def consent_contradictions(ctx: Context) -> Finding:
    if not ctx.exists("public.consent"):
        return Finding(Status.OK, "no consent table (migration 005 creates it)")
    ctx.require_select("public.consent")
    counts = ctx.rows(_CONTRADICTIONS)[0]
    evidence = [{"contradiction": kind, "rows": int(n)} for kind, n in zip(_KINDS, counts, strict=True) if n]
    total = sum(int(n) for n in counts)
    status = ctx.grade(total)
    return Finding(
        status, f"{total:,} consent rows contradict themselves (whether consent holds cannot be told)",
        float(total), evidence,
        "" if not total else "find how they were written (consent_track_times trigger disabled? a CHECK "
        "dropped or NOT VALID?), then ask the users again or treat the consent as withdrawn",
        "" if not total else "UPDATE of the rows: ROW EXCLUSIVE; the bulk-change guard limits users per statement",
    )


@check("ops.erasure_deadlines", "Erasure and export requests within their legal deadline", unit="count",
       critical=Param(1, "count", "requests past their deadline"))
def erasure_deadlines(ctx: Context) -> Finding:
    """Open requests (:data:`agentdb.privacy.ledger.OPEN_STATUSES`) whose deadline has passed.

    Reads only the columns it needs (never ``user_id``), so a monitoring role may be given a column grant.
    """
    from agentdb.privacy.ledger import LEDGER, OPEN_STATUSES

    relation = f"agentdb.{LEDGER}"
    if not ctx.exists(relation):
        return Finding(Status.OK, "not in use: no privacy request ledger (migration 010 creates it)")
    ctx.require_select(relation, columns=("id", "kind", "status", "deadline"))
    rows = ctx.rows(
        "SELECT id, kind, status, deadline, extract(epoch FROM now() - deadline) FROM agentdb.privacy_requests "
        "WHERE status = ANY(%s) AND deadline < now() ORDER BY deadline", [list(OPEN_STATUSES)])
    return counted(
        ctx, [{"request": r[0], "kind": r[1], "status": r[2], "deadline": r[3].isoformat(),
               "overdue_days": round(float(r[4]) / _DAY, 1)} for r in rows],
        f"{count_label(len(rows), 'privacy request')} open past their legal deadline",
        remedy="finish them now (`agentdb privacy requests` lists them; `agentdb privacy erase USER_ID` or "
        "`agentdb privacy export USER_ID`); tell the data-protection officer about the delay",
        lock="erasure: ROW EXCLUSIVE on the rows of that one user",
    )
