"""Rollback that loses nothing: the archive of rolled-back rows becomes a governed part of the database.

Why: agentdb never drops a table that holds rows on a downgrade; its rows are
copied into the ``agentdb_archive`` schema first and restored when the table
is created again (see ``agentdb.runtime.archive``).  Archived rows can hold
personal data, so from this revision on the archive schema and its registry
always exist, are readable by their owner only (not by PUBLIC, nor the
application, read-only or analyst roles), and ``public.rollback_archive``
shows operators what is kept, from which revision, and what was restored.
Below this revision agentdb creates the same schema and registry when it first
archives rows, and this downgrade keeps them while the archive holds rows, so
``agentdb.archived_tables`` lists what is kept whenever something is; the view
goes with this revision, leaving revision 005's application schema exactly.

Run as a script, as the seed documents show, this file undoes the analytics,
audit and security layer (revision 005 and everything after it) the same safe
way as ``agentdb rollback 004``: it shows the plan, asks (``--yes`` to skip),
archives non-empty tables (``--purge`` drops them for real) and records the run.
``--apply`` brings the database *to* this revision instead, like any other
version file.

Revision ID: 006
Revises: 005
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "006"
down_revision: str | None = "005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The revision the script form rolls back to: below 005 (analytics, event logs, audit, consent, security).
LAYER_BELOW = "004"

ARCHIVE_SCHEMA = "agentdb_archive"
REGISTRY_TABLE = "archived_tables"

#: The archive schema and its registry, as agentdb's runtime creates them when it first archives
#: (``agentdb.runtime.archive.REGISTRY_DDL``); written out here so that this file alone says what it does.
_REGISTRY_DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {ARCHIVE_SCHEMA}",
    f"COMMENT ON SCHEMA {ARCHIVE_SCHEMA} IS "
    "'Rows of tables dropped by agentdb downgrades, kept until the table is created again or purged'",
    f"REVOKE ALL ON SCHEMA {ARCHIVE_SCHEMA} FROM PUBLIC",
    f"""
    CREATE TABLE IF NOT EXISTS agentdb.{REGISTRY_TABLE} (
        id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        table_schema   text NOT NULL,
        table_name     text NOT NULL,
        archive_table  text NOT NULL UNIQUE,
        revision       text,
        run_id         uuid,
        row_count      bigint NOT NULL CHECK (row_count >= 0),
        archived_at    timestamptz NOT NULL DEFAULT now(),
        restored_at    timestamptz,
        restored_rows  bigint,
        sequences      jsonb
    )
    """,
    f"COMMENT ON TABLE agentdb.{REGISTRY_TABLE} IS "
    "'Every table whose rows a downgrade archived instead of dropping, and when they were restored'",
    f"COMMENT ON COLUMN agentdb.{REGISTRY_TABLE}.sequences IS "
    "'Position of the table''s identity and serial sequences when archived: column -> last_value, is_called'",
]

_VIEW_COMMENTS = {
    "id": "Registry id of the archived copy",
    "table_name": "The table whose rows were archived (schema.table)",
    "archive_table": "Where the rows are kept, in the agentdb_archive schema",
    "revision": "The migration whose downgrade dropped the table",
    "row_count": "How many rows were archived",
    "archived_at": "When the downgrade archived them",
    "restored_at": "When an upgrade restored them; NULL while they are kept",
    "restored_rows": "How many rows the restore put back",
}


def upgrade() -> None:
    for statement in _REGISTRY_DDL:
        op.execute(statement)
    op.execute(
        f"""
        CREATE VIEW public.rollback_archive AS
        SELECT id, table_schema || '.' || table_name AS table_name, archive_table, revision, row_count,
               archived_at, restored_at, restored_rows
        FROM agentdb.{REGISTRY_TABLE}
        """  # noqa: S608 - constant identifiers
    )
    op.execute("REVOKE ALL ON public.rollback_archive FROM PUBLIC")
    op.execute(
        "COMMENT ON VIEW public.rollback_archive IS "
        "'Rows kept by agentdb rollbacks instead of being dropped, and whether they were restored'"
    )
    for column, comment in _VIEW_COMMENTS.items():
        op.execute(f"COMMENT ON COLUMN public.rollback_archive.{column} IS '{comment}'")


def downgrade() -> None:
    op.execute("DROP VIEW public.rollback_archive")
    # Archived rows are never dropped by a downgrade: the registry and the schema go only when empty.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM agentdb.{REGISTRY_TABLE} WHERE restored_at IS NULL) THEN
                RAISE NOTICE 'agentdb: % keeps archived rows, listed in agentdb.{REGISTRY_TABLE}',
                    '{ARCHIVE_SCHEMA}';
            ELSE
                DROP TABLE agentdb.{REGISTRY_TABLE};
                DROP SCHEMA {ARCHIVE_SCHEMA};
            END IF;
        END
        $$
        """
    )


if __name__ == "__main__":
    from agentdb.runtime.script import rollback_main

    rollback_main(__file__, LAYER_BELOW)
