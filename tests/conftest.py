"""Test fixtures: a real PostgreSQL server, a fresh database per test.

The server is ``AGENTDB_TEST_DSN`` when set (a URL of a role that may CREATE
DATABASE, e.g. ``postgresql://postgres@/postgres?host=/tmp/pg15``), otherwise
the embedded pgserver (PostgreSQL 16) in ``AGENTDB_TEST_DATA_DIR`` (default: a
directory under the system temp dir).  Never a mock.  An embedded server the
session started is stopped at its end (one found running is left alone: other
pytest processes may use it).

Each test gets its own database, cloned from ``template0`` (empty) or from a
template migrated to head once per session (``migrated_url``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from pytest_alembic.config import Config as PytestAlembicConfig

import agentdb
from agentdb._pgtools import find_tool
from agentdb.runtime.config import make_config
from agentdb.runtime.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _server_dsn() -> str:
    dsn = os.environ.get("AGENTDB_TEST_DSN")
    if dsn:
        return dsn
    from agentdb import embedded

    data_dir = Path(os.environ.get("AGENTDB_TEST_DATA_DIR") or Path(tempfile.gettempdir()) / "agentdb-test-embedded")
    if not embedded.status(data_dir).running:
        _SERVER["started"] = data_dir  # this session starts it, so this session stops it (pytest_sessionfinish)
    url = embedded.ensure_running(data_dir)
    dsn = re.sub(r"/agentdb\?", "/postgres?", url)
    _throwaway(dsn)
    return dsn


def _throwaway(dsn: str) -> None:
    """The test server's data is thrown away: no fsync, as CI runs its PostgreSQL 15 (``.ci/run``).

    Every test clones a database, which on a server that syncs costs seconds per
    test.  Only the test data directory is changed (``ALTER SYSTEM`` writes its
    ``postgresql.auto.conf``); never a user's ``.agentdb``.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('fsync')").fetchone()
        if row and row[0] == "on":
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("SELECT pg_reload_conf()")


_SERVER: dict[str, object] = {}


def _other_clients(dsn: str) -> int:
    """Client sessions on the server other than this one's (another pytest run that came to use it meanwhile)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                           "AND pid <> pg_backend_pid()").fetchone()
    return int(row[0]) if row else 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the embedded test server if this session started it, and nobody else has come to use it since.

    A server that was already running is left alone: other pytest processes may be using it.
    """
    started = _SERVER.get("started")
    if not isinstance(started, Path):
        return
    from agentdb import embedded

    try:
        busy = _other_clients(server_dsn())
    except psycopg.Error:
        busy = 0
    if busy:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"agentdb: left the embedded test server in {started} running: "
                                f"{busy} other client(s) use it")
        return
    embedded.stop(started)


def server_dsn() -> str:
    if "dsn" not in _SERVER:
        _SERVER["dsn"] = _server_dsn()
    return str(_SERVER["dsn"])


def with_database(dsn: str, database: str) -> str:
    """The same server URL with another database name."""
    url = sa.make_url(dsn).set(database=database)
    return url.render_as_string(hide_password=False)


def server_version_num() -> int:
    with psycopg.connect(server_dsn()) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None
        return int(row[0])


def pytest_report_header(config: pytest.Config) -> list[str]:
    with psycopg.connect(server_dsn()) as conn:
        row = conn.execute("SELECT version()").fetchone()
    source = "AGENTDB_TEST_DSN" if os.environ.get("AGENTDB_TEST_DSN") else "embedded pgserver"
    return [f"agentdb test server ({source}): {row[0] if row else '?'}"]


