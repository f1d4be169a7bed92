"""The kinds from a migration's upgrade(): a real run through the engine, ``--expand-only`` (stays expanded,
``agentdb online complete`` contracts), the dry run's plan and ``agentdb sql``'s phases."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from _online_helpers import leftovers
from _online_kind_helpers import make_tables, scalar
from conftest import fixture_migration, run_cli

import agentdb
from agentdb import online

UPGRADE = """
from agentdb import online
online.create_index("par", "par_amount_idx", ["amount"])
online.add_column("par", "label", sa.Text, backfill="upper(city)", nullable=False)
online.rename_column("kid", "note", "remark")
"""
DOWNGRADE = """
from agentdb import online
online.rename_column("kid", "remark", "note")
online.drop_index("par", "par_amount_idx")
"""


@pytest.fixture
def with_012(migrated_url: str, script_location: Callable[..., Path]) -> str:
    make_tables(migrated_url, 500)
    script_location({"012_fixture_online.py": fixture_migration("012", "011", UPGRADE, DOWNGRADE)}, upto="011")
    return migrated_url


def _columns(url: str, table: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                                           "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,))]


def test_dry_run_plans_every_change_and_changes_nothing(with_012: str) -> None:
    report = agentdb.migrate.dry_run("head", database_url=with_012)
    [step] = report.steps
    kinds = [change["kind"] for change in step.observed.online]
    assert kinds == ["create_index", "add_column", "rename_column"]
    phases = [p["name"] for p in step.observed.online[1]["plan"]["phases"]]
    assert phases == ["expand", "backfill", "constraints", "verify", "complete"]
    assert "label" not in _columns(with_012, "par") and leftovers(with_012) == []
    assert scalar(with_012, "SELECT to_regclass('par_amount_idx')") is None


def test_sql_prints_each_change_phase_by_phase(with_012: str) -> None:
    text = agentdb.migrate.sql("011:012", database_url=with_012)
    assert "-- online change: add_column of par" in text
    assert "-- === phase backfill" in text and "-- === phase constraints" in text
    assert "CREATE INDEX CONCURRENTLY" in text and "RENAME COLUMN" in text
    assert "must be run by agentdb upgrade" in text


def test_upgrade_runs_them_and_expand_only_leaves_them_expanded(with_012: str) -> None:
    report = agentdb.upgrade("head", database_url=with_012, expand_only=True)
    [step] = report.steps
    statuses = {change["kind"]: change["status"] for change in step.online}
    # expand/contract kinds stop expanded; the others have nothing to contract
    assert statuses == {"create_index": "completed", "add_column": "cut_over", "rename_column": "cut_over"}
    assert agentdb.current(database_url=with_012).up_to_date
    assert {"note", "remark"} <= set(_columns(with_012, "kid"))  # both application versions work
    with psycopg.connect(with_012) as conn:  # the old version writes note, the new one reads remark
        conn.execute("INSERT INTO kid (par_id, note) VALUES (1, 'from the old version')")
        assert conn.execute("SELECT remark FROM kid WHERE note = 'from the old version'").fetchone() == (
            "from the old version",)
    result = run_cli("--database-url", with_012, "online", "complete", "kid")
    assert result.returncode == 0, result.stderr
    assert online.complete("par", database_url=with_012).status == "completed"
    assert "note" not in _columns(with_012, "kid") and "remark" in _columns(with_012, "kid")
    assert leftovers(with_012) == []
    assert scalar(with_012, "SELECT count(*) FROM par WHERE label IS DISTINCT FROM upper(city)") == 0
    # the downgrade is an online change back
    agentdb.migrate.downgrade("011", database_url=with_012)
    assert "note" in _columns(with_012, "kid") and "remark" not in _columns(with_012, "kid")
    assert scalar(with_012, "SELECT count(*) FROM kid WHERE note = 'from the old version'") == 1
