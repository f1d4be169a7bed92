"""``agentdb.health_runs``: stored results of earlier runs, so a report can say what changed since.

A run is recorded only when asked (``check_health(record=True)``, ``agentdb
health --record``): the checks themselves never write.  The recording is one
INSERT in a transaction of its own after the read-only run, plus the deletion
of runs beyond :data:`KEEP_RUNS`, and it holds one row per run (statuses and
values per check id, never evidence: evidence can name a session's query).

:data:`DDL` is the one definition; migration 009 carries the same statements
written out (:data:`MIGRATION_UPGRADE`, :data:`MIGRATION_DOWNGRADE`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from agentdb.health.model import HealthReport, Status
from agentdb.runtime.history import INTERNAL_SCHEMA

__all__ = ["DDL", "KEEP_RUNS", "MIGRATION_DOWNGRADE", "MIGRATION_UPGRADE", "OPS_LEDGERS", "RUNS_TABLE",
           "ensure_health_ledger", "previous_run", "record_run"]

RUNS_TABLE = "health_runs"
#: Runs kept; older ones are deleted by the recording that goes past it.
KEEP_RUNS = 1000
#: Serialises the creation of the ledger by concurrent first recorders.
_DDL_LOCK = 0x0A6E_0C09

#: The ledgers of other capabilities the ``ops.*`` checks read; none holds a personal value.  Erasure's
#: ``privacy_requests`` is not among them: it links users to their requests (010 decides who reads it).
OPS_LEDGERS = ("archived_tables", "online_changes", "partitioned_tables", "imports")

#: SELECT for the read-only role on what the checks read in agentdb's schema (those that exist).
_GRANTS = """
        DO $$
        DECLARE
            readonly name;
            ledger text;
        BEGIN
            IF to_regclass('agentdb.access_roles') IS NULL THEN
                RETURN;
            END IF;
            SELECT role_name INTO readonly FROM agentdb.access_roles WHERE purpose = 'readonly';
            IF readonly IS NULL THEN
                RETURN;
            END IF;
            EXECUTE format('GRANT USAGE ON SCHEMA agentdb TO %I', readonly);
            EXECUTE format('GRANT SELECT ON agentdb.alembic_version, agentdb.health_runs TO %I', readonly);
            -- migration_runs too: a dry run (which creates no history table) runs this as well.
            FOREACH ledger IN ARRAY ARRAY['migration_runs', 'archived_tables', 'online_changes', 'partitioned_tables',
                                          'imports'] LOOP
                IF to_regclass('agentdb.' || ledger) IS NOT NULL THEN
                    EXECUTE format('GRANT SELECT ON agentdb.%I TO %I', ledger, readonly);
                END IF;
            END LOOP;
        END
        $$
    """
_REVOKES = """
        DO $$
        DECLARE
            readonly name;
            ledger text;
        BEGIN
            IF to_regclass('agentdb.access_roles') IS NULL THEN
                RETURN;
            END IF;
            SELECT role_name INTO readonly FROM agentdb.access_roles WHERE purpose = 'readonly';
            IF readonly IS NULL THEN
                RETURN;
            END IF;
            EXECUTE format('REVOKE SELECT ON agentdb.alembic_version FROM %I', readonly);
            FOREACH ledger IN ARRAY ARRAY['migration_runs', 'archived_tables', 'online_changes', 'partitioned_tables',
                                          'imports'] LOOP
                IF to_regclass('agentdb.' || ledger) IS NOT NULL THEN
                    EXECUTE format('REVOKE SELECT ON agentdb.%I FROM %I', ledger, readonly);
                END IF;
            END LOOP;
            EXECUTE format('REVOKE USAGE ON SCHEMA agentdb FROM %I', readonly);
        END
        $$
    """

DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {INTERNAL_SCHEMA}",
    f"""
    CREATE TABLE IF NOT EXISTS {INTERNAL_SCHEMA}.{RUNS_TABLE} (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        started_at    timestamptz NOT NULL,
        duration_ms   double precision NOT NULL CHECK (duration_ms >= 0),
        status        text NOT NULL CHECK (status IN ('ok', 'warning', 'critical', 'unknown')),
        results       jsonb NOT NULL,
        db_user       text NOT NULL DEFAULT current_user,
        agentdb_version text NOT NULL
    )
    """,
    f"CREATE INDEX IF NOT EXISTS health_runs_started_at_idx ON {INTERNAL_SCHEMA}.{RUNS_TABLE} (started_at)",
    f"COMMENT ON TABLE {INTERNAL_SCHEMA}.{RUNS_TABLE} IS 'Recorded runs of agentdb health: status and value "
    "per check id, so that a report says what changed since the last recorded run'",
    f"COMMENT ON COLUMN {INTERNAL_SCHEMA}.{RUNS_TABLE}.results IS "
    "'check id -> {\"status\": ..., \"value\": ...}; no evidence (it can name sessions and queries)'",
    _GRANTS,
]

#: The body of migration 009's upgrade(), self-contained (no import of agentdb): :data:`DDL` written out.
MIGRATION_UPGRADE = '''
    op.execute("CREATE SCHEMA IF NOT EXISTS agentdb")
    op.execute("""
        CREATE TABLE IF NOT EXISTS agentdb.health_runs (
            id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            started_at    timestamptz NOT NULL,
            duration_ms   double precision NOT NULL CHECK (duration_ms >= 0),
            status        text NOT NULL CHECK (status IN ('ok', 'warning', 'critical', 'unknown')),
            results       jsonb NOT NULL,
            db_user       text NOT NULL DEFAULT current_user,
            agentdb_version text NOT NULL
        )
    """)
    op.execute("CREATE INDEX IF NOT EXISTS health_runs_started_at_idx ON agentdb.health_runs (started_at)")
    op.execute("COMMENT ON TABLE agentdb.health_runs IS 'Recorded runs of agentdb health: status and value "
               "per check id, so that a report says what changed since the last recorded run'")
    op.execute("COMMENT ON COLUMN agentdb.health_runs.results IS "
               "'check id -> {\\"status\\": ..., \\"value\\": ...}; no evidence (it can name sessions and queries)'")
    # The read-only role (a monitoring login is pg_monitor + that role) may read what the checks read in
    # agentdb's schema: the migration history, the recorded runs and the ledgers of the ops.* checks.
    op.execute("""@GRANTS@""")
'''.replace("@GRANTS@", _GRANTS)

#: The body of migration 009's downgrade().
MIGRATION_DOWNGRADE = '''
    op.execute("""@REVOKES@""")
    op.drop_table("health_runs", schema="agentdb")
'''.replace("@REVOKES@", _REVOKES)


def ensure_health_ledger(connection: sa.Connection) -> None:
    """Create ``agentdb.health_runs`` if missing, in the caller's transaction (the caller commits)."""
    exists = connection.execute(sa.text("SELECT to_regclass(:name) IS NOT NULL"),
                                {"name": f"{INTERNAL_SCHEMA}.{RUNS_TABLE}"}).scalar()
    if exists:
        return
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK})
    for statement in DDL:
        connection.execute(sa.text(statement))


