"""Migration 011: the event-type index of analytics built online, partition by partition, with writers
running; reverted online; resumed by running the upgrade again after a crash; the seed documents' forms."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
from _online_helpers import ROOT, fill_analytics, leftovers
from _online_kind_helpers import Writers, invalid_indexes, scalar

import agentdb
from agentdb import online

VERSIONS = ROOT / "src" / "agentdb" / "migrations" / "versions"
INDEX = "analytics_event_type_created_at_idx"


def _insert(conn: psycopg.Connection, rng: object) -> None:
    conn.execute("INSERT INTO analytics (event_type, properties) VALUES ('play', '{}')")


def _valid(url: str) -> object:
    return scalar(url, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (INDEX,))


def test_011_reverts_and_applies_online_with_writers_running(migrated_url: str) -> None:
    fill_analytics(migrated_url, 2000)
    assert _valid(migrated_url) is True  # head has it
    with Writers(migrated_url, _insert) as writers:
        agentdb.migrate.downgrade("010", database_url=migrated_url)
        assert _valid(migrated_url) is None
        report = agentdb.upgrade("011", database_url=migrated_url)
    assert writers.commits > 0 and not writers.failures
    assert report.steps[0].online[0]["kind"] == "create_index"
    assert _valid(migrated_url) is True and invalid_indexes(migrated_url) == []
    assert scalar(migrated_url, "SELECT count(*) FROM analytics") == 2000 + writers.commits


def test_a_crash_mid_build_is_carried_on_by_running_the_upgrade_again(migrated_url: str) -> None:
    agentdb.migrate.downgrade("010", database_url=migrated_url)
    env = {**os.environ, "AGENTDB_ONLINE_KILL_AT": "build:step:3"}
    killed = subprocess.run([sys.executable, str(VERSIONS / "011_zero_downtime_migration.py"), "--database-url",
                             migrated_url], env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    [left] = online.status(database_url=migrated_url)
    assert left.interrupted and left.kind == "create_index" and left.step == 3
    assert agentdb.current(database_url=migrated_url).pending == ("011",) or "011" in str(
        agentdb.current(database_url=migrated_url).pending)
    agentdb.upgrade(database_url=migrated_url)
    assert _valid(migrated_url) is True and leftovers(migrated_url) == []
    assert online.status(database_url=migrated_url) == []


def test_the_seed_documents_upgrade_call_applies_the_revision(migrated_url: str) -> None:
    agentdb.migrate.downgrade("010", database_url=migrated_url)
    code = ("import importlib, sys; sys.path.insert(0, sys.argv[1]); "
            "m = importlib.import_module('011_zero_downtime_migration'); m.upgrade()")
    done = subprocess.run([sys.executable, "-c", code, str(VERSIONS)], capture_output=True, text=True,
                          env={**os.environ, "DATABASE_URL": migrated_url}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _valid(migrated_url) is True
    assert agentdb.current(database_url=migrated_url).up_to_date
