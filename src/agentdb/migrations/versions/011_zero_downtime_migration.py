"""Index analytics by event type and time, online: built CONCURRENTLY partition by partition.

Why: the analytics dashboards and the recommendation feedback ask per event
type and period -- plays per month, the skip rate of a week, recommendation
clicks since a release -- and ``analytics``, the largest table (a million rows
at ``seed-demo --scale large``, growing by the month), has no index that leads
with ``event_type``: each such query reads every row of the months it covers.
A plain ``CREATE INDEX`` would block every insert into ``analytics`` for as
long as it builds, and PostgreSQL cannot build a partitioned table's index
``CONCURRENTLY``.  This migration is the zero-downtime pattern of the seed
documents, through agentdb's online-change engine (kind ``create_index``):

1. the index is created ``ON ONLY analytics`` (a catalogue change, under a
   short ``lock_timeout`` with retries);
2. each partition's index is built ``CONCURRENTLY`` (reads and writes go on),
   each a checkpointed step: after a crash, ``agentdb upgrade`` (or running
   this file again) carries on with the next partition, and an INVALID index
   left by a failed build is dropped first;
3. each partition's index is attached; the parent's is then valid, and the
   partitions that maintenance creates later get theirs automatically.

The downgrade is an online change back (kind ``drop_index``): a catalogue
change under the short ``lock_timeout``; no row is touched.

As the seed documents show, ``upgrade()`` called outside a migration run
(``from 011_zero_downtime_migration import upgrade; upgrade()``, with this
directory on ``sys.path`` and the module loaded by ``importlib``) applies this
revision through agentdb -- recorded in the run history like ``agentdb
upgrade`` -- on ``DATABASE_URL`` or the embedded server; ``python
versions/011_zero_downtime_migration.py`` does the same with a progress bar.

Revision ID: 011
Revises: 010
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

from agentdb import online

revision: str = "011"
down_revision: str | None = "010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "analytics"
INDEX = "analytics_event_type_created_at_idx"
COLUMNS = ["event_type", "created_at"]


def _in_migration() -> bool:
    from alembic import op

    try:
        op.get_context()
    except (NameError, AttributeError):
        return False
    return True


def upgrade() -> None:
    if not _in_migration():
        # The seed documents' `upgrade()`: apply this revision (and any before it) through agentdb.
        from agentdb import migrate

        migrate.upgrade(revision)
        return
    online.create_index(TABLE, INDEX, COLUMNS)


def downgrade() -> None:
    online.drop_index(TABLE, INDEX)


if __name__ == "__main__":
    from agentdb.runtime.script import main

    main(__file__)
