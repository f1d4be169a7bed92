"""Migration 009: its DDL is health.ledger's, ``check_health`` is importable from the file as the seeds show, and
run as a script the file is a Nagios plugin (or, with ``--apply``, the migration)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from types import ModuleType
from typing import Any

import psycopg
import pytest
from conftest import MIGRATIONS

import agentdb
from agentdb.health import HealthReport, Status
from agentdb.health.ledger import DDL, MIGRATION_DOWNGRADE, MIGRATION_UPGRADE, OPS_LEDGERS

FILE = MIGRATIONS / "versions" / "009_health_check.py"


def _load() -> ModuleType:
    """``from 009_health_check import check_health`` cannot be written; this is what it means."""
    spec = importlib.util.spec_from_file_location("health_check_009", FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Recorder:
    """Stands in for alembic's ``op``: collects what a migration body executes."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, statement: str) -> None:
        self.statements.append(" ".join(statement.split()))

    def drop_table(self, name: str, schema: str) -> None:
        self.statements.append(f"DROP TABLE {schema}.{name}")


def _executed(function: Any) -> list[str]:
    recorder = _Recorder()
    function.__globals__["op"] = recorder
    function()
    return recorder.statements


def _body(text: str) -> list[str]:
    recorder = _Recorder()
    exec(textwrap.dedent(text), {"op": recorder})
    return recorder.statements


def test_009_runs_exactly_the_ledger_ddl_written_out() -> None:
    module = _load()
    upgrade = _executed(module.upgrade)
    assert upgrade == _body(MIGRATION_UPGRADE) == [" ".join(s.split()) for s in DDL]
    assert _executed(module.downgrade) == _body(MIGRATION_DOWNGRADE)
    assert all(f"'{ledger}'" in upgrade[-1] for ledger in OPS_LEDGERS)
    source = FILE.read_text()
    assert "import agentdb" not in source.split("def check_health")[0], "the DDL part is self-contained"


def test_seed_check_health_imported_from_the_file(migrated_url: str) -> None:
    report = _load().check_health(database_url=migrated_url, only=["schema", "ops"])
    assert isinstance(report, HealthReport)
    assert {r.status for r in report.results} == {Status.OK}, [(r.id, r.message) for r in report.results]


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    """The file run as a user runs it: a new Python process (a few seconds on a loaded machine, so few)."""
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb"}
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, str(FILE), *args], capture_output=True, text=True, env=env, timeout=120,
                          check=False)


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """The same entry point in this process: its exit code."""
    from agentdb.health.script import main

    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("AGENTDB_SCRIPT_LOCATION", str(MIGRATIONS))  # restored after the test
    try:
        main(str(FILE), list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_the_file_run_as_a_script_is_a_nagios_plugin(migrated_url: str, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(monkeypatch, "--skip", "server.risky_settings", "--database-url", migrated_url) == 0
    table = capsys.readouterr().out
    assert table.startswith("agentdb health: ok") and all(len(line) <= 100 for line in table.splitlines())
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t_ref9 (id int, user_id bigint REFERENCES users)")
        conn.execute("ALTER TABLE users DISABLE TRIGGER users_audit")
    critical = _script("--format", "prometheus", "--only", "schema.audit_triggers", "--database-url", migrated_url)
    assert critical.returncode == 2, critical.stderr  # the process's exit code, as a monitoring agent sees it
    assert 'agentdb_health_check_status{check="schema.audit_triggers",group="schema"} 2.0' in critical.stdout
    assert _main(monkeypatch, "--database-url", migrated_url, "--only", "schema.fk_index_coverage", "--json") == 1
    found = json.loads(capsys.readouterr().out)
    assert found["status"] == "warning" and found["results"][0]["evidence"][0]["table"] == "public.t_ref9"
    assert _main(monkeypatch, "--database-url", migrated_url, "--bogus") == 3  # UNKNOWN, never CRITICAL
    assert "No such option: --bogus" in capsys.readouterr().err
    assert _main(monkeypatch, "--help") == 0
    helped = capsys.readouterr().out
    assert "--apply" in helped and "--only" in helped


def test_apply_brings_the_database_to_009_and_down_undoes_it(migrated_url: str, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    grants = ("SELECT has_table_privilege('agentdb_readonly', 'agentdb.' || t, 'SELECT') "
              "FROM unnest(%s::text[]) t")
    assert _main(monkeypatch, "--apply", "--down", "--database-url", migrated_url) == 0
    assert agentdb.current(database_url=migrated_url).revisions == ("008",)
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT to_regclass('agentdb.health_runs')").fetchone() == (None,)
        assert [r[0] for r in conn.execute(grants, [[*OPS_LEDGERS, "migration_runs"]])] == [False] * 5
        assert conn.execute("SELECT has_schema_privilege('agentdb_readonly', 'agentdb', 'USAGE')").fetchone() == (
            False,)
    assert _main(monkeypatch, "--apply", "--database-url", migrated_url) == 0
    assert "upgrade 009_health_check" in capsys.readouterr().out
    assert agentdb.current(database_url=migrated_url).revisions == ("009",)
    with psycopg.connect(migrated_url) as conn:
        assert [r[0] for r in conn.execute(grants, [[*OPS_LEDGERS, "health_runs", "migration_runs"]])] == [True] * 6
    assert _main(monkeypatch, "--apply", "--database-url", migrated_url) == 0
    assert "009 is already applied" in capsys.readouterr().out


@pytest.mark.parametrize("recorded_at", ["008", "009"])
def test_recorded_runs_go_to_the_migration_table_and_survive_the_upgrade(migrated_url: str,
                                                                         recorded_at: str) -> None:
    """``--record`` writes into 009's table (or creates the same table on an older database, which 009 then
    keeps); after ``agentdb upgrade`` the next report says what changed since."""
    agentdb.downgrade(recorded_at, database_url=migrated_url)
    with psycopg.connect(migrated_url) as conn:
        before = conn.execute("SELECT to_regclass('agentdb.health_runs')::oid").fetchone()
    assert (before == (None,)) == (recorded_at == "008")
    first = agentdb.check_health(database_url=migrated_url, only=["schema.migrations_pending"], record=True)
    assert first.status == Status.WARNING and first.recorded
    with psycopg.connect(migrated_url) as conn:
        table = conn.execute("SELECT to_regclass('agentdb.health_runs')::oid").fetchone()
        rows = conn.execute("SELECT status, results -> 'schema.migrations_pending' ->> 'status' "
                            "FROM agentdb.health_runs").fetchall()
    assert rows == [("warning", "warning")]
    if recorded_at == "009":
        assert table == before, "written into the table the migration created"
    agentdb.upgrade(database_url=migrated_url)
    after = agentdb.check_health(database_url=migrated_url, only=["schema.migrations_pending"])
    assert after.status == Status.OK and after.previous_run_at == first.started_at
    assert [(r.id, r.previous, r.status) for r in after.changed] == [
        ("schema.migrations_pending", Status.WARNING, Status.OK)]
