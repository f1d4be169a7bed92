"""The data stairway: on demo data, roll back to every revision and upgrade again, and every row is as it was.

For each revision R below head (down to base), a clone of one ``seed-demo``
database is rolled back to R and upgraded to head; then every public table must
hold exactly the rows it held before (each row compared as its text form, so
values, keys and timestamps all count, and no audit row may appear), and every
sequence must stand where it stood, past every restored key.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from conftest import MIGRATIONS, create_database, drop_database, server_dsn, with_database
from psycopg import sql

import agentdb

#: Revisions from the one below head down to base, read from the files (revision id = file prefix).
_REVISIONS = sorted(path.name[:3] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9]_*.py"))
TARGETS = [*reversed(_REVISIONS[:-1]), "base"]

Snapshot = tuple[dict[str, list[str]], list[tuple[object, ...]]]


def snapshot(url: str) -> Snapshot:
    """Every row of every public table as sorted text, and the position of every public sequence."""
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1")]
        rows = {table: [r[0] for r in conn.execute(
            sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(sql.Identifier("public", table)))]
            for table in tables}
        sequences = conn.execute("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public' "
                                 "ORDER BY 1").fetchall()
    return rows, sequences


@pytest.fixture(scope="module")
def demo_template() -> Iterator[tuple[str, Snapshot]]:
    """A database at head filled by ``seed-demo`` (small), used as the template of every step, and its snapshot."""
    name = create_database()
    try:
        url = with_database(server_dsn(), name)
        agentdb.upgrade("head", database_url=url)
        agentdb.seed_demo("small", database_url=url)
        state = snapshot(url)
        assert all(state[0].values()), "seed-demo fills every public table"
        yield name, state
    finally:
        drop_database(name)


def _archive_listed(url: str) -> None:
    """``agentdb.archived_tables`` lists every table the archive keeps; ``public.rollback_archive`` is 006's alone."""
    with psycopg.connect(url) as conn:
        kept = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'agentdb_archive'")}
        listed = {r[0] for r in conn.execute(
            "SELECT archive_table FROM agentdb.archived_tables WHERE restored_at IS NULL")} if kept else set()
        view = conn.execute("SELECT to_regclass('public.rollback_archive') IS NOT NULL").fetchone()
        at = conn.execute("SELECT version_num FROM agentdb.alembic_version").fetchone()
    assert listed == kept, "the registry lists exactly the archive tables that exist"
    assert view == (at is not None and at[0] >= "006",), "public.rollback_archive comes and goes with 006"


def _identities_hand_out_new_keys(url: str) -> None:
    with psycopg.connect(url) as conn:
        owned = conn.execute(
            "SELECT c.relname, a.attname, pg_get_serial_sequence(format('public.%I', c.relname), a.attname) "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attidentity <> '' ORDER BY 1").fetchall()
        assert owned, "the schema has identity columns"
        for table, column, sequence in owned:
            (past,) = conn.execute(sql.SQL("SELECT nextval(%s) > coalesce((SELECT max({}) FROM {}), 0)").format(
                sql.Identifier(column), sql.Identifier("public", table)), (sequence,)).fetchone() or (False,)
            assert past, f"{table}.{column}: the identity sequence hands out a key already restored"


@pytest.mark.parametrize("target", TARGETS)
def test_rollback_to_each_revision_and_upgrade_again_keeps_every_row(
    demo_template: tuple[str, Snapshot], target: str,
) -> None:
    template, (rows, sequences) = demo_template
    name = create_database(template)
    try:
        url = with_database(server_dsn(), name)
        agentdb.rollback(target, database_url=url)
        _archive_listed(url)

        agentdb.upgrade("head", database_url=url)
        after_rows, after_sequences = snapshot(url)
        assert sorted(after_rows) == sorted(rows), "the same tables"
        changed = [t for t in rows if after_rows[t] != rows[t]]
        assert changed == [], f"rows differ after rollback to {target} and upgrade: {changed}"
        assert after_sequences == sequences, "every sequence where it was"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM agentdb.archived_tables WHERE restored_at IS NULL"
                                ).fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'agentdb_archive'"
                                ).fetchone() == (0,)
        _identities_hand_out_new_keys(url)
    finally:
        drop_database(name)
