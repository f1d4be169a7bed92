"""``agentdb online plan|start`` take every kind's options from the command line."""

from __future__ import annotations

import json

import psycopg
from conftest import run_cli

from agentdb import online
from agentdb.cli.online import KIND_NAMES


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
