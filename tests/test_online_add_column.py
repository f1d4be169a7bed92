"""Kind add_column: a constant default with no rewrite, a batched backfill while writers insert without the
column, NOT NULL by a validated check (no scan under ACCESS EXCLUSIVE), crash and resume, abort when expanded."""

from __future__ import annotations

import random

import psycopg
import sqlalchemy as sa
from _online_helpers import fill_analytics, leftovers
from _online_kind_helpers import SMALL, Writers, drive, make_tables, scalar
from conftest import schema_dump

from agentdb import online
from agentdb.online import OnlineSettings


def _relfilenode(url: str, table: str) -> object:
    return scalar(url, "SELECT relfilenode FROM pg_class WHERE oid = %s::regclass", (table,))


def test_a_constant_default_not_null_column_rewrites_nothing(database_url: str) -> None:
    make_tables(database_url)
    before = _relfilenode(database_url, "par")
    plan = online.plan("par", "add_column", database_url=database_url, column="score", type=sa.Integer, default=0,
                       nullable=False)
    text = plan.sql()
    assert "ADD COLUMN \"score\" INTEGER DEFAULT CAST(0 AS integer)" in text.replace("integer DEFAULT", "INTEGER "
                                                                                      "DEFAULT")
    assert "IS NOT NULL) NOT VALID" in text and "SET NOT NULL" in text
    assert online.run(plan, database_url=database_url).status == "completed"
    assert _relfilenode(database_url, "par") == before
    assert scalar(database_url, "SELECT count(*) FROM par WHERE score = 0") == 3000
    assert scalar(database_url, "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'par'::regclass "
                  "AND attname = 'score'")
    assert scalar(database_url, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'par'::regclass "
                  "AND contype = 'c'") == 0  # the helper check is gone


def test_backfill_with_writers_and_a_crash_then_not_null(migrated_url: str) -> None:
    fill_analytics(migrated_url, 3000)
    options = {"kind": "add_column", "column": "ms", "type": "integer", "backfill": "(properties->>'ms')::int",
               "nullable": False}

    def insert_without_the_column(conn: psycopg.Connection, rng: object) -> None:
        conn.execute("INSERT INTO analytics (event_type, properties) VALUES ('play', jsonb_build_object('ms', 7))")
        conn.execute("UPDATE analytics SET properties = jsonb_build_object('ms', 9) WHERE id = "
                     "(SELECT min(id) FROM analytics WHERE properties->>'ms' <> '9')")

    with Writers(migrated_url, insert_without_the_column) as writers:
        killed = drive(migrated_url, "start", kill_at="backfill:batch:3", settings=SMALL, extra=dict(options))
        assert killed.returncode == -9, killed.stderr[-2000:]
        [found] = online.status(database_url=migrated_url)
        # three batches of 200 keys committed; rows the writers touched first were filled by the trigger
        assert found.interrupted and found.phase == "backfill" and 500 < found.rows_done <= 600
        done = online.resume("analytics", database_url=migrated_url)
    assert done.status == "completed" and writers.commits > 0
    assert scalar(migrated_url, "SELECT count(*) FROM analytics WHERE ms IS DISTINCT FROM (properties->>'ms')::int"
                  ) == 0
    assert scalar(migrated_url, "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'analytics'::regclass "
                  "AND attname = 'ms'")
    assert leftovers(migrated_url) == []  # the fill trigger went at completion


def test_expanded_stays_until_complete_and_abort_restores_the_table(database_url: str) -> None:
    make_tables(database_url)
    before = schema_dump(database_url)
    settings = OnlineSettings(complete=False, **SMALL)  # type: ignore[arg-type]
    result = online.start("par", "add_column", database_url=database_url, settings=settings, column="label",
                          type="text", backfill="upper(city)")
    assert result.status == "cut_over" and result.phase == "complete"
    with psycopg.connect(database_url) as conn:  # the old application, unaware of the column
        conn.execute("INSERT INTO par (name, city) VALUES ('n', 'paris')")
        assert conn.execute("SELECT label FROM par WHERE name = 'n'").fetchone() == ("PARIS",)
    assert online.abort("par", database_url=database_url).status == "aborted"
    assert schema_dump(database_url) == before
    assert leftovers(database_url) == []


def test_complete_contracts_an_expanded_change(database_url: str) -> None:
    make_tables(database_url, 500)
    settings = OnlineSettings(complete=False)
    online.start("par", "add_column", database_url=database_url, settings=settings, column="label", type="text",
                 backfill="upper(city)")
    def update_only(conn: psycopg.Connection, rng: random.Random) -> None:
        conn.execute("UPDATE par SET amount = %s WHERE id = %s", (rng.randrange(1000), rng.randrange(1, 500)))

    with Writers(database_url, update_only) as writers:
        assert online.complete("par", database_url=database_url).status == "completed"
    assert writers.commits > 0
    assert leftovers(database_url) == []
    assert scalar(database_url, "SELECT count(*) FROM par WHERE label IS DISTINCT FROM upper(city)") == 0


def test_backfill_falls_back_to_the_default_which_is_set_at_the_contraction(database_url: str) -> None:
    make_tables(database_url, 400)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE par SET city = NULL WHERE id % 4 = 0")
    settings = OnlineSettings(complete=False)
    online.start("par", "add_column", database_url=database_url, settings=settings, column="label", type="text",
                 default="none", backfill="upper(city)", nullable=False)
    with psycopg.connect(database_url) as conn:  # the old version: the expression, else the default
        conn.execute("INSERT INTO par (name, city) VALUES ('x', 'oslo'), ('y', NULL)")
        assert conn.execute("SELECT label FROM par WHERE name IN ('x', 'y') ORDER BY name").fetchall() == [
            ("OSLO",), ("none",)]
        assert conn.execute("SELECT column_default FROM information_schema.columns WHERE table_name = 'par' "
                            "AND column_name = 'label'").fetchone() == (None,)
    online.complete("par", database_url=database_url)
    assert scalar(database_url, "SELECT count(*) FROM par WHERE label IS DISTINCT FROM coalesce(upper(city), "
                  "'none')") == 0
    assert scalar(database_url, "SELECT column_default FROM information_schema.columns WHERE table_name = 'par' "
                  "AND column_name = 'label'") == "'none'::text"
