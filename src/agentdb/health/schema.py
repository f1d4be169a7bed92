"""Schema integrity, judged against agentdb's own declaration.

The declaration is the one the migrations are tested against: the Core models
(:mod:`agentdb.schema`), the functions, triggers, views and grants of
:mod:`agentdb.schema.entities`, the personal-data registry, and the migration
files with their recorded checksums.  Everything here reads the catalogue.

Unlike ``agentdb new --autogenerate``, nothing is *simulated*: alembic_utils
re-creates each function and trigger in a savepoint to read PostgreSQL's
rendering of it, which takes ACCESS EXCLUSIVE locks and cannot run in a READ
ONLY transaction.  Tables are compared by Alembic's own comparison (reflection
only); functions by their body (``prosrc``), language and settings; triggers by
``pg_get_triggerdef`` read back into timing, events, level and call; grants
from the ACLs, as :mod:`agentdb.runtime.autogenerate` reads them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from psycopg import sql

from agentdb.health.model import Status
from agentdb.health.registry import Context, Finding, Param, Unknown, check, count_label, counted
from agentdb.runtime.history import INTERNAL_SCHEMA, RUNS_TABLE, VERSION_TABLE

_VERSION = f"{INTERNAL_SCHEMA}.{VERSION_TABLE}"
_RUNS = f"{INTERNAL_SCHEMA}.{RUNS_TABLE}"
_AUTOGENERATE = "write the migration with `agentdb new --autogenerate \"...\"` and run `agentdb upgrade`"


def _script() -> Any:
    from agentdb.runtime.config import script_directory

    return script_directory()


def _heads(ctx: Context) -> tuple[str, ...]:
    from agentdb.runtime.validation import current_heads

    if ctx.exists(_VERSION):
        ctx.require_select(_VERSION)
    result: tuple[str, ...] = ctx.cached("heads", lambda: current_heads(ctx.connection))
    return result


# --- migrations ----------------------------------------------------------------------------------------------------

@check("schema.migrations_pending", "Migrations not applied yet", unit="count",
       warning=Param(1, "count", "pending migrations"))
def migrations_pending(ctx: Context) -> Finding:
    script = _script()
    at = _heads(ctx)
    heads = script.get_heads()
    pending = []
    for head in heads:
        for revision in script.iterate_revisions(head, at[0] if at else "base"):
            if revision.revision not in at:
                pending.append(revision)
    pending.sort(key=lambda r: r.revision)
    unknown = [r for r in at if script.get_revision(r) is None] if at else []
    status = Status.CRITICAL if unknown else ctx.grade(len(pending))
    where = ", ".join(at) or "base (no migration applied)"
    return Finding(
        status, (f"the database is at {where}, newer than these migration files" if unknown else
                 f"{count_label(len(pending), 'migration')} pending; the database is at {where}"),
        float(len(pending)),
        [{"revision": r.revision, "file": r.path.rsplit("/", 1)[-1]} for r in pending],
        "" if status == Status.OK else "run `agentdb upgrade` (or deploy the code that matches the database)",
        "" if status == Status.OK else "the locks each migration takes: `agentdb upgrade --dry-run` lists them",
    )


@check("schema.migrations_failed", "Migrations whose last attempt failed", unit="count",
       warning=Param(1, "count", "failed migrations"))
def migrations_failed(ctx: Context) -> Finding:
    if not ctx.ledger(_RUNS):
        return Finding(Status.OK, "no run history (agentdb.migration_runs) in this database", 0.0)
    at = set(_heads(ctx))
    rows = ctx.rows(
        "SELECT revision, direction, finished_at, sqlstate, error FROM ("
        " SELECT DISTINCT ON (revision) revision, direction, finished_at, sqlstate, error, success "
        " FROM agentdb.migration_runs ORDER BY revision, id DESC) last WHERE NOT success ORDER BY revision")
    failed = [r for r in rows if r[1] != "upgrade" or r[0] not in at]
    evidence = [{"revision": r[0], "direction": r[1], "at": r[2].isoformat(), "sqlstate": r[3],
                 "error": (r[4] or "")[:200]} for r in failed]
    status = ctx.grade(len(failed))
    return Finding(
        status, f"{count_label(len(failed), 'migration')} whose last attempt failed (rolled back)",
        float(len(failed)), evidence,
        "" if not failed else "read the error (`agentdb history`), fix the cause and run `agentdb upgrade` again",
        "" if not failed else "the migration's own locks: `agentdb upgrade --dry-run` lists them",
    )


@check("schema.migrations_changed", "Applied migrations whose file changed since", unit="count",
       warning=Param(1, "count", "changed migration files"), critical=Param(1, "count"))
def migrations_changed(ctx: Context) -> Finding:
    from agentdb.runtime.validation import validate_database

    if not ctx.ledger(_RUNS):
        return Finding(Status.OK, "no run history (agentdb.migration_runs): nothing to compare", 0.0)
    if ctx.exists(_VERSION):
        ctx.require_select(_VERSION)
    issues = [i for i in validate_database(ctx.connection, _script()) if i.fatal]
    return counted(
        ctx, [{"revision": i.revision, "kind": i.kind, "problem": i.message} for i in issues],
        f"{count_label(len(issues), 'applied migration')} changed or missing since applied",
        remedy="restore the original files; or, when the change is intended, `agentdb repair`",
        lock="none (repair writes a history row)",
    )


# --- drift: tables, functions, triggers, policies, grants ----------------------------------------------------------

_RELATIONS = """
SELECT c.relname, c.relkind, c.relispartition, c.relname ~ '__(online|old)_[0-9a-f]{8}$',
       EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = c.oid
               AND k.conname = 'agentdb_partition_bounds')