def create_database(template: str = "template0") -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(server_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_url() -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    name = create_database()
    try:
        yield with_database(server_dsn(), name)
    finally:
        drop_database(name)


@pytest.fixture(scope="session")
def head_template() -> Iterator[str]:
    """A database migrated to head once per session, used as a template."""
    name = create_database()
    try:
        agentdb.upgrade("head", database_url=with_database(server_dsn(), name))
        yield name
    finally:
        drop_database(name)


@pytest.fixture
def migrated_url(head_template: str) -> Iterator[str]:
    """The URL of a new database at head, cloned from the session template."""
    name = create_database(head_template)
    try:
        yield with_database(server_dsn(), name)
    finally:
        drop_database(name)


@pytest.fixture(scope="session")
def plain_analytics_template() -> Iterator[str]:
    """A database at 006 -- before 007 partitions analytics -- once per session, used as a template."""
    name = create_database()
    try:
        agentdb.upgrade("006", database_url=with_database(server_dsn(), name))
        yield name
    finally:
        drop_database(name)


@pytest.fixture
def plain_analytics_url(plain_analytics_template: str) -> Iterator[str]:
    """The URL of a new database at 006, where analytics is still one plain table (what 007 converts)."""
    name = create_database(plain_analytics_template)
    try:
        yield with_database(server_dsn(), name)
    finally:
        drop_database(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(sa.make_url(database_url).set(drivername="postgresql+psycopg"))
    try:
        yield eng
    finally:
        eng.dispose()


# pytest-alembic: its built-in tests run against a fresh database per test.
@pytest.fixture
def alembic_config() -> PytestAlembicConfig:
    return PytestAlembicConfig.from_raw_config(make_config(RunSettings()))


@pytest.fixture
def alembic_engine(engine: sa.Engine) -> sa.Engine:
    return engine


def schema_dump(url: str, *extra: str, internal: bool = False) -> str:
    """``pg_dump --schema-only`` of the application schemas, stable across runs.

    ``internal``: without excluding agentdb's schemas (``extra`` then says what to dump), and without the
    ``CREATE SCHEMA`` lines of ``agentdb``, which the runner makes on its first run whatever the revision.
    """
    pg_dump = find_tool("pg_dump", server_version_num() // 10000)
    excluded = () if internal else ("--exclude-schema=agentdb", "--exclude-schema=agentdb_archive")
    result = subprocess.run(
        [str(pg_dump), "--schema-only", "--no-owner", *excluded, *extra, "--dbname", url],
        capture_output=True, text=True, check=True,
    )
    lines = [
        line for line in result.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped from", "-- Dumped by"))
        and not (internal and "SCHEMA agentdb" in line)
    ]
    return "\n".join(lines)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed ``agentdb`` entry point."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("DATABASE_URL", None) if env is None or "DATABASE_URL" not in env else None
    return subprocess.run(
        [str(BIN / "agentdb"), *args], capture_output=True, text=True, env=full_env, cwd=cwd or ROOT, timeout=timeout,
    )


MIGRATIONS = ROOT / "src" / "agentdb" / "migrations"


def make_script_dir(base: Path, extra: dict[str, str] | None = None, *, upto: str | None = None) -> Path:
    """A copy of the migrations directory with ``extra`` version files added.

    ``upto`` keeps only the real migrations up to that revision id, so a fixture
    migration can be chained right after it.  Point ``AGENTDB_SCRIPT_LOCATION`` at
    the result to run agentdb on it.
    """
    import shutil

    target = base / "migrations"
    shutil.copytree(MIGRATIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
    if upto is not None:
        for path in (target / "versions").glob("[0-9][0-9][0-9]_*.py"):
            if path.name[:3] > upto:
                path.unlink()
    for name, source in (extra or {}).items():
        (target / "versions" / name).write_text(source)
    return target


@pytest.fixture
def script_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A factory: ``script_location(extra, upto=...)`` builds a migrations copy and points agentdb at it."""

    def build(extra: dict[str, str] | None = None, *, upto: str | None = None) -> Path:
        path = make_script_dir(tmp_path, extra, upto=upto)
        monkeypatch.setenv("AGENTDB_SCRIPT_LOCATION", str(path))
        return path

    return build


def fixture_migration(revision: str, down_revision: str, upgrade: str, downgrade: str = "pass",
                      doc: str = "Fixture migration.\n\nWhy: a test needs it.") -> str:
    """Source of a small migration file for tests; ``upgrade``/``downgrade`` are function bodies."""
    indent = "\n".join("    " + line for line in upgrade.strip().splitlines())
    down = "\n".join("    " + line for line in downgrade.strip().splitlines())
    return (
        f'"""{doc}\n"""\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f"revision = {revision!r}\ndown_revision = {down_revision!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade() -> None:\n{indent}\n\n\ndef downgrade() -> None:\n{down}\n"
    )