def previous_run(connection: sa.Connection) -> tuple[datetime, dict[str, Status]] | None:
    """The newest recorded run: when, and the status per check id; None without one (or without access)."""
    readable = connection.execute(sa.text(
        "SELECT has_schema_privilege(n.nspname, 'USAGE') AND has_table_privilege(c.oid, 'SELECT') "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relname = :name"),
        {"schema": INTERNAL_SCHEMA, "name": RUNS_TABLE}).scalar()
    if not readable:
        return None
    row = connection.execute(sa.text(
        f"SELECT started_at, results FROM {INTERNAL_SCHEMA}.{RUNS_TABLE} ORDER BY id DESC LIMIT 1"  # noqa: S608
    )).first()
    if row is None:
        return None
    statuses: dict[str, Status] = {}
    for check_id, entry in (row[1] or {}).items():
        try:
            statuses[check_id] = Status[str(entry.get("status", "")).upper()]
        except KeyError:
            continue
    return row[0], statuses


def record_run(connection: sa.Connection, report: HealthReport) -> None:
    """Insert ``report`` (statuses and values only) and keep the newest :data:`KEEP_RUNS` runs; the caller commits."""
    from agentdb import __version__

    ensure_health_ledger(connection)
    results: dict[str, Any] = {r.id: {"status": r.status.label, "value": r.value} for r in report.results}
    connection.execute(sa.text(
        f"INSERT INTO {INTERNAL_SCHEMA}.{RUNS_TABLE} (started_at, duration_ms, status, results, agentdb_version) "  # noqa: S608
        "VALUES (:started, :ms, :status, CAST(:results AS jsonb), :version)"),
        {"started": report.started_at, "ms": round(report.seconds * 1000, 1), "status": report.status.label,
         "results": json.dumps(results), "version": __version__})
    connection.execute(sa.text(
        f"DELETE FROM {INTERNAL_SCHEMA}.{RUNS_TABLE} WHERE id <= "  # noqa: S608
        f"(SELECT id FROM {INTERNAL_SCHEMA}.{RUNS_TABLE} ORDER BY id DESC OFFSET :keep LIMIT 1)"),
        {"keep": KEEP_RUNS})