FROM pg_catalog.pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
"""


def _not_models(ctx: Context) -> set[str]:
    """Tables of ``public`` that are not models: partitions, online-change copies, detached month partitions."""
    from agentdb.partitions import naming

    rows = ctx.rows(_RELATIONS)
    parents = [r[0] for r in rows if r[1] == "p"]
    return {
        name for name, _kind, is_partition, online, draining in rows
        if is_partition or online or draining
        or any(naming.parse_partition_name(parent, name) is not None for parent in parents)
    }


def _describe(diff: Any) -> dict[str, Any]:
    """One Alembic diff as evidence: what changed, on which table and column."""
    if isinstance(diff, list):  # modify_* come as a list of tuples for one column
        first = diff[0]
        return {"change": first[0], "table": first[2], "column": first[3]}
    op = diff[0]
    obj = diff[1] if len(diff) > 1 else None
    if op in ("add_table", "remove_table"):
        return {"change": op, "table": getattr(obj, "name", str(obj))}
    if op in ("add_column", "remove_column"):
        return {"change": op, "table": diff[2], "column": getattr(diff[3], "name", str(diff[3]))}
    table = getattr(getattr(obj, "table", None), "name", None) or getattr(obj, "name", None)
    return {"change": op, "object": getattr(obj, "name", None) or str(obj)[:80], "table": table}


@check("schema.tables_drift", "Tables match the Core models", unit="count",
       warning=Param(1, "count", "differences"))
def tables_drift(ctx: Context) -> Finding:
    from alembic.autogenerate import compare
    from alembic.autogenerate.api import AutogenContext
    from alembic.operations.ops import UpgradeOps
    from alembic.runtime.migration import MigrationContext
    from alembic.runtime.plugins import Plugin
    from alembic.util import PriorityDispatcher

    from agentdb.schema import metadata

    excluded = _not_models(ctx)

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "table":
            return name not in excluded
        return parent_names.get("table_name") not in excluded

    context = MigrationContext.configure(ctx.connection, opts={
        "target_metadata": metadata, "compare_type": True, "compare_server_default": True,
        "include_schemas": False, "include_name": include_name,
        "version_table_schema": INTERNAL_SCHEMA, "version_table": VERSION_TABLE,
    })
    autogen = AutogenContext(context, metadata)
    # Alembic's own comparison only: the comparators third parties register globally (alembic_utils')
    # simulate entities with DDL, which a read-only transaction cannot run and a health check must not.
    autogen.comparators = PriorityDispatcher()
    Plugin.populate_autogenerate_priority_dispatch(autogen.comparators, include_plugins=["alembic.autogenerate.*"])
    ops = UpgradeOps(ops=[])
    compare._produce_net_changes(autogen, ops)
    diffs = ops.as_diffs()
    evidence = [_describe(d) for d in diffs]
    status = ctx.grade(len(diffs))
    return Finding(
        status, f"{count_label(len(diffs), 'difference')} between the tables and the Core models "
        "(managed partitions and online-change tables excluded)", float(len(diffs)), evidence,
        "" if not diffs else "a change made by hand: " + _AUTOGENERATE + ", or undo it",
        "" if not diffs else "depends on the change: `agentdb upgrade --dry-run` lists the locks",
    )


_BODY = re.compile(r"\$\$(.*)\$\$", re.DOTALL)
_CONFIG = re.compile(r"^\s*SET\s+(\w+)\s*=\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_LANGUAGE = re.compile(r"LANGUAGE\s+(\w+)", re.IGNORECASE)


def _declared_function(definition: str) -> tuple[str, str, list[str]]:
    definition = definition.replace("\\:", ":")  # alembic_utils escapes colons for sqlalchemy.text()
    body = _BODY.search(definition)
    language = _LANGUAGE.search(definition)
    head = definition.split("$$", 1)[0]
    config = [f"{m.group(1)}={m.group(2)}" for m in _CONFIG.finditer(head)]
    return (body.group(1) if body else "", (language.group(1) if language else "").lower(), sorted(config))


@check("schema.functions_drift", "Functions and views match the declaration", unit="count",
       warning=Param(1, "count", "differences"))
def functions_drift(ctx: Context) -> Finding:
    from agentdb.schema import entities

    live = {
        r[0]: (r[1], r[2], sorted(r[3] or []))
        for r in ctx.rows(
            "SELECT p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', p.prosrc, "
            "l.lanname, p.proconfig FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang "
            "WHERE p.pronamespace = 'public'::regnamespace AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d "
            " WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')")
    }
    evidence = []
    declared = set()
    for function in entities.functions():
        signature = function.signature.replace(" ", "")
        declared.add(signature)
        found = live.get(signature)
        if found is None:
            evidence.append({"function": f"public.{signature}", "problem": "missing"})
        elif found != _declared_function(function.definition):
            what = ("body" if found[0] != _declared_function(function.definition)[0] else "language or settings")
            evidence.append({"function": f"public.{signature}", "problem": f"{what} differs from the declaration"})
    evidence += [{"function": f"public.{name}", "problem": "not declared"} for name in sorted(set(live) - declared)]
    views = {r[0] for r in ctx.rows("SELECT relname FROM pg_catalog.pg_class WHERE relkind = 'v' "
                                    "AND relnamespace = 'public'::regnamespace")}
    wanted = {v.signature for v in entities.views()}
    evidence += [{"view": f"public.{v}", "problem": "missing"} for v in sorted(wanted - views)]
    evidence += [{"view": f"public.{v}", "problem": "not declared"} for v in sorted(views - wanted)]
    return counted(
        ctx, evidence, f"{count_label(len(evidence), 'function or view', 'functions or views')} differ from "
        "agentdb.schema.entities",
        remedy=_AUTOGENERATE + " (it replaces or drops them)",
        lock="CREATE OR REPLACE FUNCTION: a lock on the function only; dropping a trigger "
        "function takes ACCESS EXCLUSIVE on the tables whose triggers use it",
    )


_TRIGGER = re.compile(
    r"^(?:CREATE (?:CONSTRAINT )?TRIGGER \S+ )?(?P<timing>BEFORE|AFTER|INSTEAD OF) (?P<events>.+?) ON (?P<table>\S+) "
    r"(?:(?:FROM \S+ )?(?:NOT DEFERRABLE |DEFERRABLE )?(?:INITIALLY \w+ )?)?"
    r"(?:REFERENCING (?P<referencing>.+?) )?FOR EACH (?P<level>ROW|STATEMENT) "
    r"(?:WHEN \((?P<when>.*)\) )?EXECUTE (?:FUNCTION|PROCEDURE) (?P<call>.+)$",
    re.DOTALL,
)


def trigger_shape(definition: str) -> tuple[Any, ...] | None:
    """A trigger definition as (timing, events, table, referencing, level, when, call): order-free events."""
    match = _TRIGGER.match(" ".join(definition.split()))
    if match is None:
        return None
    events = frozenset(e.strip() for e in match.group("events").split(" OR "))
    return (match.group("timing"), events, match.group("table"), match.group("referencing") or "",
            match.group("level"), match.group("when") or "", match.group("call"))


def _live_triggers(ctx: Context) -> dict[tuple[str, str], tuple[str, str]]:
    """(table, trigger) -> (definition, tgenabled) of the user triggers on tables of ``public``."""
    def compute() -> dict[tuple[str, str], tuple[str, str]]:
        previous = ctx.value("SELECT current_setting('search_path')")
        ctx.value("SELECT set_config('search_path', 'pg_catalog', true)")  # fully qualified definitions
        try:
            rows = ctx.rows(
                "SELECT c.relname, t.tgname, pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled "
                "FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid "
                "WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal AND t.tgparentid = 0 "
                "AND NOT c.relispartition")
        finally:
            ctx.value("SELECT set_config('search_path', %s, true)", [previous])
        return {(r[0], r[1]): (r[2], r[3]) for r in rows}
    result: dict[tuple[str, str], tuple[str, str]] = ctx.cached("triggers", compute)
    return result


def _trigger_problems(ctx: Context, declared: list[Any]) -> list[dict[str, Any]]:
    live = _live_triggers(ctx)
    problems = []
    for trigger in declared:
        table = trigger.on_entity.split(".", 1)[1]
        found = live.get((table, trigger.signature))
        name = f"{trigger.signature} on public.{table}"
        if found is None:
            problems.append({"trigger": name, "problem": "missing"})
        elif trigger_shape(found[0]) != trigger_shape(trigger.definition):
            problems.append({"trigger": name, "problem": "differs from the declaration"})
        elif found[1] == "D":
            problems.append({"trigger": name, "problem": "disabled"})
        elif found[1] in ("R", "A"):
            problems.append({"trigger": name, "problem": "fires only in replica mode" if found[1] == "R"
                             else "enabled ALWAYS (also in replica mode)"})
    return problems


def _trigger_finding(ctx: Context, problems: list[dict[str, Any]], what: str, total: int) -> Finding:
    status = Status.CRITICAL if problems else Status.OK
    return Finding(
        status, (f"{count_label(len(problems), 'trigger')} of the {total} {what} missing, disabled or changed"
                 if problems else f"all {total} {what} present and enabled"), float(len(problems)), problems,
        "" if not problems else "ALTER TABLE ... ENABLE TRIGGER name for a disabled one; " + _AUTOGENERATE
        + " for a missing or changed one",
        "" if not problems else "ENABLE/DISABLE TRIGGER and CREATE TRIGGER take SHARE ROW EXCLUSIVE on the "
        "table: blocks writes, not reads",
    )


def _declared_triggers(kind: str) -> list[Any]:
    from agentdb.schema import entities

    names: dict[str, Callable[[str], bool]] = {
        "audit": lambda n: n.endswith("_audit"),
        "guard": lambda n: "_guard_" in n,
        "updated_at": lambda n: n.endswith("_set_updated_at"),
    }
    if kind == "other":
        return [t for t in entities.triggers() if not any(test(t.signature) for test in names.values())]
    return [t for t in entities.triggers() if names[kind](t.signature)]


@check("schema.audit_triggers", "Audit triggers present and enabled", unit="count")
def audit_triggers(ctx: Context) -> Finding:
    declared = _declared_triggers("audit")
    return _trigger_finding(ctx, _trigger_problems(ctx, declared), "audit triggers", len(declared))


@check("schema.guard_triggers", "Bulk-change guard triggers present and enabled", unit="count")
def guard_triggers(ctx: Context) -> Finding:
    declared = _declared_triggers("guard")
    return _trigger_finding(ctx, _trigger_problems(ctx, declared), "bulk-change guard triggers", len(declared))


@check("schema.updated_at_triggers", "updated_at triggers present and enabled", unit="count")
def updated_at_triggers(ctx: Context) -> Finding:
    declared = _declared_triggers("updated_at")
    return _trigger_finding(ctx, _trigger_problems(ctx, declared), "updated_at triggers", len(declared))


@check("schema.triggers_drift", "Other triggers match the declaration; no undeclared trigger", unit="count",
       warning=Param(1, "count", "differences"))
def triggers_drift(ctx: Context) -> Finding:
    from agentdb.schema import entities

    problems = _trigger_problems(ctx, _declared_triggers("other"))
    declared = {(t.on_entity.split(".", 1)[1], t.signature) for t in entities.triggers()}
    for table, name in sorted(set(_live_triggers(ctx)) - declared):
        if name.startswith("agentdb_online_"):
            continue  # an online change's capture trigger: the ops.online_* checks report those
        problems.append({"trigger": f"{name} on public.{table}", "problem": "not declared"})
    return counted(
        ctx, problems, f"{count_label(len(problems), 'trigger')} missing, disabled, changed or not declared",
        remedy=_AUTOGENERATE + " (it creates, replaces or drops them)",
        lock="CREATE/DROP TRIGGER: SHARE ROW EXCLUSIVE on the table, blocks writes",
    )


@check("schema.policies_drift", "No row-level security policy beyond the declaration", unit="count",
       warning=Param(1, "count", "undeclared policies"))
def policies_drift(ctx: Context) -> Finding:
    rows = ctx.rows("SELECT schemaname || '.' || tablename, policyname FROM pg_catalog.pg_policies "
                    "WHERE schemaname = 'public' ORDER BY 1, 2")
    return counted(
        ctx, [{"table": r[0], "policy": r[1]} for r in rows],
        f"{count_label(len(rows), 'policy', 'policies')} not declared in agentdb.schema.entities "
        "(it declares none)",
        remedy=_AUTOGENERATE + " (drops it), or declare it",
        lock="DROP POLICY: ACCESS EXCLUSIVE on the table for a moment",
    )


@check("schema.grants_drift", "Grants of agentdb's roles match the declaration", unit="count",
       warning=Param(1, "count", "differences"))
def grants_drift(ctx: Context) -> Finding:
    from agentdb.runtime.autogenerate import Comparison

    comparison = Comparison()
    roles = ctx.rows("SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)", [comparison.roles])
    if len(roles) < len(comparison.roles):
        missing = sorted(set(comparison.roles) - {r[0] for r in roles})
        return Finding(Status.CRITICAL, f"roles missing: {', '.join(missing)}", float(len(missing)),
                       [{"role": m, "problem": "missing"} for m in missing],
                       "run `agentdb upgrade` (migration 005 creates them)", "none")
    comparison.read(ctx.connection)
    evidence = [{"table": g.table, "role": g.role, "privilege": str(g.grant), "problem": "held, not declared"}
                for g in comparison.revokes()]
    evidence += [{"table": g.table, "role": g.role, "privilege": str(g.grant), "problem": "declared, not held"}
                 for g in comparison.grants()]
    return counted(
        ctx, evidence, f"{count_label(len(evidence), 'grant')} differ from agentdb.schema.entities "
        f"(roles {', '.join(comparison.roles)})",
        remedy=_AUTOGENERATE + " (it revokes and grants the difference)",
        lock="GRANT/REVOKE: a catalogue update, no lock that blocks reads or writes",
    )


# --- keys, constraints, orphans ------------------------------------------------------------------------------------

_FOREIGN_KEYS = """
SELECT k.oid, k.conname, k.conrelid, c.relname, n.nspname, k.confrelid, pc.relname, pn.nspname,
       k.conkey, k.confkey, k.convalidated, c.reltuples,
       (SELECT array_agg(a.attname ORDER BY x.ord) FROM unnest(k.conkey) WITH ORDINALITY x(attnum, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.attnum),
       (SELECT array_agg(a.attname ORDER BY x.ord) FROM unnest(k.confkey) WITH ORDINALITY x(attnum, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = x.attnum),
       EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgconstraint = k.oid AND t.tgenabled = 'D'),
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = k.conrelid AND i.indisvalid
                 AND i.indpred IS NULL AND i.indnkeyatts >= cardinality(k.conkey)
                 AND (i.indkey::int2[])[0:cardinality(k.conkey) - 1] @> k.conkey
                 AND (i.indkey::int2[])[0:cardinality(k.conkey) - 1] <@ k.conkey)
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class pc ON pc.oid = k.confrelid JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
WHERE k.contype = 'f' AND k.conparentid = 0 AND n.nspname = 'public'
ORDER BY c.relname, k.conname
"""


def _foreign_keys(ctx: Context) -> list[tuple[Any, ...]]:
    result: list[tuple[Any, ...]] = ctx.cached("foreign_keys", lambda: ctx.rows(_FOREIGN_KEYS))
    return result


@check("schema.fk_index_coverage", "Every foreign key is covered by an index", unit="count",
       warning=Param(1, "count", "foreign keys without an index"))
def fk_index_coverage(ctx: Context) -> Finding:
    missing = [
        {"table": f"{r[4]}.{r[3]}", "foreign_key": r[1], "columns": list(r[12]), "references": f"{r[7]}.{r[6]}"}
        for r in _foreign_keys(ctx) if not r[15]
    ]
    return counted(
        ctx, missing, f"{count_label(len(missing), 'foreign key')} without an index led by its columns "
        "(in any order; primary keys and composite indexes count)",
        remedy="CREATE INDEX CONCURRENTLY ON table (columns) for each; for a partitioned "
        "table create it ON ONLY the parent, CONCURRENTLY on each partition, then ATTACH",
        lock="CREATE INDEX CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and writes go on "
        "(a plain CREATE INDEX blocks writes for the whole build)",
    )


@check("schema.not_valid_constraints", "Constraints added NOT VALID and never validated", unit="count",
       warning=Param(1, "count", "unvalidated constraints"))
def not_valid_constraints(ctx: Context) -> Finding:
    rows = ctx.rows(
        "SELECT n.nspname || '.' || c.relname, k.conname, k.contype FROM pg_catalog.pg_constraint k "
        "JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT k.convalidated AND n.nspname = 'public' AND k.conparentid = 0 ORDER BY 1, 2")
    kinds = {"f": "foreign key", "c": "check"}
    return counted(
        ctx, [{"table": r[0], "constraint": r[1], "kind": kinds.get(r[2], r[2])} for r in rows],
        f"{count_label(len(rows), 'constraint')} NOT VALID: existing rows were never checked",
        remedy="ALTER TABLE ... VALIDATE CONSTRAINT name (schema.orphan_rows shows whether a "
        "foreign key would fail)",
        lock="VALIDATE CONSTRAINT: SHARE UPDATE EXCLUSIVE (a foreign key also ROW SHARE on the "
        "referenced table): reads and writes go on during the scan",
    )


@check("schema.orphan_rows", "Rows whose parent is gone", unit="count",
       warning=Param(1, "count", "orphan rows"), critical=Param(1, "count"),
       scan_max_rows=Param(200_000, "count", "child tables larger than this are scanned only when suspect or "
                           "with --deep"))
def orphan_rows(ctx: Context) -> Finding:
    total = 0
    evidence = []
    skipped = []
    for row in _foreign_keys(ctx):
        (_oid, name, _child_oid, child, child_schema, _parent_oid, parent, parent_schema, _ck, _pk, validated,
         reltuples, child_cols, parent_cols, triggers_disabled, _covered) = row
        suspect = not validated or triggers_disabled
        if not (suspect or ctx.deep or float(reltuples) <= ctx.p("scan_max_rows")):
            skipped.append(f"{child_schema}.{child}.{name}")
            continue
        ctx.require_select(f"{child_schema}.{child}", f"{parent_schema}.{parent}")
        not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(col))
                                        for col in child_cols)
        match = sql.SQL(" AND ").join(sql.SQL("p.{} = c.{}").format(sql.Identifier(pc), sql.Identifier(cc))
                                     for pc, cc in zip(parent_cols, child_cols, strict=True))
        orphans = int(ctx.value(sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {}) "
            "LIMIT 10001) o").format(sql.Identifier(child_schema, child), not_null,
                                     sql.Identifier(parent_schema, parent), match)))
        if orphans:
            total += orphans
            evidence.append({"table": f"{child_schema}.{child}", "foreign_key": name, "columns": list(child_cols),
                             "references": f"{parent_schema}.{parent}", "orphan_rows": orphans,
                             "why_possible": "NOT VALID" if not validated else
                             "its triggers are disabled" if triggers_disabled else
                             "written with triggers off (session_replication_role = replica?)"})
    status = ctx.grade(total)
    message = f"{total:,} rows whose parent does not exist, in {count_label(len(evidence), 'foreign key')}"
    if skipped:
        message += f"; {count_label(len(skipped), 'large valid key')} not scanned (--deep scans them)"
    return Finding(
        status, message, float(total), evidence,
        "" if not evidence else "restore the parents or DELETE the orphans (a DELETE ... WHERE NOT EXISTS per "
        "foreign key), then VALIDATE CONSTRAINT and ENABLE TRIGGER",
        "" if not evidence else "DELETE: ROW EXCLUSIVE on the child (blocks no reader or writer of other rows); "
        "the bulk-change guard refuses more than its limit of users per statement",
    )


# --- access ----------------------------------------------------------------------------------------------------------

#: Columns of agentdb's own tables that link to a person or unlock pseudonyms: who asked for erasure, the key.
_INTERNAL_PERSONAL = (("agentdb", "privacy_requests", "user_id"), ("agentdb", "privacy_settings", "pseudonym_key"))


@check("schema.analyst_personal_columns", "The analyst role cannot read personal columns", unit="count",
       critical=Param(1, "count", "personal columns the analyst can read"))
def analyst_personal_columns(ctx: Context) -> Finding:
    from agentdb.schema.entities import role_names
    from agentdb.schema.personal_data import Category, analyst_columns, registry

    analyst = role_names()["analyst"]
    if not ctx.value("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s)", [analyst]):
        raise Unknown(f"role {analyst} does not exist (migration 005 creates it)")
    allowed = {(t, c) for t, cols in analyst_columns().items() for c in cols}
    personal = [(d.table, d.column) for d in registry()
                if d.pii.category is not Category.NONE and (d.table, d.column) not in allowed]
    candidates = [("public", table, column) for table, column in personal] + list(_INTERNAL_PERSONAL)
    readable = []
    for schema, table, column in candidates:
        if not ctx.exists(f"{schema}.{table}"):
            continue
        if ctx.value("SELECT has_schema_privilege(%s, %s, 'USAGE') AND has_column_privilege(%s, %s, %s, 'SELECT')",
                     [analyst, schema, analyst, f"{schema}.{table}", column]):
            readable.append({"table": f"{schema}.{table}", "column": column, "role": analyst})
    return counted(
        ctx, readable, f"{analyst} can read {len(readable)} of {len(candidates)} protected columns (personal "
        "columns the registry keeps from analysts, and agentdb's erasure ledger)",
        remedy=f"REVOKE SELECT (column) ON table FROM {analyst} (and table-level SELECT); "  # noqa: S608
        "then `agentdb new --autogenerate` finds no drift",
        lock="REVOKE: a catalogue update, no lock that blocks reads or writes",
    )


@check("schema.pseudonym_key_private", "The erasure pseudonym key is readable by its owner only", unit="count",
       critical=Param(1, "count", "roles besides the owner that may read the key"))
def pseudonym_key_private(ctx: Context) -> Finding:
    """Whoever reads ``agentdb.privacy_settings`` can recompute every erased user's pseudonym from an id."""
    if not ctx.exists("agentdb.privacy_settings"):
        return Finding(Status.OK, "not in use: no pseudonym key (migration 010 creates it)")
    rows = ctx.rows(
        "SELECT DISTINCT CASE WHEN p.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(p.grantee) END, "
        "p.privilege_type FROM pg_catalog.pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) p "
        "WHERE c.oid = 'agentdb.privacy_settings'::regclass AND p.grantee <> c.relowner "
        "AND p.privilege_type = 'SELECT' "
        "UNION SELECT CASE WHEN p.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(p.grantee) END, "
        "'SELECT (' || a.attname || ')' FROM pg_catalog.pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) p "
        "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid WHERE a.attrelid = 'agentdb.privacy_settings'::regclass "
        "AND a.attname = 'pseudonym_key' AND p.grantee <> c.relowner AND p.privilege_type = 'SELECT' ORDER BY 1")
    return counted(
        ctx, [{"role": r[0], "privilege": r[1]} for r in rows],
        f"{count_label(len(rows), 'role')} besides its owner may read the pseudonym key "
        "(agentdb.privacy_settings: with it, erased users' pseudonyms link back to their ids)",
        remedy="REVOKE SELECT ON agentdb.privacy_settings FROM the roles listed; if the key was read, "
        "rotate it (pseudonyms of later erasures change)",
        lock="REVOKE: a catalogue update, no lock that blocks reads or writes",
    )


