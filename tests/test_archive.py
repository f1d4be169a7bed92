"""Rollback that loses nothing: downgrades archive non-empty tables, upgrades restore them exactly as they were."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from conftest import fixture_migration, run_cli
from psycopg import sql

import agentdb
from agentdb.errors import MigrationFailed, RestoreFailed

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
        return conn.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(table))).fetchall()


def _scalar(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()  # type: ignore[arg-type]  # constant test queries
        return row[0] if row else None


def _texts(url: str, tables: list[str]) -> dict[str, list[str]]:
    """Every row of each table as its text form, sorted: equal means the same rows, value for value."""
    with psycopg.connect(url) as conn:
        return {table: [r[0] for r in conn.execute(
            sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(sql.Identifier("public", table)))]
            for table in tables}


def _sequences(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public' "
                            "ORDER BY 1").fetchall()


def _details(url: str, direction: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT details FROM agentdb.migration_runs WHERE direction = %s AND details IS NOT NULL "
                            "AND success ORDER BY id", (direction,)).fetchall()
    return [e for (details,) in rows for e in details["archive"]]


def test_downgrade_archives_rows_and_upgrade_restores_them_row_for_row(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(upto="001")
    agentdb.upgrade("001", database_url=database_url)
    _fill(database_url)
    users, artists = _rows(database_url, "users"), _rows(database_url, "artists")

    agentdb.downgrade("base", database_url=database_url)
    assert _scalar(database_url, "SELECT to_regclass('public.users')") is None
    with psycopg.connect(database_url) as conn:
        registry = conn.execute(
            "SELECT table_name, row_count, revision, restored_at FROM agentdb.archived_tables ORDER BY id"
        ).fetchall()
    assert registry == [("artists", 3, "001", None), ("users", 2, "001", None)]

    agentdb.upgrade("001", database_url=database_url)
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
    agentdb.upgrade("001", database_url=database_url)
    agentdb.downgrade("base", database_url=database_url)
    assert _scalar(database_url, "SELECT to_regclass('agentdb.archived_tables')") is None
    assert _scalar(database_url, "SELECT to_regclass('public.rollback_archive')") is None


def test_failed_downgrade_leaves_table_and_no_archive(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(
        {"002_t.py": fixture_migration(
            "002", "001", "op.create_table('t2', sa.Column('id', sa.Integer))",
            "op.drop_table('t2')\nraise RuntimeError('downgrade broke after the drop')")},
        upto="001",
    )
    agentdb.upgrade("head", database_url=database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO t2 VALUES (1), (2)")
    with pytest.raises(MigrationFailed):
        agentdb.downgrade("001", database_url=database_url)
    assert _scalar(database_url, "SELECT count(*) FROM t2") == 2
    assert _scalar(database_url, "SELECT to_regclass('agentdb.archived_tables')") is None
    assert _scalar(database_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'agentdb_archive'") == 0


def test_a_write_committed_while_the_downgrade_waits_is_archived_too(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    """The archive takes the drop's lock before it copies: a row committed meanwhile is in the copy, not lost."""
    script_location(upto="001")
    agentdb.upgrade("001", database_url=database_url)
    _fill(database_url)
    writer = psycopg.connect(database_url)
    writer.execute("INSERT INTO artists (name) VALUES ('Late Band')")  # uncommitted: holds ROW EXCLUSIVE
    errors: list[BaseException] = []

    def downgrade() -> None:
        try:
            agentdb.downgrade("base", database_url=database_url, lock_timeout=30)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=downgrade)
    worker.start()
    try:
        with psycopg.connect(database_url, autocommit=True) as watcher:
            for _ in range(300):
                row = watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND wait_event_type = 'Lock'").fetchone()
                if row and row[0]:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the downgrade never waited for the writer's lock")
        writer.commit()
    finally:
        writer.close()
        worker.join(60)
    assert errors == []
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT row_count FROM agentdb.archived_tables WHERE table_name = 'artists'"
                            ).fetchone() == (4,)
    agentdb.upgrade("001", database_url=database_url)
    assert _scalar(database_url, "SELECT count(*) FROM artists WHERE name = 'Late Band'") == 1


