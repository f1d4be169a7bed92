"""The partition conversion of analytics, online, and back: what it carries over, what it refuses, its plan."""

from __future__ import annotations

import psycopg
import pytest
from _online_helpers import change_row, differences, fill_analytics, leftovers, relkind, snapshot
from conftest import schema_dump

from agentdb import online
from agentdb.errors import OnlineChangeBusy, OnlineChangeRefused
from agentdb.online import OnlineSettings, state


def _extras(url: str) -> None:
    """What a real table may have besides the migration's: a user trigger, a grant, comments."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE ROLE online_test_reader NOLOGIN") if not conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = 'online_test_reader'").fetchone() else None
        conn.execute("GRANT SELECT ON analytics TO online_test_reader")
        conn.execute("GRANT UPDATE (country) ON analytics TO online_test_reader")
        conn.execute(
            "CREATE FUNCTION public.analytics_upper_country() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN NEW.country := upper(NEW.country); RETURN NEW; END$$")
        conn.execute(
            "CREATE TRIGGER analytics_upper_country BEFORE INSERT OR UPDATE ON analytics "
            "FOR EACH ROW EXECUTE FUNCTION public.analytics_upper_country()")
        conn.execute("COMMENT ON INDEX analytics_user_id_idx IS 'who did it, for erasure'")
        conn.execute("COMMENT ON CONSTRAINT analytics_pkey ON analytics IS 'id and partition key'")


def test_plan_changes_nothing_and_names_every_lock(migrated_url: str) -> None:
    fill_analytics(migrated_url, 500)
    before = schema_dump(migrated_url)
    plan = online.plan("analytics", database_url=migrated_url, premake=2)
    assert schema_dump(migrated_url) == before
    assert leftovers(migrated_url) == []
    assert plan.phase_names() == ["start", "copy", "constraints", "verify", "cutover", "complete"]
    data = plan.as_dict()
    assert data["rows_estimated"] == 500
    cutover = next(p for p in data["phases"] if p["name"] == "cutover")
    assert cutover["lock_timeout_s"] == 0.2 and cutover["may_wait_s"] > 0
    assert any("ACCESS EXCLUSIVE on public.analytics" in lock for lock in cutover["locks"])
    capture = data["phases"][0]["steps"][1]
    assert capture["contended"] and "SHARE ROW EXCLUSIVE on public.analytics" in capture["locks"][0]
    text = plan.sql()
    for expected in ("PARTITION BY RANGE (\"created_at\")", "FOR KEY SHARE OF s", "ON CONFLICT DO NOTHING",
                     "REPEATABLE READ", "LOCK TABLE \"public\".\"analytics\"", "VALIDATE CONSTRAINT",
                     "SECURITY DEFINER", "-- === phase cutover"):
        assert expected in text, expected
    months = plan.design["partitioning"]["partitions"]
    assert len(months) >= 3  # months that hold rows and 2 ahead


def test_partition_carries_everything_over(migrated_url: str) -> None:
    fill_analytics(migrated_url, 3000)
    _extras(migrated_url)
    snapshot(migrated_url)
    with psycopg.connect(migrated_url) as conn:
        acl_before = conn.execute("SELECT relacl::text FROM pg_class WHERE relname = 'analytics'").fetchone()
        col_acl_before = conn.execute(
            "SELECT attname, attacl::text FROM pg_attribute WHERE attrelid = 'analytics'::regclass "
            "AND attacl IS NOT NULL ORDER BY 1").fetchall()
        comments_before = conn.execute(
            "SELECT obj_description('analytics'::regclass, 'pg_class'), "
            "array_agg(col_description('analytics'::regclass, attnum) ORDER BY attnum) FROM pg_attribute "
            "WHERE attrelid = 'analytics'::regclass AND attnum > 0").fetchone()
        months = conn.execute("SELECT count(DISTINCT date_trunc('month', created_at, 'UTC')) FROM analytics"
                              ).fetchone()
        max_id = conn.execute("SELECT max(id) FROM analytics").fetchone()
    assert months is not None and max_id is not None

    result = online.start("analytics", database_url=migrated_url, premake=3)

    assert result.status == "completed" and result.phase == "done"
    assert relkind(migrated_url) == "p"
    assert differences(migrated_url, "public.analytics", "online_test.before") == (0, 0)
    assert leftovers(migrated_url) == []
    with psycopg.connect(migrated_url) as conn:
        parts = conn.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'analytics'::regclass ORDER BY 1").fetchall()
        names = [p[0] for p in parts]
        assert "analytics_default" in names
        current = conn.execute("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMM')").fetchone()
        assert current is not None and f"analytics_p{current[0]}" in names
        assert len(names) >= int(months[0]) + 1  # every month with rows (+ ahead) and DEFAULT
        assert conn.execute("SELECT count(*) FROM analytics_default").fetchone() == (0,)
        # each partition has its own indexes, attached to the parent's
        unattached = conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'analytics'::regclass) "
            "AND NOT EXISTS (SELECT FROM pg_inherits x WHERE x.inhrelid = i.indexrelid)").fetchone()
        assert unattached == (0,)
        assert conn.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'analytics_default'::regclass").fetchone() == (4,)
        indexes = [r[0] for r in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'analytics'::regclass ORDER BY 1")]
        assert indexes == ["analytics_created_at_idx", "analytics_pkey", "analytics_track_id_idx",
                           "analytics_user_id_idx"]
        fks = conn.execute(
            "SELECT conname, convalidated, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'analytics'::regclass AND contype = 'f' ORDER BY 1").fetchall()
        assert [(f[0], f[1]) for f in fks] == [("analytics_track_id_fkey", True), ("analytics_user_id_fkey", True)]
        assert "ON DELETE SET NULL" in fks[1][2]
        assert conn.execute("SELECT relacl::text FROM pg_class WHERE relname = 'analytics'").fetchone() == acl_before
        assert conn.execute(
            "SELECT attname, attacl::text FROM pg_attribute WHERE attrelid = 'analytics'::regclass "
            "AND attacl IS NOT NULL ORDER BY 1").fetchall() == col_acl_before
        assert conn.execute(
            "SELECT obj_description('analytics'::regclass, 'pg_class'), "
            "array_agg(col_description('analytics'::regclass, attnum) ORDER BY attnum) FROM pg_attribute "
            "WHERE attrelid = 'analytics'::regclass AND attnum > 0").fetchone() == comments_before
        assert conn.execute("SELECT obj_description('analytics_user_id_idx'::regclass, 'pg_class')").fetchone() == (
            "who did it, for erasure",)
        assert conn.execute(
            "SELECT obj_description(oid, 'pg_constraint') FROM pg_constraint WHERE conname = 'analytics_pkey'"
        ).fetchone() == ("id and partition key",)
        # the identity goes on from where the source's was; defaults and the user trigger work
        row = conn.execute("INSERT INTO analytics (event_type, country) VALUES ('play', 'de') "
                           "RETURNING id, country, properties, created_at > now() - interval '1 minute'").fetchone()
        assert row is not None and row[0] > max_id[0] and row[1:] == ("DE", {}, True)
        assert conn.execute("SELECT pg_get_serial_sequence('analytics', 'id')").fetchone() == (
            "public.analytics_id_seq",)
        # the seed's query runs unchanged; a month's query scans one partition
        assert conn.execute("SELECT date_trunc('month', created_at) AS month, COUNT(*) FROM analytics "
                            "GROUP BY month").fetchall()
        plan = "\n".join(r[0] for r in conn.execute(
            f"EXPLAIN SELECT count(*) FROM analytics WHERE created_at >= '{current[0][:4]}-{current[0][4:]}-01 "
            f"00:00+00' AND created_at < '{current[0][:4]}-{current[0][4:]}-01 00:00+00'::timestamptz "
            "+ interval '1 month'"))
        scanned = {name for name in names if name in plan}
        assert scanned == {f"analytics_p{current[0]}"}, plan
        registered = conn.execute(
            "SELECT column_name, premake FROM agentdb.partitioned_tables WHERE table_name = 'analytics'").fetchone()
        assert registered == ("created_at", 3)
    row = change_row(migrated_url, result.id)
    assert row["status"] == "completed" and row["finished_at"] is not None
    assert row["rows_done"] == 3000 and row["lock_hold_ms"] is not None and row["lock_hold_ms"] < 2000
    assert set(row["timings"]) == {"start", "copy", "constraints", "verify", "cutover", "complete"}
    assert row["db_user"] and row["host"] and row["client_pid"]


def test_round_trip_restores_the_plain_table_exactly(migrated_url: str) -> None:
    fill_analytics(migrated_url, 1000)
    before = schema_dump(migrated_url, "--table=public.analytics")
    snapshot(migrated_url)
    online.start("analytics", database_url=migrated_url)
    assert relkind(migrated_url) == "p"
    back = online.start("analytics", "unpartition", database_url=migrated_url)
    assert back.status == "completed"
    assert relkind(migrated_url) == "r"
    assert schema_dump(migrated_url, "--table=public.analytics") == before
    assert differences(migrated_url, "public.analytics", "online_test.before") == (0, 0)
    assert leftovers(migrated_url) == []
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname ~ '^analytics_p[0-9]{6}$'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM agentdb.partitioned_tables").fetchone() == (0,)


def test_unknown_names_are_refused_from_the_catalogue(migrated_url: str) -> None:
    with pytest.raises(OnlineChangeRefused, match="no such table"):
        online.plan("analytics; DROP TABLE users", database_url=migrated_url)
    with pytest.raises(OnlineChangeRefused, match="no column 'made_at'"):
        online.plan("analytics", database_url=migrated_url, column="made_at")
    with pytest.raises(OnlineChangeRefused, match="unknown kind"):
        online.plan("analytics", "shuffle", database_url=migrated_url)
    with pytest.raises(OnlineChangeRefused, match="unknown option"):
        online.plan("analytics", database_url=migrated_url, colunm="created_at")
    with pytest.raises(OnlineChangeRefused, match="not timestamp with time zone"):
        online.plan("users", database_url=migrated_url, column="email")
    with pytest.raises(OnlineChangeRefused, match="not partitioned"):
        online.plan("analytics", "unpartition", database_url=migrated_url)


def test_what_cannot_be_carried_over_is_refused_clearly(migrated_url: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        conn.execute("CREATE VIEW recent_plays AS SELECT * FROM analytics WHERE event_type = 'play'")
        conn.execute("CREATE TABLE analytics_notes (id bigint, created_at timestamptz, note text, "
                     "FOREIGN KEY (id, created_at) REFERENCES analytics (id, created_at))")
    with pytest.raises(OnlineChangeRefused) as refused:
        online.plan("analytics", database_url=migrated_url)
    message = str(refused.value)
    assert "view public.recent_plays depends on it" in message
    assert "analytics_notes_id_created_at_fkey on public.analytics_notes" in message
    # the users table: its primary key does not include the partition column
    with pytest.raises(OnlineChangeRefused, match="does not include created_at"):
        online.plan("users", database_url=migrated_url)


def test_a_second_change_of_the_table_is_refused_naming_the_holder(migrated_url: str) -> None:
    fill_analytics(migrated_url, 200)
    with psycopg.connect(migrated_url, autocommit=True) as holder:
        k1, k2 = state.table_lock_key("public", "analytics")
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (k1, k2))
        pid = holder.info.backend_pid
        with pytest.raises(OnlineChangeBusy, match=f"pid {pid}") as busy:
            online.start("analytics", database_url=migrated_url, wait=0.5)
        assert busy.value.holder_pid == pid
    assert leftovers(migrated_url) == []


def test_truncate_is_refused_while_the_change_runs(migrated_url: str) -> None:
    from _online_helpers import drive

    fill_analytics(migrated_url, 300)
    killed = drive(migrated_url, "start", kill_at="copy:before")
    assert killed.returncode == -9, killed.stderr
    with psycopg.connect(migrated_url) as conn, pytest.raises(psycopg.errors.ObjectInUse, match="TRUNCATE"):
        conn.execute("TRUNCATE analytics")
    online.abort("analytics", database_url=migrated_url)
    assert leftovers(migrated_url) == []


def test_writes_under_session_replication_role_replica_are_captured(migrated_url: str) -> None:
    from _online_helpers import drive

    fill_analytics(migrated_url, 300)
    snapshot(migrated_url)
    assert drive(migrated_url, "start", kill_at="copy:before").returncode == -9
    with psycopg.connect(migrated_url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("INSERT INTO analytics (event_type) VALUES ('search')")
        conn.execute("DELETE FROM analytics WHERE id = (SELECT min(id) FROM analytics)")
        conn.execute("CREATE TABLE online_test.after AS SELECT * FROM analytics")
    online.resume("analytics", database_url=migrated_url)
    assert differences(migrated_url, "public.analytics", "online_test.after") == (0, 0)


def test_settings_round_trip() -> None:
    settings = OnlineSettings(lock_timeout=0.5, batch_size=10)
    assert OnlineSettings.from_dict({**settings.as_dict(), "unknown": 1}) == settings
    assert settings.worst_wait() > settings.lock_timeout * settings.lock_retries


@pytest.fixture
def migrated_url(plain_analytics_url: str) -> str:
    """These tests convert analytics themselves: a database at 006, where it is still one plain table (at head,
    migration 007 has partitioned it)."""
    return plain_analytics_url