@check("schema.audit_log_append_only", "audit_log stays append-only", unit="count",
       critical=Param(1, "count", "roles that may change or delete audit rows"))
def audit_log_append_only(ctx: Context) -> Finding:
    if not ctx.exists("public.audit_log"):
        raise Unknown("public.audit_log does not exist (migration 005 creates it)")
    rows = ctx.rows(
        "SELECT CASE WHEN p.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(p.grantee) END, "
        "p.privilege_type, NULL::text FROM pg_catalog.pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) p "
        "WHERE c.oid = 'public.audit_log'::regclass AND p.grantee <> c.relowner "
        "AND p.privilege_type IN ('UPDATE', 'DELETE', 'TRUNCATE') "
        "UNION ALL SELECT CASE WHEN p.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(p.grantee) END, "
        "p.privilege_type, a.attname FROM pg_catalog.pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) p "
        "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
        "WHERE a.attrelid = 'public.audit_log'::regclass AND p.grantee <> c.relowner "
        "AND p.privilege_type = 'UPDATE' ORDER BY 1, 2")
    rules = ctx.rows("SELECT rulename FROM pg_catalog.pg_rules WHERE schemaname = 'public' "
                     "AND tablename = 'audit_log'")
    evidence = [{"role": r[0], "privilege": r[1] + (f" ({r[2]})" if r[2] else "")} for r in rows]
    evidence += [{"rule": r[0], "problem": "a rule can rewrite inserts into updates or deletes"} for r in rules]
    return counted(
        ctx, evidence, f"{count_label(len(evidence), 'grant or rule', 'grants or rules')} let others modify audit rows "
        "(UPDATE, DELETE, TRUNCATE or a rule; only its owner may)",
        remedy="REVOKE UPDATE, DELETE, TRUNCATE ON public.audit_log FROM the roles listed",
        lock="REVOKE: a catalogue update, no lock that blocks reads or writes",
    )
