"""Kind alter_column_type: integer -> bigint of a key that foreign keys reference, with writers running and a
crash in the copy; a USING conversion; abort."""

from __future__ import annotations

import psycopg
from _online_helpers import differences, leftovers
from _online_kind_helpers import SMALL, Writers, drive, make_tables, par_writes, scalar
from conftest import schema_dump

from agentdb import online

INT_TO_BIGINT = {"kind": "alter_column_type", "column": "id", "type": "bigint"}


def _driver(url: str, action: str, kill_at: str | None = None) -> None:
    result = drive(url, action, kill_at=kill_at, settings=SMALL, extra=dict(INT_TO_BIGINT), table="par")
    assert result.returncode == (-9 if kill_at else 0), result.stderr[-2000:]


def test_integer_to_bigint_of_a_referenced_key_with_writers_and_a_crash(database_url: str) -> None:
    make_tables(database_url)
    plan = online.plan("par", "alter_column_type", database_url=database_url, column="id", type="bigint")
    text = plan.sql()
    assert 'ALTER TABLE "public"."kid" DROP CONSTRAINT "kid_par_id_fkey"' in text
    assert 'ADD CONSTRAINT "kid_par_id_fkey" FOREIGN KEY (par_id) REFERENCES public.par(id) ON DELETE CASCADE ' \
           'NOT VALID' in text
    with Writers(database_url, par_writes) as writers:
        _driver(database_url, "start", "copy:batch:4")
        _driver(database_url, "resume", "cutover:locked")
        _driver(database_url, "resume")
    assert writers.commits > 50 and len(writers.failures) < writers.commits / 20, writers.failures[:3]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                            "'par'::regclass AND attname = 'id'").fetchone() == ("bigint",)
        assert conn.execute("SELECT confrelid::regclass::text, convalidated FROM pg_constraint "
                            "WHERE conname = 'kid_par_id_fkey'").fetchone() == ("par", True)
        assert conn.execute("SELECT data_type, max_value FROM pg_sequences WHERE sequencename = 'par_id_seq'"
                            ).fetchone() == ("bigint", 9223372036854775807)
        assert conn.execute("SELECT count(*) FROM kid WHERE par_id NOT IN (SELECT id FROM par)").fetchone() == (0,)
        # every acknowledged write of the writers (mirrored by par's own trigger, carried to the new table)
        assert conn.execute("SELECT count(*) FROM (SELECT id, amount FROM par EXCEPT ALL "
                            "SELECT id, amount FROM online_test.par_ref) x").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM (SELECT id, amount FROM online_test.par_ref EXCEPT ALL "
                            "SELECT id, amount FROM par) x").fetchone() == (0,)
    assert leftovers(database_url) == []


def test_using_conversion_and_abort(database_url: str) -> None:
    make_tables(database_url, 500)
    with psycopg.connect(database_url) as conn:
        conn.execute("DROP TRIGGER par_mirror ON par")
        conn.execute("CREATE TABLE online_test.before AS SELECT * FROM par")
    before = schema_dump(database_url)
    result = drive(database_url, "start", kill_at="copy:batch:1", settings=SMALL, table="par",
                   extra={"kind": "alter_column_type", "column": "amount", "type": "numeric(12,2)",
                          "using": "amount / 100.0"})
    assert result.returncode == -9, result.stderr[-2000:]
    assert online.abort("par", database_url=database_url).status == "aborted"
    assert schema_dump(database_url) == before and leftovers(database_url) == []
    assert differences(database_url, "public.par", "online_test.before") == (0, 0)
    done = online.start("par", "alter_column_type", database_url=database_url, column="amount",
                        type="numeric(12,2)", using="amount / 100.0")
    assert done.status == "completed"
    assert scalar(database_url, "SELECT amount FROM par WHERE id = 250") == 2.5
