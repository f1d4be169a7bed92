"""The conventions of the data model (issue 3, item 8), checked on the catalogue of a database at head.

Every check reads ``pg_catalog`` for all tables in ``public``, so a table added
by a later migration is held to the same rules without touching this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from _model_db import connect

from agentdb.schema import metadata
from agentdb.schema.analytics import AUDITED_TABLES

Conn = psycopg.Connection[tuple[Any, ...]]

#: Tables whose primary key is not a lone bigint identity column, and why.
PK_EXCEPTIONS = {
    # Partitioned by RANGE (created_at) in 007: a partitioned table's primary key must contain the partition key.
    "analytics": ["id", "created_at"],
}

#: How each ON DELETE action must be named in the FK column's COMMENT, so the choice is written down.
ON_DELETE_WORDS = {"c": ("CASCADE",), "n": ("SET NULL", "NULL"), "r": ("RESTRICT",)}


@pytest.fixture
def db(migrated_url: str) -> Iterator[Conn]:
    with connect(migrated_url) as conn:
        yield conn


def _tables(db: Conn) -> list[str]:
    rows = db.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def test_every_declared_table_exists_and_nothing_else(db: Conn) -> None:
    assert set(_tables(db)) == set(metadata.tables)


def test_every_table_and_column_has_a_comment(db: Conn) -> None:
    missing = db.execute(
        "SELECT c.relname, a.attname FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        "   AND (obj_description(c.oid, 'pg_class') IS NULL OR col_description(c.oid, a.attnum) IS NULL)"
        " ORDER BY 1, 2"
    ).fetchall()
    assert missing == []


def test_every_function_in_public_has_a_comment(db: Conn) -> None:
    missing = db.execute(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND obj_description(p.oid, 'pg_proc') IS NULL"
    ).fetchall()
    assert missing == []


def test_every_foreign_key_has_an_index_led_by_its_columns(db: Conn) -> None:
    unindexed = db.execute(
        "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c"
        " JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE n.nspname = 'public' AND c.contype = 'f' AND NOT EXISTS ("
        "   SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid"
        "     AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey"
        "     AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)"
        " ORDER BY 1, 2"
    ).fetchall()
    assert unindexed == []


def test_every_foreign_key_names_its_on_delete_action_in_the_column_comment(db: Conn) -> None:
    rows = db.execute(
        "SELECT c.conrelid::regclass::text, c.conname, c.confdeltype::text,"
        "       col_description(c.conrelid, c.conkey[1])"
        " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE n.nspname = 'public' AND c.contype = 'f'"
        "   AND NOT (SELECT relispartition FROM pg_class WHERE oid = c.conrelid) ORDER BY 1, 2"
    ).fetchall()
    assert rows, "no foreign keys found"
    undocumented = [
        (table, name, action) for table, name, action, comment in rows
        if action not in ON_DELETE_WORDS or not any(word in (comment or "") for word in ON_DELETE_WORDS[action])
    ]
    assert undocumented == []


def test_no_column_is_timestamp_without_time_zone(db: Conn) -> None:
    naive = db.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND data_type IN ('timestamp without time zone', 'time without time zone')"
    ).fetchall()
    assert naive == []


def test_no_enum_types_exist(db: Conn) -> None:
    enums = db.execute(
        "SELECT n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE t.typtype = 'e'"
    ).fetchall()
    assert enums == []


def test_every_primary_key_is_a_bigint_identity_except_the_listed_ones(db: Conn) -> None:
    rows = db.execute(
        "SELECT c.conrelid::regclass::text,"
        "       array_agg(a.attname::text ORDER BY k.ord),"
        "       array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.ord),"
        "       array_agg(a.attidentity::text ORDER BY k.ord)"
        " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
        " CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
        " WHERE n.nspname = 'public' AND c.contype = 'p'"
        "   AND NOT (SELECT relispartition FROM pg_class WHERE oid = c.conrelid) GROUP BY 1 ORDER BY 1"
    ).fetchall()
    keys = {table: (columns, types, identity) for table, columns, types, identity in rows}
    assert set(keys) == set(_tables(db)), "every table has a primary key"
    wrong = []
    for table, (columns, types, identity) in keys.items():
        expected = PK_EXCEPTIONS.get(table, ["id"])
        if columns != expected or types[0] != "bigint" or identity[0] not in ("a", "d"):
            wrong.append((table, columns, types, identity))
    assert wrong == []


def test_every_table_with_updated_at_has_the_set_updated_at_trigger(db: Conn) -> None:
    missing = db.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'updated_at'"
        " WHERE n.nspname = 'public' AND NOT EXISTS ("
        "   SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid"
        "     AND t.tgfoid = 'public.set_updated_at()'::regprocedure)"
    ).fetchall()
    assert missing == []


def test_every_audited_table_has_its_audit_trigger_and_no_other_table_does(db: Conn) -> None:
    rows = db.execute(
        "SELECT c.relname, t.tgargs FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE t.tgfoid = 'public.audit_row_change()'::regprocedure"
    ).fetchall()
    found = {table: bytes(args).split(b"\x00")[0].decode() for table, args in rows}
    assert found == {t.table: t.entity_type for t in AUDITED_TABLES}
