"""Kinds rename_column, split_column and merge_columns, expand/contract: while expanded, the old and the new
application version both read and write correctly (each sees the other's writes), with no search_path or
view; complete contracts; abort restores."""

from __future__ import annotations

import psycopg
from _online_helpers import leftovers
from _online_kind_helpers import make_tables, scalar
from conftest import schema_dump

from agentdb import online
from agentdb.online import OnlineSettings

EXPANDED = OnlineSettings(complete=False, batch_size=200, min_batch_size=200, max_batch_size=200)


def test_rename_both_versions_read_and_write_then_contract(database_url: str) -> None:
    make_tables(database_url)
    result = online.start("par", "rename_column", database_url=database_url, settings=EXPANDED, column="city",
                          new_name="town")
    assert result.status == "cut_over"
    with psycopg.connect(database_url, autocommit=True) as old, psycopg.connect(database_url, autocommit=True) as new:
        assert new.execute("SELECT count(*) FROM par WHERE town IS DISTINCT FROM city").fetchone() == (0,)
        old.execute("INSERT INTO par (name, city) VALUES ('a', 'old-city')")
        new.execute("INSERT INTO par (name, town) VALUES ('b', 'new-town')")
        old.execute("UPDATE par SET city = 'old-update' WHERE id = 1")
        new.execute("UPDATE par SET town = 'new-update' WHERE id = 2")
        assert new.execute("SELECT town FROM par WHERE name = 'a'").fetchone() == ("old-city",)
        assert old.execute("SELECT city FROM par WHERE name = 'b'").fetchone() == ("new-town",)
        assert new.execute("SELECT town FROM par WHERE id = 1").fetchone() == ("old-update",)
        assert old.execute("SELECT city FROM par WHERE id = 2").fetchone() == ("new-update",)
    assert online.complete("par", database_url=database_url).status == "completed"
    with psycopg.connect(database_url) as conn:
        columns = [r[0] for r in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'par'::regclass "
                                              "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")]
        assert "town" in columns and "city" not in columns
        # the original column took the name: its index came along
        assert conn.execute("SELECT pg_get_indexdef('par_city_idx'::regclass)").fetchone() == (
            "CREATE INDEX par_city_idx ON public.par USING btree (town)",)
        assert conn.execute("SELECT town FROM par WHERE id = 2").fetchone() == ("new-update",)
    assert leftovers(database_url) == []


def test_split_and_merge_keep_both_versions_in_step(database_url: str) -> None:
    make_tables(database_url, 500)
    online.start("par", "split_column", database_url=database_url, settings=EXPANDED, column="name",
                 into={"first_name": ("text", "split_part(name, ' ', 1)"),
                       "last_name": ("text", "split_part(name, ' ', 2)")},
                 merge_back="first_name || ' ' || last_name")
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT first_name, last_name FROM par WHERE id = 7").fetchone() == ("first7", "last7")
        conn.execute("INSERT INTO par (name) VALUES ('Ada Lovelace')")  # old version
        conn.execute("INSERT INTO par (first_name, last_name) VALUES ('Alan', 'Turing')")  # new version
        conn.execute("UPDATE par SET last_name = 'Hopper' WHERE id = 7")  # new version
        assert conn.execute("SELECT first_name, last_name FROM par WHERE name = 'Ada Lovelace'").fetchone() == (
            "Ada", "Lovelace")
        assert conn.execute("SELECT name FROM par WHERE first_name = 'Alan'").fetchone() == ("Alan Turing",)
        assert conn.execute("SELECT name FROM par WHERE id = 7").fetchone() == ("first7 Hopper",)
    online.complete("par", database_url=database_url)
    assert scalar(database_url, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'par'::regclass "
                  "AND attname = 'name' AND NOT attisdropped") == 0
    online.start("par", "merge_columns", database_url=database_url, settings=EXPANDED,
                 columns=["city", "country"], into="place", type="text", expression="city || '/' || country",
                 split_back={"city": "split_part(place, '/', 1)", "country": "split_part(place, '/', 2)"})
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO par (first_name, city, country) VALUES ('o', 'Oslo', 'NO')")  # old version
        conn.execute("INSERT INTO par (first_name, place) VALUES ('n', 'Lyon/FR')")  # new version
        assert conn.execute("SELECT place FROM par WHERE first_name = 'o'").fetchone() == ("Oslo/NO",)
        assert conn.execute("SELECT city, country FROM par WHERE first_name = 'n'").fetchone() == ("Lyon", "FR")
        assert conn.execute("SELECT count(*) FROM par WHERE place IS DISTINCT FROM city || '/' || country"
                            ).fetchone() == (0,)
    online.complete("par", database_url=database_url)
    assert leftovers(database_url) == []


def test_abort_while_expanded_restores_the_table(database_url: str) -> None:
    make_tables(database_url, 300)
    before = schema_dump(database_url)
    online.start("par", "rename_column", database_url=database_url, settings=EXPANDED, column="city",
                 new_name="town")
    assert online.abort("par", database_url=database_url).status == "aborted"
    assert schema_dump(database_url) == before and leftovers(database_url) == []
