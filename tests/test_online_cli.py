"""``agentdb online plan|start`` take every kind's options; ``online set`` tunes a running change."""

from __future__ import annotations

import json
import os
import subprocess
import time

import psycopg
import pytest
from _online_kind_helpers import make_tables
from conftest import BIN, run_cli

from agentdb import online
from agentdb.cli.online import KIND_NAMES
from agentdb.errors import OnlineChangeRefused


def test_the_kinds_named_in_the_help_are_the_engine_kinds() -> None:
    assert KIND_NAMES == tuple(sorted(online.KINDS))


def _scalar(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


def test_plan_and_start_a_new_kind_with_its_options(migrated_url: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        conn.execute("INSERT INTO users (email, display_name) SELECT 'u' || g || '@example.com', 'User ' || g "
                     "FROM generate_series(1, 50) g")
    common = ("--database-url", migrated_url, "online")
    planned = run_cli(*common, "plan", "users", "add_column", "--column", "plays", "--type", "integer",
                      "--default", "0", "--not-null", "--json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["kind"] == "add_column"
    assert _scalar(migrated_url, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'users'::regclass "
                                 "AND attname = 'plays'") == 0, "plan changed the table"

    started = run_cli(*common, "start", "users", "add_column", "--column", "plays", "--type", "integer",
                      "--default", "0", "--not-null")
    assert started.returncode == 0, started.stderr
    assert "add_column of public.users" in started.stdout
    assert _scalar(migrated_url, "SELECT count(*) FROM users WHERE plays = 0") == 50
    assert _scalar(migrated_url, "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass "
                                 "AND attname = 'plays'") is True
    # --option gives any other option, its value read as JSON (here a list) or else as text
    renamed = run_cli(*common, "start", "users", "create_index", "--name", "users_plays_idx", "-o",
                      'columns=["plays"]', "-o", "where=plays > 0")
    assert renamed.returncode == 0, renamed.stderr
    assert _scalar(migrated_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = "
                                 "'users_plays_idx'::regclass") is True


def test_an_option_the_kind_does_not_take_or_a_bad_pair_is_refused_by_name(migrated_url: str) -> None:
    common = ("--database-url", migrated_url, "online", "plan", "users")
    unknown = run_cli(*common, "add_check", "--name", "c", "-o", "condition=true", "--column", "email")
    assert unknown.returncode != 0
    assert "unknown option(s) column" in unknown.stderr and "add_check takes name, condition" in unknown.stderr
    missing = run_cli(*common, "alter_column_type", "--column", "email")
    assert missing.returncode != 0 and "alter_column_type needs type" in missing.stderr, missing.stderr
    bad = run_cli(*common, "add_check", "-o", "condition")
    assert bad.returncode == 2 and "'condition' is not KEY=VALUE" in bad.stderr, bad.stderr


def test_set_changes_a_running_change_at_its_next_batch(database_url: str) -> None:
    """A change held by its throttle expression is let go and given fixed batches of 40 rows while it runs."""
    make_tables(database_url, 3000)
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE online_test.gate (held boolean)")
        conn.execute("INSERT INTO online_test.gate VALUES (true)")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    process = subprocess.Popen(
        [str(BIN / "agentdb"), "--database-url", database_url, "online", "start", "par", "alter_column_type",
         "--column", "amount", "--type", "bigint", "--throttle-sql", "EXISTS (SELECT FROM online_test.gate)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            found = online.status(database_url=database_url)
            if found and found[0].waiting and "throttle" in found[0].waiting:
                break
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
        assert found[0].phase == "copy" and found[0].rows_done == 0
        tuned = run_cli("--database-url", database_url, "online", "set", "par", "--batch-size", "40",
                        "--throttle-sql", "")
        assert tuned.returncode == 0, tuned.stderr
        assert "now: batch_size 40, throttle_sql off" in tuned.stdout, tuned.stdout
        _out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status, batch_size, settings->>'max_batch_size', settings->>'throttle_sql' "
                           "FROM agentdb.online_changes").fetchone()
    assert row == ("completed", 40, "40", None)
    assert _scalar(database_url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                 "WHERE attrelid = 'par'::regclass AND attname = 'amount'") == "bigint"


def test_set_refuses_what_it_cannot_change_and_a_finished_change(migrated_url: str) -> None:
    both = run_cli("--database-url", migrated_url, "online", "set", "analytics", "--batch-size", "5",
                   "--batch-seconds", "0.2")
    assert both.returncode == 2 and "not both" in both.stderr
    nothing = run_cli("--database-url", migrated_url, "online", "set", "analytics")
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    finished = run_cli("--database-url", migrated_url, "online", "set", "analytics", "--batch-size", "5")
    assert finished.returncode != 0 and "no unfinished online change" in finished.stderr, finished.stderr
    with pytest.raises(OnlineChangeRefused, match="verify_ranges cannot be changed while a change runs"):
        online.tune("analytics", database_url=migrated_url, verify_ranges=3)
