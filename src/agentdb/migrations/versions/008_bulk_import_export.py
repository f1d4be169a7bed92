"""Bulk import and export: the import ledger that makes every import exactly-once and resumable.

Why: the seed documents' ``bulk_import('analytics', 'analytics.csv')`` and
``bulk_export('users', 'users.csv')`` load and dump whole files at the speed of
COPY.  An import must never load the same file twice nor half of it:
``agentdb.imports`` records each import of a file (by table and the file's
sha256) with its counts (rows read = loaded + rejected + skipped) and the
checkpoint of its last committed batch, so that importing the same file again
is a no-op that says so, and a killed import resumes where it stopped.  It
holds no value of any file.  The statements are
:data:`agentdb.bulk.ledger.DDL` written out (a test compares them), all
``IF NOT EXISTS``: a first import on a database below 008 creates the same
ledger (:func:`agentdb.bulk.ensure_ledger`), and this migration then keeps it.
The downgrade drops the ledger; its rows, if any, are archived first, as every
table a rollback drops (``agentdb_archive``, ``agentdb.archived_tables``).

The functions the seed documents call are exposed here (:func:`bulk_import`,
:func:`bulk_export`); they are agentdb's (``agentdb.bulk_import``), imported
when called, never by the migration itself.  Run as a script it takes
``import|export TABLE FILE`` (``-`` for stdin/stdout) and the options of
``agentdb import``/``agentdb export``; without them it applies this revision.

Revision ID: 008
Revises: 007
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic import op

revision: str = "008"
down_revision: str | None = "007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

squawk_exceptions = {
    "prefer-bigint-over-int": "imports.pid is the operating-system process id of the importing process, 32-bit by "
    "nature",
}

#: Equal, statement for statement, to agentdb.bulk.ledger.DDL (tests/test_bulk_migration.py).
STATEMENTS = (
    'CREATE SCHEMA IF NOT EXISTS agentdb',
    """CREATE TABLE IF NOT EXISTS agentdb.imports (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name        text NOT NULL,
    file_sha256       text NOT NULL CHECK (file_sha256 ~ '^[0-9a-f]{64}$'),
    file_name         text NOT NULL,
    file_bytes        bigint NOT NULL CHECK (file_bytes >= 0),
    format            text NOT NULL CHECK (format IN ('csv', 'tsv', 'jsonl')),
    status            text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    forced            boolean NOT NULL DEFAULT false,
    rows_read         bigint NOT NULL DEFAULT 0 CHECK (rows_read >= 0),
    rows_loaded       bigint NOT NULL DEFAULT 0 CHECK (rows_loaded >= 0),
    rows_rejected     bigint NOT NULL DEFAULT 0 CHECK (rows_rejected >= 0),
    rows_skipped      bigint NOT NULL DEFAULT 0 CHECK (rows_skipped >= 0),
    checkpoint_rows   bigint NOT NULL DEFAULT 0 CHECK (checkpoint_rows >= 0),
    checkpoint_offset bigint NOT NULL DEFAULT 0 CHECK (checkpoint_offset >= 0),
    checkpoint_line   bigint NOT NULL DEFAULT 0 CHECK (checkpoint_line >= 0),
    rejects_bytes     bigint NOT NULL DEFAULT 0 CHECK (rejects_bytes >= 0),
    options           jsonb NOT NULL DEFAULT '{}'::jsonb,
    sqlstate          text,
    error             text,
    started_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    db_user           text NOT NULL DEFAULT current_user,
    os_user           text,
    host              text,
    pid               integer,
    agentdb_version   text NOT NULL,
    CONSTRAINT imports_rows_add_up CHECK (rows_read = rows_loaded + rows_rejected + rows_skipped),
    CONSTRAINT imports_finished CHECK ((status = 'running') = (finished_at IS NULL))
)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS imports_done_once_key ON agentdb.imports (table_name, file_sha256) '
    "WHERE status = 'done' AND NOT forced",
    'CREATE UNIQUE INDEX IF NOT EXISTS imports_one_unfinished_key ON agentdb.imports (table_name, '
    "file_sha256) WHERE status <> 'done'",
    'CREATE INDEX IF NOT EXISTS imports_started_at_idx ON agentdb.imports (started_at)',
    'REVOKE ALL ON agentdb.imports FROM PUBLIC',
    "COMMENT ON TABLE agentdb.imports IS 'Bulk imports (agentdb import): one row per import run of a file "
    "into a table, by sha256, with its counts and checkpoint; no values of the file'",
    "COMMENT ON COLUMN agentdb.imports.table_name IS 'The table imported into, schema-qualified'",
    "COMMENT ON COLUMN agentdb.imports.file_sha256 IS 'sha256 of the file as given (compressed bytes for a "
    "compressed file): the same file is imported once unless forced'",
    "COMMENT ON COLUMN agentdb.imports.file_name IS 'The file name without its directory; - for stdin'",
    "COMMENT ON COLUMN agentdb.imports.status IS 'running (or killed while running: resumable), done, or "
    "failed (resumable from its checkpoint)'",
    "COMMENT ON COLUMN agentdb.imports.forced IS 'Imported again although a done row existed (--force)'",
    "COMMENT ON COLUMN agentdb.imports.rows_read IS 'Records read = rows_loaded + rows_rejected + "
    "rows_skipped, always'",
    "COMMENT ON COLUMN agentdb.imports.checkpoint_rows IS 'Records of the file committed so far (batches)'",
    "COMMENT ON COLUMN agentdb.imports.checkpoint_offset IS 'Byte offset in the decompressed file right after "
    "the last committed batch: where a resumed import starts'",
    "COMMENT ON COLUMN agentdb.imports.checkpoint_line IS 'Line number at checkpoint_offset'",
    "COMMENT ON COLUMN agentdb.imports.rejects_bytes IS 'Size of the rejects file at the checkpoint'",
    "COMMENT ON COLUMN agentdb.imports.error IS 'Why it failed, one line: SQLSTATE and primary message, "
    "values masked'",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("imports", schema="agentdb")  # archived first if it holds rows


def bulk_import(table: str, path: str, **options: Any) -> Any:
    """The seed documents' ``bulk_import('analytics', 'analytics.csv')``: see :func:`agentdb.bulk_import`."""
    from agentdb.bulk import bulk_import as run

    return run(table, path, **options)


def bulk_export(table: str, path: str, **options: Any) -> Any:
    """The seed documents' ``bulk_export('users', 'users.csv')``: see :func:`agentdb.bulk_export`."""
    from agentdb.bulk import bulk_export as run

    return run(table, path, **options)


if __name__ == "__main__":
    from agentdb.bulk.script import main

    main(__file__)
