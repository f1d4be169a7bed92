"""Kind alter_column_type: integer -> bigint of a key that foreign keys reference, with writers running and a
crash in the copy; a USING conversion; abort; the same on partitioned analytics, which keeps its partitions."""

from __future__ import annotations

import random

import psycopg
import pytest
from _online_helpers import differences, fill_analytics, leftovers, snapshot
from _online_kind_helpers import SMALL, Writers, drive, make_tables, par_writes, scalar
from conftest import schema_dump

from agentdb import online
from agentdb.errors import OnlineChangeRefused
from agentdb.partitions import list_partitions, maintain_partitions

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


def _analytics_with_duration(url: str, rows: int) -> None:
    """analytics at head (partitioned by 007) with ``rows`` rows and an integer ``duration_ms`` to widen."""
    fill_analytics(url, rows)
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE analytics ADD COLUMN duration_ms integer")
        conn.execute("UPDATE analytics SET duration_ms = (id * 37) % 600000")


def _layout(url: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The partitions as agentdb lists them, and every index of analytics and its partitions, by name."""
    parts = [(p.partition, p.kind, p.bounds, p.managed) for p in list_partitions("analytics", database_url=url)]
    with psycopg.connect(url) as conn:
        indexes = conn.execute(
            "SELECT indexrelid::regclass::text, indrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
            "WHERE indrelid IN (SELECT relid FROM pg_partition_tree('analytics')) ORDER BY 1").fetchall()
    return parts, indexes


def _analytics_writes(conn: psycopg.Connection, rng: random.Random) -> None:
    """Writes of the application to partitioned analytics: insert (this month), update duration_ms, delete."""
    op = rng.random()
    if op < 0.4:
        conn.execute("INSERT INTO analytics (event_type, properties, duration_ms) VALUES ('play', '{}', %s)",
                     (rng.randrange(10**6),))
    elif op < 0.8:
        conn.execute("UPDATE analytics SET duration_ms = %s WHERE id = %s", (rng.randrange(10**6),
                                                                           rng.randrange(1, 2000)))
    else:
        conn.execute("DELETE FROM analytics WHERE id = %s", (rng.randrange(1, 2000),))


def test_a_partitioned_table_keeps_its_partitions_with_writers_and_a_crash(migrated_url: str) -> None:
    url = migrated_url
    _analytics_with_duration(url, 2000)
    with psycopg.connect(url) as conn:
        # A table whose foreign key references analytics' key: it moves to the new table at the cut-over.
        conn.execute("CREATE TABLE public.analytics_note (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                     "event_id bigint NOT NULL, event_at timestamptz NOT NULL, FOREIGN KEY (event_id, event_at) "
                     "REFERENCES analytics (id, created_at) ON DELETE CASCADE)")
        conn.execute("INSERT INTO analytics_note (event_id, event_at) SELECT id, created_at FROM analytics "
                     "WHERE id % 7 = 0")
        # Every committed write of analytics, mirrored by its own trigger (carried over to the new table).
        conn.execute("CREATE SCHEMA online_test")
        conn.execute("CREATE TABLE online_test.analytics_ref (id bigint, created_at timestamptz, event_type text, "
                     "duration_ms bigint, PRIMARY KEY (id, created_at))")
        conn.execute("INSERT INTO online_test.analytics_ref SELECT id, created_at, event_type, duration_ms "
                     "FROM analytics")
        conn.execute(
            "CREATE FUNCTION online_test.mirror() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
            "IF TG_OP = 'DELETE' THEN DELETE FROM online_test.analytics_ref WHERE id = OLD.id "
            "AND created_at = OLD.created_at; RETURN NULL; END IF; "
            "INSERT INTO online_test.analytics_ref VALUES (NEW.id, NEW.created_at, NEW.event_type, NEW.duration_ms) "
            "ON CONFLICT (id, created_at) DO UPDATE SET duration_ms = EXCLUDED.duration_ms; RETURN NULL; END$$")
        conn.execute("CREATE TRIGGER analytics_mirror AFTER INSERT OR UPDATE OR DELETE ON analytics FOR EACH ROW "
                     "EXECUTE FUNCTION online_test.mirror()")
    parts, indexes = _layout(url)
    assert len(parts) > 2 and all(managed for *_, managed in parts)
    plan = online.plan("analytics", "alter_column_type", database_url=url, column="duration_ms", type="bigint")
    assert "PARTITION BY RANGE (created_at)" in plan.sql() and "PARTITION OF" in plan.sql()
    assert any("same 6 partitions" in note for note in plan.notes)
    change = {"kind": "alter_column_type", "column": "duration_ms", "type": "bigint"}
    with Writers(url, _analytics_writes) as writers:
        result = drive(url, "start", kill_at="copy:batch:3", settings=SMALL, extra=dict(change))
        assert result.returncode == -9, result.stderr[-2000:]
        result = drive(url, "resume", settings=SMALL)
        assert result.returncode == 0, result.stderr[-2000:]
    assert writers.commits > 30 and len(writers.failures) < writers.commits / 20, writers.failures[:3]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT DISTINCT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attname = "
                            "'duration_ms' AND attrelid IN (SELECT relid FROM pg_partition_tree('analytics'))"
                            ).fetchall() == [("bigint",)]
        assert conn.execute("SELECT confrelid::regclass::text, convalidated FROM pg_constraint WHERE conrelid = "
                            "'analytics_note'::regclass AND contype = 'f' AND conparentid = 0").fetchone() == (
            "analytics", True)
        assert conn.execute("SELECT count(*) FROM analytics_note n WHERE NOT EXISTS (SELECT FROM analytics a "
                            "WHERE a.id = n.event_id AND a.created_at = n.event_at)").fetchone() == (0,)
        for left, right in (("analytics", "online_test.analytics_ref"), ("online_test.analytics_ref", "analytics")):
            assert conn.execute(f"SELECT count(*) FROM (SELECT id, created_at, event_type, duration_ms FROM {left} "
                                f"EXCEPT ALL SELECT id, created_at, event_type, duration_ms FROM {right}) x"
                                ).fetchone() == (0,), left
    # The same partitions (bounds, DEFAULT, names), still managed; the same indexes under the same names.
    assert _layout(url) == (parts, indexes)
    assert leftovers(url) == []
    with psycopg.connect(url) as conn:
        # Maintenance moves no row that a foreign key references or a DELETE trigger sees.
        conn.execute("DROP TABLE analytics_note")
        conn.execute("DROP TRIGGER analytics_mirror ON analytics")
    report = maintain_partitions(database_url=url, table="analytics")
    assert report.ok and report.changed, report.summary()  # drains the DEFAULT partition's past months
    assert len(list_partitions("analytics", database_url=url)) > len(parts)


def test_abort_of_a_partitioned_type_change_leaves_the_schema_as_it_was(migrated_url: str) -> None:
    url = migrated_url
    _analytics_with_duration(url, 600)
    snapshot(url)
    before, layout = schema_dump(url), _layout(url)
    result = drive(url, "start", kill_at="copy:batch:1", settings=SMALL,
                   extra={"kind": "alter_column_type", "column": "duration_ms", "type": "bigint"})
    assert result.returncode == -9, result.stderr[-2000:]
    assert online.abort("analytics", database_url=url).status == "aborted"
    assert schema_dump(url) == before and _layout(url) == layout and leftovers(url) == []
    assert differences(url, "public.analytics", "online_test.before") == (0, 0)
    with pytest.raises(OnlineChangeRefused, match="column created_at is in its partition key"):
        online.plan("analytics", "alter_column_type", database_url=url, column="created_at", type="timestamp")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE INDEX analytics_p202611_own_idx ON analytics_p202611 (country)")
    with pytest.raises(OnlineChangeRefused, match=r"partition public\.analytics_p202611 has its own index "
                                                  r"analytics_p202611_own_idx"):
        online.plan("analytics", "alter_column_type", database_url=url, column="duration_ms", type="bigint")
