"""Kinds add_check and add_foreign_key: NOT VALID (new writes checked at once), then VALIDATE while writes go
on; per partition on a partitioned table; a violation stops the change and abort removes the constraint."""

from __future__ import annotations

import psycopg
import pytest
from _online_helpers import fill_analytics
from _online_kind_helpers import Writers, make_tables, par_writes, scalar
from conftest import schema_dump

from agentdb import online
from agentdb.errors import OnlineChangeRefused, OnlineStepFailed


def test_add_check_not_valid_then_validate(database_url: str) -> None:
    make_tables(database_url)
    plan = online.plan("par", "add_check", database_url=database_url, name="par_amount_positive",
                       condition="amount > 0")
    text = plan.sql()
    assert "CHECK (amount > 0) NOT VALID" in text and "VALIDATE CONSTRAINT \"par_amount_positive\"" in text
    with Writers(database_url, par_writes) as writers:
        assert online.run(plan, database_url=database_url).status == "completed"
    assert writers.commits > 0
    assert scalar(database_url, "SELECT convalidated FROM pg_constraint WHERE conname = 'par_amount_positive'")


def test_a_violating_row_stops_the_validation_and_abort_removes_the_constraint(database_url: str) -> None:
    make_tables(database_url)
    before = schema_dump(database_url)
    with pytest.raises(OnlineStepFailed, match="par_small"):
        online.start("par", "add_check", database_url=database_url, name="par_small", condition="amount < 100")
    # NOT VALID already checks new writes
    with pytest.raises(psycopg.errors.CheckViolation), psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO par (name, amount) VALUES ('big', 1000)")
    assert online.abort("par", database_url=database_url).status == "aborted"
    assert schema_dump(database_url) == before


def test_expressions_and_names_are_checked_when_planned(database_url: str) -> None:
    make_tables(database_url, 10)
    with pytest.raises(OnlineChangeRefused, match="does not work here"):
        online.plan("par", "add_check", database_url=database_url, name="c", condition="amout > 0")
    with pytest.raises(OnlineChangeRefused, match="has a constraint named par_pkey"):
        online.plan("par", "add_check", database_url=database_url, name="par_pkey", condition="amount > 0")
    with pytest.raises(OnlineChangeRefused, match="no such table"):
        online.plan("kid", "add_foreign_key", database_url=database_url, name="f", columns="par_id",
                    references="nope")


def test_add_foreign_key_not_valid_then_validate(database_url: str) -> None:
    make_tables(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("ALTER TABLE kid DROP CONSTRAINT kid_par_id_fkey")
    plan = online.plan("kid", "add_foreign_key", database_url=database_url, name="kid_par_fk", columns="par_id",
                       references="par", on_delete="cascade")
    assert "NOT VALID" in plan.sql() and plan.phase_names() == ["add", "validate"]
    assert online.run(plan, database_url=database_url).status == "completed"
    assert scalar(database_url, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'kid_par_fk'"
                  ) == "FOREIGN KEY (par_id) REFERENCES par(id) ON DELETE CASCADE"


def test_add_foreign_key_to_a_partitioned_table_goes_partition_by_partition(migrated_url: str) -> None:
    fill_analytics(migrated_url, 1000)
    with psycopg.connect(migrated_url) as conn:
        conn.execute("ALTER TABLE analytics DROP CONSTRAINT analytics_track_id_fkey")
    result = online.start("analytics", "add_foreign_key", database_url=migrated_url, name="analytics_track_id_fkey",
                          columns=["track_id"], references="tracks", on_delete="SET NULL")
    assert result.status == "completed"
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute("SELECT conrelid::regclass::text, convalidated, conparentid <> 0 FROM pg_constraint "
                            "WHERE conname = 'analytics_track_id_fkey' ORDER BY 1").fetchall()
    assert ("analytics", True, False) in rows
    assert len(rows) > 2 and all(valid for _, valid, _ in rows)
    assert all(child for name, _, child in rows if name != "analytics")  # adopted by the parent's
