"""Every file in versions/ runs as a script: ``python NNN_name.py [--down] --database-url URL``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from _fixture_migrations import migrations_copy, write_migration

import agentdb

VERSIONS = Path(agentdb.__file__).parent / "migrations" / "versions"


def _script(path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, env=full_env,
                          timeout=120)


def _versions(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass('agentdb.alembic_version') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return []
        return [r[0] for r in conn.execute("SELECT version_num FROM agentdb.alembic_version")]


def _history(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(r[0], r[1]) for r in conn.execute(
            "SELECT revision, direction FROM agentdb.migration_runs WHERE success ORDER BY id")]


def test_version_file_applies_itself_then_says_already_applied_then_undoes_itself(database_url: str) -> None:
    first = VERSIONS / "001_initial_schema.py"

    applied = _script(first, "--database-url", database_url)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.startswith("upgrade 001_initial_schema (")
    assert _versions(database_url) == ["001"]
    assert _history(database_url) == [("001", "upgrade")]  # same history as agentdb upgrade

    again = _script(first, "--database-url", database_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "001 is already applied (database at 001)"

    undone = _script(first, "--down", "--database-url", database_url)
    assert undone.returncode == 0, undone.stderr
    assert undone.stdout.startswith("downgrade 001")
    assert _versions(database_url) == []

    nothing = _script(first, "--down", "--database-url", database_url)
    assert nothing.returncode == 0
    assert "001 is not applied" in nothing.stdout


def test_version_file_brings_its_prerequisites_first(database_url: str, tmp_path: Path) -> None:
    location = migrations_copy(tmp_path)
    second = write_migration(location, "002_comment_users.py", revision="002", down_revision="001",
                             upgrade="op.execute(\"COMMENT ON TABLE users IS 'Users'\")",
                             downgrade="op.execute(\"COMMENT ON TABLE users IS NULL\")")
    env = {"AGENTDB_SCRIPT_LOCATION": str(VERSIONS.parent)}  # the file's own directory wins

    result = _script(second, "--database-url", database_url, env=env)

    assert result.returncode == 0, result.stderr
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [
        ["upgrade", "001_initial_schema"], ["upgrade", "002_comment_users"]]
    assert _versions(database_url) == ["002"]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT obj_description('public.users'::regclass)").fetchone()
        assert row is not None and row[0] == "Users"

    down = _script(second, "--down", "--database-url", database_url, env=env)
    assert down.returncode == 0, down.stderr
    assert _versions(database_url) == ["001"]


def test_version_file_reports_a_failure_in_one_line_and_leaves_the_database(database_url: str, tmp_path: Path) -> None:
    location = migrations_copy(tmp_path)
    broken = write_migration(location, "002_broken.py", revision="002", down_revision="001",
                             upgrade="op.execute('ALTER TABLE no_such_table ADD COLUMN x text')")
    _script(location / "versions" / "001_initial_schema.py", "--database-url", database_url)

    result = _script(broken, "--database-url", database_url)

    assert result.returncode == 6
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: upgrade of 002 failed")
    assert _versions(database_url) == ["001"]


def test_version_file_help_names_the_migration() -> None:
    result = _script(VERSIONS / "001_initial_schema.py", "--help")
    assert result.returncode == 0
    assert "001_initial_schema.py" in result.stdout and "--down" in result.stdout


def _version_files() -> list[Path]:
    return sorted(VERSIONS.glob("[0-9][0-9][0-9]_*.py"))


def test_every_version_file_runs_as_a_script_and_says_what_it_does() -> None:
    files = _version_files()
    assert len(files) >= 6
    for path in files:
        result = _script(path, "--help")
        assert result.returncode == 0, (path.name, result.stderr)
        assert path.name in result.stdout


def test_every_version_file_applies_its_revision_as_a_script(database_url: str) -> None:
    for path in _version_files():
        # 006, 009 and 010 run their seed form as a script (rollback, health report, erasure): --apply applies.
        args = ("--apply",) if path.name[:3] in {"006", "009", "010"} else ()
        result = _script(path, *args, "--database-url", database_url)
        assert result.returncode == 0, (path.name, result.stdout, result.stderr)
        assert _versions(database_url) == [path.name[:3]], path.name
