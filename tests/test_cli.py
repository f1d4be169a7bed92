"""The installed ``agentdb`` entry point, plain ``alembic`` from the repository root, and the embedded server."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import BIN, ROOT, run_cli

HEAD_TABLES = ("users", "artists")


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_upgrade_current_history_heads_through_the_entry_point(database_url: str) -> None:
    up = run_cli("--database-url", database_url, "upgrade")
    assert up.returncode == 0, up.stderr
    assert "upgrade 001_initial_schema" in up.stdout

    current = json.loads(run_cli("--database-url", database_url, "current", "--json").stdout)
    heads = json.loads(run_cli("heads", "--json").stdout)
    assert len(heads) == 1
    assert current["revisions"] == [heads[0]["revision"]] and current["up_to_date"] is True
    assert current["pending"] == []

    history = json.loads(run_cli("--database-url", database_url, "history", "--json").stdout)
    assert {row["revision"] for row in history} >= {"001"}
    assert all(row["success"] and row["direction"] == "upgrade" for row in history)

    again = run_cli("--database-url", database_url, "upgrade")
    assert again.returncode == 0 and "nothing to upgrade" in again.stdout


def test_database_url_environment_variable_is_used(database_url: str) -> None:
    result = run_cli("upgrade", "001", env={"DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT version_num FROM agentdb.alembic_version").fetchone() == ("001",)


def test_downgrade_to_base_and_relative_revisions(database_url: str) -> None:
    assert run_cli("--database-url", database_url, "upgrade", "001").returncode == 0
    down = run_cli("--database-url", database_url, "downgrade", "-1")
    assert down.returncode == 0, down.stderr
    assert "downgrade 001" in down.stdout
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.users')").fetchone() == (None,)
        directions = [r[0] for r in conn.execute("SELECT direction FROM agentdb.migration_runs ORDER BY id")]
    assert directions == ["upgrade", "downgrade"]


def test_offline_sql_for_upgrade_and_downgrade_ranges() -> None:
    up = run_cli("sql", "base:001")
    assert up.returncode == 0, up.stderr
    assert "CREATE TABLE users" in up.stdout and "SET lock_timeout = '5000ms'" in up.stdout
    down = run_cli("sql", "001:base")
    assert down.returncode == 0, down.stderr
    assert "DROP TABLE users" in down.stdout and "CREATE TABLE users" not in down.stdout


def test_validate_passes_on_an_untouched_database(migrated_url: str) -> None:
    result = run_cli("--database-url", migrated_url, "validate", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["valid"] is True


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["upgrade", "nope"], 2, "unknown revision 'nope'"),
        (["downgrade", "zzz"], 2, "unknown revision 'zzz'"),
    ],
)
def test_unknown_revision_is_one_line_and_exit_2(database_url: str, args: list[str], code: int, expected: str) -> None:
    result = run_cli("--database-url", database_url, *args)
    assert result.returncode == code
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('agentdb.alembic_version')").fetchone() == (None,)


@pytest.mark.parametrize(
    ("url", "code", "expected"),
    [
        ("mysql://admin:hunter2secret@db/x", 2, "is not PostgreSQL"),
        ("not a url hunter2secret", 2, "has no scheme"),
        ("postgresql://admin:hunter2secret@127.0.0.1:notaport/x", 2, "port"),
        ("postgresql://admin:hunter2secret@127.0.0.1:1/x", 3, "cannot connect to postgresql://admin:***@127.0.0.1:1/x"),
    ],
)
def test_bad_database_url_names_the_problem_and_never_shows_the_password(url: str, code: int, expected: str) -> None:
    result = run_cli("--database-url", url, "current")
    assert result.returncode == code, result.stderr
    lines = _error_lines(result)
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert "hunter2secret" not in result.stdout + result.stderr


def test_debug_flag_adds_the_traceback() -> None:
    result = run_cli("--debug", "--database-url", "postgresql://u:pw@127.0.0.1:1/x", "current")
    assert result.returncode == 3
    assert "Traceback" in result.stderr


def test_plain_alembic_from_the_repository_root_has_the_same_safety(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    result = subprocess.run([str(BIN / "alembic"), "-x", "lock_timeout=2s", "upgrade", "head"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(database_url) as conn:
        runs = conn.execute("SELECT revision, direction, success FROM agentdb.migration_runs ORDER BY id").fetchall()
        assert ("001", "upgrade", True) in runs
    current = subprocess.run([str(BIN / "alembic"), "current"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert current.returncode == 0 and "(head)" in current.stdout


def test_new_migration_gets_the_next_sequential_id(tmp_path: Path, script_location) -> None:  # type: ignore[no-untyped-def]
    location: Path = script_location()
    numbers = sorted(p.name[:3] for p in (location / "versions").glob("[0-9][0-9][0-9]_*.py"))
    result = run_cli("new", "add listening sessions", env={"AGENTDB_SCRIPT_LOCATION": str(location)})
    assert result.returncode == 0, result.stderr
    expected = f"{int(numbers[-1]) + 1:03d}_add_listening_sessions.py"
    created = location / "versions" / expected
    assert created.exists(), list((location / "versions").iterdir())
    text = created.read_text()
    assert f"revision: str = '{int(numbers[-1]) + 1:03d}'" in text
    assert f"down_revision: str | None = '{numbers[-1]}'" in text
    assert 'if __name__ == "__main__":' in text


# --- the embedded server ------------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "embedded"
    try:
        yield directory
    finally:
        run_cli("embedded", "stop", env={"AGENTDB_DATA_DIR": str(directory)})


def test_embedded_server_starts_on_demand_is_reused_and_stops(data_dir: Path) -> None:
    env = {"AGENTDB_DATA_DIR": str(data_dir)}
    status = json.loads(run_cli("embedded", "status", "--json", env=env).stdout)
    assert status["initialized"] is False and status["running"] is False

    up = run_cli("upgrade", env=env)
    assert up.returncode == 0, up.stderr
    status = json.loads(run_cli("embedded", "status", "--json", env=env).stdout)
    assert status["running"] is True and status["version"] == "16"
    first_pid = status["pid"]

    current = json.loads(run_cli("current", "--json", env=env).stdout)
    assert current["up_to_date"] is True
    assert json.loads(run_cli("embedded", "status", "--json", env=env).stdout)["pid"] == first_pid

    stop = run_cli("embedded", "stop", env=env)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert json.loads(run_cli("embedded", "status", "--json", env=env).stdout)["running"] is False
    assert json.loads(run_cli("current", "--json", env=env).stdout)["up_to_date"] is True, "data kept across restarts"


def test_embedded_data_directory_that_is_not_a_cluster_is_refused(tmp_path: Path) -> None:
    pgdata = tmp_path / "broken" / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "junk").write_text("x")
    result = run_cli("current", env={"AGENTDB_DATA_DIR": str(tmp_path / "broken")})
    assert result.returncode == 3
    lines = _error_lines(result)
    assert len(lines) == 1 and "is not a PostgreSQL cluster" in lines[0] and "may be corrupt" in lines[0]


def test_embedded_cluster_of_another_major_version_is_refused(tmp_path: Path) -> None:
    pgdata = tmp_path / "old" / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("15\n")
    result = run_cli("current", env={"AGENTDB_DATA_DIR": str(tmp_path / "old")})
    assert result.returncode == 3
    assert "made by PostgreSQL 15, the embedded server is 16" in result.stderr


def test_embedded_data_directory_locked_by_another_process_is_reported(tmp_path: Path) -> None:
    directory = tmp_path / "locked"
    directory.mkdir()
    with open(directory / "agentdb.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        result = run_cli("current", env={"AGENTDB_DATA_DIR": str(directory), "AGENTDB_EMBEDDED_LOCK_TIMEOUT": "1"})
    assert result.returncode == 3
    lines = _error_lines(result)
    assert len(lines) == 1 and "locked by another process" in lines[0]


def test_offline_sql_between_two_revisions_downwards() -> None:
    result = run_cli("sql", "002:001")
    assert result.returncode == 0, result.stderr
    assert "DROP TABLE" in result.stdout and "UPDATE agentdb.alembic_version SET version_num='001'" in result.stdout


def test_offline_sql_applied_with_psql_builds_the_same_schema_as_an_online_upgrade(database_url: str) -> None:
    """Up to 006: from 007 on, an online change stops a SQL script on purpose (tests/test_migration_007.py)."""
    from conftest import create_database, drop_database, schema_dump, server_dsn, server_version_num, with_database

    import agentdb
    from agentdb._pgtools import find_tool

    offline = run_cli("sql", "base:006")
    assert offline.returncode == 0, offline.stderr
    psql = find_tool("psql", server_version_num() // 10000)
    applied = subprocess.run([str(psql), "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url],
                             input=offline.stdout, capture_output=True, text=True, timeout=300)
    assert applied.returncode == 0, applied.stderr
    online = create_database()
    try:
        online_url = with_database(server_dsn(), online)
        agentdb.upgrade("006", database_url=online_url)
        assert schema_dump(database_url) == schema_dump(online_url)
    finally:
        drop_database(online)
