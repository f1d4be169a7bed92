"""``agentdb migrations``: every migration, applied or pending, checksum, when and by whom."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import psycopg
from conftest import run_cli

import agentdb
from agentdb.runtime.history import file_checksum


def test_migrations_lists_every_file_with_state_checksum_and_who_applied_it(database_url: str) -> None:
    agentdb.upgrade("001", database_url=database_url)

    rows = agentdb.list_migrations(database_url=database_url)

    files = sorted((Path(agentdb.__file__).parent / "migrations" / "versions").glob("*.py"))
    assert [r.revision for r in rows] == sorted(r.revision for r in rows)
    assert [r.name for r in rows] == [f.stem for f in files]
    first = rows[0]
    assert first.name == "001_initial_schema"
    assert first.description == "Initial schema: users and the artists they manage."
    assert first.state == "applied"
    assert first.checksum == file_checksum(first.path)
    assert first.applied_at is not None
    assert first.applied_by == getpass.getuser()
    assert first.db_user
    assert first.changed is False
    assert all(r.state == "pending" and r.applied_at is None for r in rows[1:])
    assert [r.revision for r in rows[1:]] == list(agentdb.current(database_url=database_url).pending)


def test_migrations_on_an_empty_database_shows_everything_pending(database_url: str) -> None:
    rows = agentdb.list_migrations(database_url=database_url)
    assert rows and all(r.state == "pending" for r in rows)


def test_migrations_marks_an_applied_file_that_changed_since(database_url: str) -> None:
    agentdb.upgrade("001", database_url=database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE agentdb.migration_runs SET checksum = repeat('0', 64) WHERE revision = '001'")

    (first, *_rest) = agentdb.list_migrations(database_url=database_url)

    assert first.state == "applied" and first.changed is True


def test_migrations_after_a_downgrade_shows_the_revision_pending_again(database_url: str) -> None:
    agentdb.upgrade("001", database_url=database_url)
    agentdb.downgrade("base", database_url=database_url)

    (first, *_rest) = agentdb.list_migrations(database_url=database_url)

    assert first.state == "pending" and first.applied_at is None


def test_cli_migrations_json_and_table(database_url: str) -> None:
    agentdb.upgrade("001", database_url=database_url)

    result = run_cli("--database-url", database_url, "migrations", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data[0]["revision"] == "001" and data[0]["state"] == "applied"
    assert data[0]["applied_by"] == getpass.getuser()
    assert len(data[0]["checksum"]) == 64

    table = run_cli("--database-url", database_url, "migrations", env={"COLUMNS": "250"})
    assert table.returncode == 0, table.stderr
    assert "001_initial_schema" in table.stdout and "applied" in table.stdout
