"""Partition analytics by month, online: the application keeps reading and writing while it converts.

Why: ``analytics`` is the largest table and grows by the month; monthly RANGE
partitions on ``created_at`` (revision 005 already keys it ``(id,
created_at)`` for this) keep a month's query on one partition and let old
months be retired without a DELETE.  A plain conversion would rewrite the
table under ACCESS EXCLUSIVE for as long as the copy takes; this migration
converts it through agentdb's online-change engine instead:

1. ``agentdb.online_changes`` (the engine's state) and
   ``agentdb.partitioned_tables`` (what partition maintenance keeps ahead)
   are created, written out below so that this file alone says what it does;
2. the engine builds the partitioned table beside ``analytics`` -- a partition
   for every month that holds rows, ``premake`` months ahead (4) and a DEFAULT
   one; indexes created on the empty table, so never a blocking build -- and
   a trigger captures every write to ``analytics`` from then on;
3. rows are copied in key-ordered batches, each committed with its
   checkpoint; foreign keys are added NOT VALID and validated per partition;
   the copy is verified (count and checksum per key range);
4. the cut-over swaps the tables in one short transaction under a short
   ``lock_timeout`` (retried with jitter; the blocker is named if it gives
   up), and the table is registered with partition maintenance.

Steps 2-4 run outside this migration's transaction: the DDL of step 1 is
committed first, and the revision is recorded only when the change is
complete.  After a crash, ``agentdb upgrade`` (or running this file again)
carries on from the last checkpoint; ``agentdb online status`` shows where it
is and ``agentdb online abort analytics`` undoes it, leaving ``analytics`` as
it was.  The downgrade is the same engine the other way (``unpartition``):
back to one plain table with every row, online as well.

Run as a script, as the seed documents show (``python versions/007_partitioning.py``),
it applies this revision (and what comes before it) with a progress bar.

Revision ID: 007
Revises: 006
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from agentdb import online

revision: str = "007"
down_revision: str | None = "006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

squawk_exceptions = {
    "prefer-bigint-over-int": "online_changes.step counts the steps of one phase, batch_size is capped at 100,000 "
    "rows, client_pid/backend_pid are operating-system process ids (32-bit by nature); partitioned_tables.premake "
    "is CHECKed to 0-120 months: none can approach 2^31",
}

#: The table converted, its partition key, and how many months ahead of the current one get a partition.
TABLE = "analytics"
COLUMN = "created_at"
PREMAKE = 4

#: The engine's state (``agentdb.online.state.DDL``), as of this revision.
_ONLINE_CHANGES_DDL = [
    "CREATE SCHEMA IF NOT EXISTS agentdb",
    """
    CREATE TABLE IF NOT EXISTS agentdb.online_changes (
        id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        token              text NOT NULL UNIQUE CHECK (token ~ '^[0-9a-f]{8}$'),
        kind               text NOT NULL,
        table_schema       text NOT NULL,
        table_name         text NOT NULL,
        status             text NOT NULL CHECK (status IN
                               ('running', 'paused', 'failed', 'cut_over', 'completed', 'aborted')),
        phase              text NOT NULL,
        step               integer NOT NULL DEFAULT 0 CHECK (step >= 0),
        requested          text CHECK (requested IN ('pause', 'abort')),
        checkpoint         jsonb,
        rows_done          bigint NOT NULL DEFAULT 0 CHECK (rows_done >= 0),
        rows_estimated     bigint,
        batch_size         integer,
        waiting            text,
        timings            jsonb NOT NULL DEFAULT '{}'::jsonb,
        lock_hold_ms       double precision,
        design             jsonb NOT NULL,
        settings           jsonb NOT NULL,
        error              text,
        db_user            text NOT NULL DEFAULT current_user,
        os_user            text,
        host               text,
        client_pid         integer,
        backend_pid        integer,
        revision           text,
        migration_file     text,
        migration_checksum text CHECK (migration_checksum ~ '^[0-9a-f]{64}$'),
        created_at         timestamptz NOT NULL DEFAULT now(),
        updated_at         timestamptz NOT NULL DEFAULT now(),
        finished_at        timestamptz
    )
    """,
    "CREATE UNIQUE INDEX IF NOT EXISTS online_changes_one_per_table_key ON agentdb.online_changes "
    "(table_schema, table_name) WHERE status IN ('running', 'paused', 'failed', 'cut_over')",
    "COMMENT ON TABLE agentdb.online_changes IS 'Online changes (agentdb.online): phase, checkpoint and "
    "progress of each, so that they resume after a crash'",
]

#: Partition maintenance's registry (``agentdb.partitions.catalog.CATALOG_DDL``), as of this revision.
_PARTITIONED_TABLES_DDL = [
    """
    CREATE TABLE IF NOT EXISTS agentdb.partitioned_tables (
        table_schema       text NOT NULL,
        table_name         text NOT NULL,
        column_name        text NOT NULL,
        partition_interval interval NOT NULL DEFAULT '1 month' CHECK (partition_interval = interval '1 month'),
        premake            integer NOT NULL DEFAULT 4 CHECK (premake BETWEEN 0 AND 120),
        retention          interval CHECK (retention > interval '0'),
        retention_action   text NOT NULL DEFAULT 'archive' CHECK (retention_action IN ('archive', 'drop', 'detach')),
        created_at         timestamptz NOT NULL DEFAULT now(),
        updated_at         timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (table_schema, table_name)
    )
    """,
    "COMMENT ON TABLE agentdb.partitioned_tables IS 'Partitioned tables whose monthly partitions agentdb keeps "
    "ahead and retires (agentdb partitions maintain)'",
    "COMMENT ON COLUMN agentdb.partitioned_tables.premake IS 'How many months after the current one must have a "
    "partition, so no write lands in the DEFAULT partition'",
    "COMMENT ON COLUMN agentdb.partitioned_tables.retention IS 'Partitions whose upper bound is older than "
    "now() - retention are retired; NULL keeps them forever'",
]


def upgrade() -> None:
    for statement in _ONLINE_CHANGES_DDL + _PARTITIONED_TABLES_DDL:
        op.execute(statement)
    # Outside this migration's transaction, through the engine (see the docstring); a no-op when done already.
    online.partition_table(TABLE, column=COLUMN, premake=PREMAKE)


def downgrade() -> None:
    online.unpartition_table(TABLE)  # also takes analytics out of agentdb.partitioned_tables
    # The registry goes when nothing else is registered; the engine's state when no change is unfinished (the
    # run history keeps what migrations' changes did, in their rows' details).  Either is made again on demand.
    op.execute(
        """
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM agentdb.partitioned_tables) THEN
                DROP TABLE agentdb.partitioned_tables;
            END IF;
            IF NOT EXISTS (SELECT FROM agentdb.online_changes
                           WHERE status IN ('running', 'paused', 'failed', 'cut_over')) THEN
                DROP TABLE agentdb.online_changes;
            END IF;
        END
        $$
        """
    )


if __name__ == "__main__":
    from agentdb.runtime.script import main

    main(__file__)
