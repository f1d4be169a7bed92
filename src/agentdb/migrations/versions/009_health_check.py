"""Health and integrity checks: where runs of ``agentdb health`` are recorded, and what monitoring may read.

Why: the seed documents' ``check_health()`` checks every core table.  The
checks themselves read the catalogue and statistics (``agentdb.check_health``);
what they need in the database is created here: ``agentdb.health_runs`` keeps
the status and value of each check of a recorded run (``agentdb health
--record``; never the evidence, which can name sessions and queries), so a
report says what changed since the last one, and the read-only role -- what a
monitoring login is given, with ``pg_monitor`` -- may read what the checks read
in agentdb's schema: the migration history, those runs, and the ledgers of the
``ops.*`` checks that exist by then (archived tables, online changes, managed
partitions, imports; none holds a personal value).  The downgrade revokes that
and drops the table.  The statements are :mod:`agentdb.health.ledger`'s, written
out (a test keeps them equal); ``IF NOT EXISTS`` keeps the runs an older
database recorded (``--record`` creates the table where 009 has not run).

:func:`check_health` is exposed here as the seed documents show; run as a
script this file prints the report (``--json``, ``--format prometheus``, the
options of ``agentdb health``) with Nagios exit codes; ``--apply`` brings the
database to this revision instead.

Revision ID: 009
Revises: 008
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic import op

revision: str = "009"
down_revision: str | None = "008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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
               "'check id -> {\"status\": ..., \"value\": ...}; no evidence (it can name sessions and queries)'")
    # The read-only role (a monitoring login is pg_monitor + that role) may read what the checks read in
    # agentdb's schema: the migration history, the recorded runs and the ledgers of the ops.* checks.
    op.execute("""
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
    """)


def downgrade() -> None:
    op.execute("""
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
    """)
    op.drop_table("health_runs", schema="agentdb")


def check_health(**options: Any) -> Any:
    """The seed documents' ``check_health()``: see :func:`agentdb.check_health`."""
    from agentdb.health import check_health as run

    return run(**options)


if __name__ == "__main__":
    from agentdb.health.script import main

    main(__file__)
