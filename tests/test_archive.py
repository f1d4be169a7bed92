"""Rollback that loses nothing: downgrades archive non-empty tables, upgrades restore them row for row."""

from __future__ import annotations

import psycopg
import pytest
from conftest import fixture_migration

from agentdb import commands
from agentdb.errors import MigrationFailed

USERS = [("ann@example.org", "Ann", "DE"), ("bob@example.org", "Bob", None), ("cy@example.org", "Cy", "FR")]


def _fill(url: str) -> None:
    with psycopg.connect(url) as conn:
        for email, name, country in USERS:
            conn.execute("INSERT INTO users (email, display_name, country) VALUES (%s, %s, %s)", (email, name, country))
        conn.execute("INSERT INTO artists (user_id, name, genres) SELECT id, display_name || ' Band', "
                     "ARRAY['indie'] FROM users")
        conn.execute("DELETE FROM users WHERE email = 'bob@example.org'")  # leaves an id gap and a NULL user_id


def _rows(url: str, table: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def _scalar(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
        return row[0] if row else None


def test_downgrade_archives_rows_and_upgrade_restores_them_row_for_row(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(upto="001")
    commands.upgrade("001", database_url=database_url)
    _fill(database_url)
    users, artists = _rows(database_url, "users"), _rows(database_url, "artists")

    commands.downgrade("base", database_url=database_url)
    assert _scalar(database_url, "SELECT to_regclass('public.users')") is None
    with psycopg.connect(database_url) as conn:
        registry = conn.execute(
            "SELECT table_name, row_count, revision, restored_at FROM agentdb.archived_tables ORDER BY id"
        ).fetchall()
    assert registry == [("artists", 3, "001", None), ("users", 2, "001", None)]

    commands.upgrade("001", database_url=database_url)
    assert _rows(database_url, "users") == users
    assert _rows(database_url, "artists") == artists
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM agentdb.archived_tables WHERE restored_at IS NULL").fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'agentdb_archive'").fetchone() == (0,), \
            "restored archives are dropped"
        new_id = conn.execute(
            "INSERT INTO users (email, display_name) VALUES ('dee@example.org', 'Dee') RETURNING id").fetchone()
    assert new_id is not None and new_id[0] > max(int(str(u[0])) for u in users), "identity moved past restored keys"


def test_empty_tables_are_dropped_without_an_archive(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(upto="001")
    commands.upgrade("001", database_url=database_url)
    commands.downgrade("base", database_url=database_url)
    assert _scalar(database_url, "SELECT to_regclass('agentdb.archived_tables')") is None


def test_failed_downgrade_leaves_table_and_no_archive(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(
        {"002_t.py": fixture_migration(
            "002", "001", "op.create_table('t2', sa.Column('id', sa.Integer))",
            "op.drop_table('t2')\nraise RuntimeError('downgrade broke after the drop')")},
        upto="001",
    )
    commands.upgrade("head", database_url=database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO t2 VALUES (1), (2)")
    with pytest.raises(MigrationFailed):
        commands.downgrade("001", database_url=database_url)
    assert _rows(database_url, "t2") == [(1,), (2,)]
    assert _scalar(database_url, "SELECT to_regclass('agentdb.archived_tables')") is None
    assert _scalar(database_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'agentdb_archive'") == 0


def test_offline_sql_drops_plainly(database_url: str) -> None:
    text = commands.sql("001:base")
    assert "DROP TABLE users" in text and "agentdb_archive" not in text


def test_archive_and_restore_are_recorded_in_the_run_history(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(upto="001")
    commands.upgrade("001", database_url=database_url)
    _fill(database_url)
    commands.downgrade("base", database_url=database_url)
    commands.upgrade("001", database_url=database_url)
    with psycopg.connect(database_url) as conn:
        down, up = conn.execute(
            "SELECT details FROM agentdb.migration_runs WHERE details IS NOT NULL ORDER BY id").fetchall()
    assert [(e["archived"], e["rows"]) for e in down[0]["archive"]] == [("public.artists", 3), ("public.users", 2)]
    assert [(e["restored"], e["rows"]) for e in up[0]["archive"]] == [("public.users", 2), ("public.artists", 3)]


def test_purge_drops_rows_for_real_and_says_so(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    from agentdb.runtime.settings import RunSettings

    script_location(upto="001")
    commands.upgrade("001", database_url=database_url)
    _fill(database_url)
    from alembic import command as alembic_command

    config = commands.make_config(RunSettings(database_url=database_url, purge=True))
    alembic_command.downgrade(config, "base")
    assert _scalar(database_url, "SELECT to_regclass('agentdb.archived_tables')") is None
    with psycopg.connect(database_url) as conn:
        (details,) = conn.execute("SELECT details FROM agentdb.migration_runs WHERE details IS NOT NULL").fetchone()
    assert [(e["purged"], e["rows"]) for e in details["archive"]] == [("public.artists", 3), ("public.users", 2)]
    commands.upgrade("001", database_url=database_url)
    assert _rows(database_url, "users") == []


def test_rows_a_migration_seeds_again_win_over_their_archived_copies(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    seeded = fixture_migration(
        "002", "001",
        "op.create_table('kinds', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "                sa.Column('name', sa.Text, unique=True))\n"
        "op.execute(\"INSERT INTO kinds (name) VALUES ('album'), ('single')\")",
        "op.drop_table('kinds')",
    )
    script_location({"002_kinds.py": seeded}, upto="001")
    commands.upgrade("head", database_url=database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO kinds (name) VALUES ('ep')")
    commands.downgrade("001", database_url=database_url)
    commands.upgrade("head", database_url=database_url)
    assert [r[1] for r in _rows(database_url, "kinds")] == ["album", "single", "ep"]
    with psycopg.connect(database_url) as conn:
        (details,) = conn.execute(
            "SELECT details FROM agentdb.migration_runs WHERE direction = 'upgrade' AND details IS NOT NULL"
        ).fetchone()
    assert [(e["restored"], e["rows"], e["skipped"]) for e in details["archive"]] == [("public.kinds", 1, 2)]


def test_dry_run_of_a_downgrade_reports_what_it_would_archive(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(upto="001")
    commands.upgrade("001", database_url=database_url)
    _fill(database_url)
    report = commands.dry_run("base", direction="downgrade", database_url=database_url)
    archived = [(e["archived"], e["rows"]) for step in report.steps for e in step.observed.archive]
    assert archived == [("public.artists", 3), ("public.users", 2)]
    assert _scalar(database_url, "SELECT to_regclass('agentdb.archived_tables')") is None
    assert len(_rows(database_url, "users")) == 2