def test_a_registry_made_before_sequences_were_recorded_gets_the_column(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(upto="001")
    agentdb.upgrade("001", database_url=database_url)
    _fill(database_url)
    with psycopg.connect(database_url) as conn:  # the registry as agentdb made it before this column existed
        conn.execute("CREATE TABLE agentdb.archived_tables (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                     "table_schema text NOT NULL, table_name text NOT NULL, archive_table text NOT NULL UNIQUE, "
                     "revision text, run_id uuid, row_count bigint NOT NULL, archived_at timestamptz NOT NULL "
                     "DEFAULT now(), restored_at timestamptz, restored_rows bigint)")
        conn.execute("CREATE SCHEMA agentdb_archive")
    users = _rows(database_url, "users")
    agentdb.downgrade("base", database_url=database_url)
    assert _scalar(database_url, "SELECT count(*) FROM agentdb.archived_tables WHERE sequences ? 'id'") == 2
    agentdb.upgrade("001", database_url=database_url)
    assert _rows(database_url, "users") == users


def test_offline_sql_drops_plainly(database_url: str) -> None:
    text = agentdb.sql("001:base")
    assert "DROP TABLE users" in text and "agentdb_archive" not in text


def test_archive_and_restore_are_recorded_in_the_run_history(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(upto="001")
    agentdb.upgrade("001", database_url=database_url)
    _fill(database_url)
    agentdb.downgrade("base", database_url=database_url)
    agentdb.upgrade("001", database_url=database_url)
    assert [(e["archived"], e["rows"]) for e in _details(database_url, "downgrade")] == [
        ("public.artists", 3), ("public.users", 2)]
    assert [(e["restored"], e["rows"], e["replaced"]) for e in _details(database_url, "upgrade")] == [
        ("public.users", 2, 0), ("public.artists", 3, 0)]


def test_purge_drops_rows_for_real_and_says_so(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(upto="001")
    agentdb.upgrade("001", database_url=database_url)
    _fill(database_url)
    agentdb.downgrade("base", database_url=database_url, purge=True)
    assert _scalar(database_url, "SELECT to_regclass('agentdb.archived_tables')") is None
    assert [(e["purged"], e["rows"]) for e in _details(database_url, "downgrade")] == [
        ("public.artists", 3), ("public.users", 2)]
    agentdb.upgrade("001", database_url=database_url)
    assert _rows(database_url, "users") == []


def test_dry_run_of_a_downgrade_reports_what_it_would_archive(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    script_location(upto="001")
    agentdb.upgrade("001", database_url=database_url)
    _fill(database_url)
    report = agentdb.dry_run("base", direction="downgrade", database_url=database_url)
    archived = [(e["archived"], e["rows"]) for step in report.steps for e in step.observed.archive]
    assert archived == [("public.artists", 3), ("public.users", 2)]
    assert _scalar(database_url, "SELECT to_regclass('agentdb.archived_tables')") is None
    assert len(_rows(database_url, "users")) == 2


def test_the_archive_logs_nothing_itself_not_even_in_a_dry_run(  # type: ignore[no-untyped-def]
    database_url: str, script_location, caplog: pytest.LogCaptureFixture,
) -> None:
    """Its events are the record; the runner says what happened once the step committed."""
    script_location(upto="001")
    agentdb.upgrade("001", database_url=database_url)
    _fill(database_url)
    with caplog.at_level(logging.DEBUG):
        agentdb.dry_run("base", direction="downgrade", database_url=database_url)
        agentdb.downgrade("base", database_url=database_url)
        agentdb.dry_run("001", database_url=database_url)
        agentdb.upgrade("001", database_url=database_url)
    assert [r.getMessage() for r in caplog.records if r.pathname.endswith("archive.py")] == []
    assert len(_details(database_url, "upgrade")) == 2


# --- Every table shape: a fixture migration 002 creates it, rows go in, 002 is rolled back and applied again. ---


@dataclass(frozen=True)
class Shape:
    """A table shape: migration 002's bodies, the rows a user writes, and the tables to compare."""

    upgrade: str
    downgrade: str
    fill: str
    tables: tuple[str, ...]
    #: Sequences that must end past a key given by hand beyond them, instead of where they were.
    moved: tuple[tuple[str, int], ...] = ()
    #: The tables archived and restored, when not all of ``tables`` (partitions go with their parent).
    archived: tuple[str, ...] = ()


SHAPES: dict[str, Shape] = {
    "deferrable unique constraints": Shape(
        "op.create_table('slots', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('list_id', sa.Integer, nullable=False), sa.Column('position', sa.Integer, nullable=False),\n"
        "    sa.Column('code', sa.Text),\n"
        "    sa.UniqueConstraint('list_id', 'position', deferrable=True, initially='IMMEDIATE'),\n"
        "    sa.UniqueConstraint('code', deferrable=True, initially='DEFERRED'))",
        "op.drop_table('slots')",
        "INSERT INTO slots (list_id, position, code) SELECT i % 3, i, 'c' || i FROM generate_series(1, 20) i;"
        "DELETE FROM slots WHERE position = 20",
        ("slots",),
    ),
    "partial unique index": Shape(
        "op.create_table('models', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('name', sa.Text, nullable=False), sa.Column('live', sa.Boolean, nullable=False))\n"
        "op.create_index('models_one_live', 'models', ['name'], unique=True, postgresql_where=sa.text('live'))",
        "op.drop_table('models')",
        "INSERT INTO models (name, live) VALUES ('a', true), ('a', false), ('a', false), ('b', false)",
        ("models",),
    ),
    "exclusion constraint": Shape(
        "from sqlalchemy.dialects import postgresql as pg\n"
        "op.create_table('bookings', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('during', pg.TSTZRANGE, nullable=False),\n"
        "    pg.ExcludeConstraint(('during', '&&'), using='gist', name='bookings_no_overlap'))",
        "op.drop_table('bookings')",
        "INSERT INTO bookings (during) VALUES ('[2026-01-01, 2026-01-02)'), ('[2026-01-02, 2026-01-03)')",
        ("bookings",),
    ),
    "generated column": Shape(
        "op.create_table('prices', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('net', sa.Numeric(10, 2), nullable=False),\n"
        "    sa.Column('gross', sa.Numeric(10, 2), sa.Computed('round(net * 1.19, 2)', persisted=True)))",
        "op.drop_table('prices')",
        "INSERT INTO prices (net) VALUES (10), (0.5), (99.99)",
        ("prices",),
    ),
    "identity ALWAYS with deleted keys at the end": Shape(
        "op.create_table('tickets', sa.Column('id', sa.BigInteger, sa.Identity(always=True), primary_key=True),\n"
        "    sa.Column('title', sa.Text))",
        "op.drop_table('tickets')",
        "INSERT INTO tickets (title) SELECT 't' || i FROM generate_series(1, 10) i;"
        "DELETE FROM tickets WHERE id > 7 OR id = 3",
        ("tickets",),
    ),
    "identity BY DEFAULT with keys given past the sequence": Shape(
        "op.create_table('codes', sa.Column('id', sa.Integer, sa.Identity(always=False), primary_key=True),\n"
        "    sa.Column('code', sa.Text))",
        "op.drop_table('codes')",
        "INSERT INTO codes (code) VALUES ('a'), ('b'); INSERT INTO codes (id, code) VALUES (500, 'z')",
        ("codes",),
        moved=(("codes_id_seq", 500),),
    ),
    "serial column": Shape(
        "op.create_table('legacy', sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),\n"
        "    sa.Column('note', sa.Text))",
        "op.drop_table('legacy')",
        "INSERT INTO legacy (note) VALUES ('x'), ('y'), ('z'); DELETE FROM legacy WHERE note = 'z'",
        ("legacy",),
    ),
    "self-reference": Shape(
        "op.create_table('tree', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('parent_id', sa.BigInteger),\n"
        "    sa.ForeignKeyConstraint(['parent_id'], ['tree.id'], ondelete='CASCADE'))",
        "op.drop_table('tree')",
        # Row 1 points at a row inserted after it: the restore must not depend on the order of rows.
        "INSERT INTO tree (parent_id) VALUES (NULL); INSERT INTO tree (parent_id) VALUES (1), (1);"
        "INSERT INTO tree (parent_id) VALUES (2); UPDATE tree SET parent_id = 4 WHERE id = 1",
        ("tree",),
    ),
    "several tables with foreign keys, created children first": Shape(
        "op.create_table('lines', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('order_id', sa.BigInteger, nullable=False), sa.Column('sku', sa.Text))\n"
        "op.create_table('orders', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('user_id', sa.BigInteger, sa.ForeignKey('users.id', ondelete='CASCADE')))\n"
        "op.create_foreign_key('lines_order_id_fkey', 'lines', 'orders', ['order_id'], ['id'])",
        "op.drop_table('lines')\nop.drop_table('orders')",
        "INSERT INTO users (email, display_name) VALUES ('o@example.org', 'O');"
        "INSERT INTO orders (user_id) SELECT id FROM users; INSERT INTO orders (user_id) VALUES (NULL);"
        "INSERT INTO lines (order_id, sku) SELECT o.id, 's' || i FROM orders o, generate_series(1, 3) i",
        ("orders", "lines"),
    ),
    "a lookup table the migration seeds, edited since, with a child": Shape(
        "kinds = op.create_table('kinds', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('name', sa.Text, nullable=False, unique=True), sa.Column('note', sa.Text),\n"
        "    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('clock_timestamp()')))\n"
        "op.bulk_insert(kinds, [{'name': 'album'}, {'name': 'single'}, {'name': 'ep'}])\n"
        "op.create_table('releases', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('kind_id', sa.BigInteger, sa.ForeignKey('kinds.id', ondelete='CASCADE'), nullable=False))\n"
        "op.execute(\"INSERT INTO releases (kind_id) VALUES (1), (3)\")",
        "op.drop_table('releases')\nop.drop_table('kinds')",
        # An administrator edits a seeded row, renames one so that the seed would collide, and adds one.
        "UPDATE kinds SET note = 'long player' WHERE name = 'album';"
        "DELETE FROM releases WHERE kind_id = 2; DELETE FROM kinds WHERE name = 'single';"
        "UPDATE kinds SET name = 'single' WHERE name = 'ep'; INSERT INTO kinds (name) VALUES ('mixtape');"
        "INSERT INTO releases (kind_id) SELECT id FROM kinds",
        ("kinds", "releases"),
    ),
    "user triggers (timestamps, audit)": Shape(
        "op.create_table('notes', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('body', sa.Text), sa.Column('stamped_at', sa.DateTime(timezone=True)))\n"
        "op.create_table('note_log', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('note_id', sa.BigInteger), sa.Column('op', sa.Text))\n"
        "op.execute('''CREATE FUNCTION notes_stamp() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN NEW.stamped_at := clock_timestamp(); RETURN NEW; END $$''')\n"
        "op.execute('''CREATE FUNCTION notes_log() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN INSERT INTO note_log (note_id, op) VALUES (coalesce(NEW.id, OLD.id), TG_OP); "
        "RETURN NULL; END $$''')\n"
        "op.execute('CREATE TRIGGER notes_stamp BEFORE INSERT OR UPDATE ON notes '\n"
        "           'FOR EACH ROW EXECUTE FUNCTION notes_stamp()')\n"
        "op.execute('CREATE TRIGGER notes_log AFTER INSERT OR UPDATE OR DELETE ON notes '\n"
        "           'FOR EACH ROW EXECUTE FUNCTION notes_log()')",
        "op.drop_table('note_log')\nop.drop_table('notes')\n"
        "op.execute('DROP FUNCTION notes_stamp()')\nop.execute('DROP FUNCTION notes_log()')",
        "INSERT INTO notes (body) VALUES ('a'), ('b'); UPDATE notes SET body = 'c' WHERE body = 'b'",
        ("notes", "note_log"),
    ),
    "partitioned table, partitions made by SQL, with a user trigger": Shape(
        "op.create_table('plays', sa.Column('id', sa.BigInteger, sa.Identity(), nullable=False),\n"
        "    sa.Column('at', sa.Date, nullable=False), sa.Column('seen', sa.DateTime(timezone=True)),\n"
        "    sa.PrimaryKeyConstraint('id', 'at'), postgresql_partition_by='RANGE (at)')\n"
        "for month in ('01', '02'):\n"
        "    op.execute(f\"CREATE TABLE plays_2026_{month} PARTITION OF plays FOR VALUES \"\n"
        "               f\"FROM ('2026-{month}-01') TO ('2026-{month}-01'::date + interval '1 month')\")\n"
        "op.execute('''CREATE FUNCTION plays_seen() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN NEW.seen := clock_timestamp(); RETURN NEW; END $$''')\n"
        "op.execute('CREATE TRIGGER plays_seen BEFORE INSERT ON plays FOR EACH ROW EXECUTE FUNCTION plays_seen()')",
        "op.drop_table('plays')\nop.execute('DROP FUNCTION plays_seen()')",
        "INSERT INTO plays (at) SELECT DATE '2026-01-01' + i FROM generate_series(0, 50) i",
        ("plays", "plays_2026_01", "plays_2026_02"),
        archived=("plays",),
    ),
    "enum, domain and array-of-enum columns, types dropped by the downgrade": Shape(
        "from sqlalchemy.dialects import postgresql as pg\n"
        "op.execute(\"CREATE TYPE mood AS ENUM ('calm', 'happy', 'sad')\")\n"
        "op.execute('CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0)')\n"
        "mood = pg.ENUM(name='mood', create_type=False)\n"
        "op.create_table('moods', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('mood', mood, nullable=False), sa.Column('history', pg.ARRAY(mood)))\n"
        "op.execute('ALTER TABLE moods ADD COLUMN weight positive_int')",
        "op.drop_table('moods')\nop.execute('DROP TYPE mood')\nop.execute('DROP DOMAIN positive_int')",
        "INSERT INTO moods (mood, history, weight) VALUES ('happy', '{calm,sad}', 3), ('sad', NULL, NULL)",
        ("moods",),
    ),
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_every_table_shape_comes_back_exactly_as_it_was(database_url: str, script_location, shape: Shape) -> None:  # type: ignore[no-untyped-def]
    script_location({"002_shape.py": fixture_migration("002", "001", shape.upgrade, shape.downgrade)}, upto="001")
    agentdb.upgrade("head", database_url=database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute(shape.fill)  # type: ignore[arg-type]  # constant fixture SQL
    tables = [*shape.tables, "users", "artists"]
    rows, sequences = _texts(database_url, tables), _sequences(database_url)
    assert all(rows[t] for t in shape.tables)

    archived = shape.archived or shape.tables
    agentdb.downgrade("001", database_url=database_url)
    assert _scalar(database_url, "SELECT count(*) FROM agentdb.archived_tables WHERE restored_at IS NULL") == len(
        archived)
    agentdb.upgrade("head", database_url=database_url)

    assert _texts(database_url, tables) == rows, "every row as it was: values, keys, timestamps, no trigger output"
    expected = [(name, dict(shape.moved).get(str(name), value)) for name, value in sequences]
    assert _sequences(database_url) == expected, "each sequence where it was, and past every restored key"
    assert [e["restored"] for e in _details(database_url, "upgrade")] == [f"public.{t}" for t in archived]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM agentdb.archived_tables WHERE restored_at IS NULL").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'agentdb_archive'").fetchone() == (0,)
        enabled = conn.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgenabled <> 'O'").fetchone()
    assert enabled == (0,), "user triggers are enabled again after the restore"


def test_rows_a_migration_seeds_again_are_replaced_by_the_archived_ones(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    shape = SHAPES["a lookup table the migration seeds, edited since, with a child"]
    script_location({"002_kinds.py": fixture_migration("002", "001", shape.upgrade, shape.downgrade)}, upto="001")
    agentdb.upgrade("head", database_url=database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute(shape.fill)  # type: ignore[arg-type]  # constant fixture SQL
    agentdb.downgrade("001", database_url=database_url)
    agentdb.upgrade("head", database_url=database_url)
    assert [(r[1], r[2]) for r in _rows(database_url, "kinds")] == [
        ("album", "long player"), ("single", None), ("mixtape", None)]
    assert [(e["restored"], e["rows"], e["replaced"], e["skipped"]) for e in _details(database_url, "upgrade")] == [
        ("public.kinds", 3, 3, 0), ("public.releases", 5, 2, 0)]


def test_a_restore_that_cannot_complete_names_the_table_and_keeps_the_archive(  # type: ignore[no-untyped-def]
    database_url: str, script_location,
) -> None:
    migration = fixture_migration(
        "002", "001",
        "op.create_table('plays', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('user_id', sa.BigInteger, sa.ForeignKey('users.id'), nullable=False))",
        "op.drop_table('plays')",
    )
    script_location({"002_plays.py": migration}, upto="001")
    agentdb.upgrade("head", database_url=database_url)
    _fill(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO plays (user_id) SELECT id FROM users")
    plays = _texts(database_url, ["plays"])
    agentdb.downgrade("001", database_url=database_url)
    with psycopg.connect(database_url) as conn:
        (archive,) = conn.execute("SELECT archive_table FROM agentdb.archived_tables WHERE table_name = 'plays'"
                                  ).fetchone() or (None,)
        # The cause: a user that archived rows reference is deleted while the table is gone.
        (gone,) = conn.execute("DELETE FROM users WHERE email = 'ann@example.org' RETURNING id").fetchone() or (None,)

    with pytest.raises(RestoreFailed) as failed:
        agentdb.upgrade("head", database_url=database_url)
    message = str(failed.value)
    assert "\n" not in message and "public.plays" in message and f"agentdb_archive.{archive}" in message
    assert "[SQLSTATE 23503]" in message and "violates foreign key constraint" in message
    assert "Key (" not in message and f"({gone})" not in message, "the DETAIL line (row values) is never shown"
    assert failed.value.exit_code == 6 and failed.value.table == "public.plays"
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT version_num FROM agentdb.alembic_version").fetchone() == ("001",)
        assert conn.execute("SELECT restored_at FROM agentdb.archived_tables WHERE table_name = 'plays'"
                            ).fetchone() == (None,), "the registry row is untouched"
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("agentdb_archive", archive))
                            ).fetchone() == (len(plays["plays"]),), "the archive table is untouched"
        assert conn.execute("SELECT to_regclass('public.plays')").fetchone() == (None,)
        history = conn.execute("SELECT sqlstate, error FROM agentdb.migration_runs WHERE NOT success").fetchone()
    assert history is not None and history[0] == "23503" and "Key (" not in history[1]

    cli = run_cli("--database-url", database_url, "upgrade")  # AGENTDB_SCRIPT_LOCATION is inherited
    assert cli.returncode == 6, cli.stdout + cli.stderr
    assert [line for line in cli.stderr.splitlines() if "cannot restore" in line] == [f"error: {message}"]

    with psycopg.connect(database_url) as conn:  # the cause removed: the user is back, with the same id
        conn.execute("INSERT INTO users (id, email, display_name) OVERRIDING SYSTEM VALUE "
                     "VALUES (%s, 'ann@example.org', 'Ann')", (gone,))
    agentdb.upgrade("head", database_url=database_url)
    assert _texts(database_url, ["plays"]) == plays


def test_rows_of_other_tables_pointing_at_seeded_rows_stop_the_restore(database_url: str, script_location) -> None:  # type: ignore[no-untyped-def]
    """Replacing seeded rows that an existing table references would cascade outside the restore: refused."""
    migration = fixture_migration(
        "002", "001",
        "kinds = op.create_table('kinds', sa.Column('id', sa.BigInteger, sa.Identity(), primary_key=True),\n"
        "    sa.Column('name', sa.Text))\n"
        "op.bulk_insert(kinds, [{'name': 'fan'}])\n"
        "op.add_column('users', sa.Column('kind_id', sa.BigInteger, sa.ForeignKey('kinds.id', ondelete='CASCADE')))\n"
        "op.execute('UPDATE users SET kind_id = 1')",
        "op.drop_column('users', 'kind_id')\nop.drop_table('kinds')",
    )
    script_location({"002_kinds.py": migration}, upto="001")
    agentdb.upgrade("head", database_url=database_url)
    _fill(database_url)
    agentdb.downgrade("001", database_url=database_url)
    users = _rows(database_url, "users")
    with pytest.raises(RestoreFailed, match=r"rows of public\.users reference rows the migration wrote into "
                                            r"public\.kinds"):
        agentdb.upgrade("head", database_url=database_url)
    assert _rows(database_url, "users") == users
    assert _scalar(database_url, "SELECT count(*) FROM agentdb.archived_tables WHERE restored_at IS NULL") == 1


def test_the_archive_is_listed_whenever_it_holds_rows_and_the_view_from_006_on(migrated_url: str) -> None:
    """Below 006 ``agentdb.archived_tables`` lists what is kept; 006 adds the owner-only ``public.rollback_archive``."""
    with psycopg.connect(migrated_url) as conn:
        conn.execute("INSERT INTO users (email, display_name) VALUES ('ann@example.org', 'Ann')")
        conn.execute("INSERT INTO consent (user_id, purpose, granted, source, policy_version) "
                     "SELECT id, 'analytics', false, 'settings', '2026-01' FROM users")
    agentdb.rollback("004", database_url=migrated_url)  # 006's downgrade runs first, then 005's archives
    with psycopg.connect(migrated_url) as conn:
        listed = conn.execute("SELECT row_count, restored_at FROM agentdb.archived_tables "
                              "WHERE table_schema = 'public' AND table_name = 'consent'").fetchall()
        view = conn.execute("SELECT to_regclass('public.rollback_archive')").fetchone()
    assert listed == [(1, None)]
    assert view == (None,), "revision 004's application schema, exactly: the view is 006's"

    agentdb.rollback("003", database_url=migrated_url)
    with psycopg.connect(migrated_url) as conn:
        kept = {r[0] for r in conn.execute("SELECT table_name FROM agentdb.archived_tables WHERE restored_at IS NULL")}
    assert {"consent", "collaboration_roles"} <= kept

    agentdb.upgrade("head", database_url=migrated_url)
    with psycopg.connect(migrated_url) as conn:
        restored = conn.execute("SELECT row_count, restored_rows, restored_at IS NOT NULL FROM public.rollback_archive "
                                "WHERE table_name = 'public.consent'").fetchall()
        others = conn.execute("SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a "
                              "WHERE c.oid = 'public.rollback_archive'::regclass AND a.grantee <> c.relowner"
                              ).fetchone()
    assert restored == [(1, 1, True)], "006 lists the history the registry kept below it"
    assert others == (0,), "owner only: nothing for PUBLIC or any other role"


def test_a_fresh_rollback_below_006_keeps_no_archive_objects(migrated_url: str) -> None:
    """Nothing kept, nothing left: 006's downgrade drops the view, the registry and the schema."""
    agentdb.rollback("005", database_url=migrated_url)
    for name in ("public.rollback_archive", "agentdb.archived_tables"):
        assert _scalar(migrated_url, f"SELECT to_regclass('{name}')") is None
    assert _scalar(migrated_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'agentdb_archive'") == 0


def _archive_objects(url: str) -> tuple[object, ...]:
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default, is_identity, identity_generation, "
            "col_description('agentdb.archived_tables'::regclass, ordinal_position::int) "
            "FROM information_schema.columns WHERE table_schema = 'agentdb' AND table_name = 'archived_tables' "
            "ORDER BY ordinal_position").fetchall()
        constraints = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                   "WHERE conrelid = 'agentdb.archived_tables'::regclass ORDER BY 1").fetchall()
        table = conn.execute("SELECT relacl::text, obj_description(oid) FROM pg_class "
                             "WHERE oid = 'agentdb.archived_tables'::regclass").fetchone()
        schema = conn.execute("SELECT nspacl::text, obj_description(oid) FROM pg_namespace "
                              "WHERE nspname = 'agentdb_archive'").fetchone()
    return columns, constraints, table, schema


def test_the_runtime_makes_the_same_archive_schema_and_registry_as_migration_006(  # type: ignore[no-untyped-def]
    database_url: str, plain_analytics_url: str, script_location,
) -> None:
    """Compared with a database at 006 (``plain_analytics_url``): 009 later lets the read-only role read it."""
    script_location(upto="001")
    agentdb.upgrade("001", database_url=database_url)
    _fill(database_url)
    agentdb.downgrade("base", database_url=database_url)  # the runtime creates them, below 006
    assert _archive_objects(database_url) == _archive_objects(plain_analytics_url)
