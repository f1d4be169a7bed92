"""Migration 008: the ledger it creates is the package's, and the seed documents' interface works as written.

``from 008_bulk_import_export import bulk_import`` is not valid Python (a module
name cannot start with a digit); the nearest working form is importing the file
by path, which is what these tests do, then calling the functions exactly as the
seeds show.  The script form runs in a child process, as a user runs it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _bulk_helpers import EMAILS, HEADER, ROOT, analytics_line, count, rows, users, write

import agentdb
from agentdb.bulk import ensure_ledger
from agentdb.bulk.ledger import DDL
from agentdb.connection import connect, create_engine, resolve

MIGRATION = ROOT / "src" / "agentdb" / "migrations" / "versions" / "008_bulk_import_export.py"


def _load() -> ModuleType:
    """``008_bulk_import_export`` imported by its path: the working form of the seeds' import."""
    spec = importlib.util.spec_from_file_location("bulk_import_export_008", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Recorder:
    """Stands in for ``alembic.op``: records what the migration asks for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    def execute(self, statement: str) -> None:
        self.calls.append(("execute", statement, None))

    def drop_table(self, name: str, schema: str | None = None) -> None:
        self.calls.append(("drop_table", name, schema))


def test_008_runs_the_ledger_ddl_of_the_package_statement_for_statement(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load()
    recorder = _Recorder()
    monkeypatch.setattr(module, "op", recorder)
    module.upgrade()
    assert [c[1] for c in recorder.calls] == DDL, "008 and agentdb.bulk.ledger.DDL differ: keep them equal"
    recorder.calls.clear()
    module.downgrade()
    assert recorder.calls == [("drop_table", "imports", "agentdb")]


def _ledger_shape(url: str) -> list[Any]:
    """Everything that defines agentdb.imports: columns, constraints, indexes, comments, privileges."""
    return [
        rows(url, "SELECT attname, format_type(atttypid, atttypmod), attnotnull, attidentity, "
                  "pg_get_expr(d.adbin, d.adrelid), col_description(a.attrelid, a.attnum) FROM pg_attribute a "
                  "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                  "WHERE a.attrelid = 'agentdb.imports'::regclass AND a.attnum > 0 AND NOT a.attisdropped "
                  "ORDER BY a.attnum"),
        rows(url, "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                  "WHERE conrelid = 'agentdb.imports'::regclass ORDER BY conname"),
        rows(url, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'agentdb' "
                  "AND tablename = 'imports' ORDER BY 1"),
        rows(url, "SELECT obj_description('agentdb.imports'::regclass, 'pg_class'), "
                  "relacl::text FROM pg_class WHERE oid = 'agentdb.imports'::regclass"),
    ]


def _ensure(url: str) -> None:
    target = resolve(url)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            ensure_ledger(connection)
            connection.commit()
    finally:
        engine.dispose()


def test_008_downgrade_drops_the_ledger_and_a_first_import_below_008_creates_the_same(migrated_url: str,
                                                                                      tmp_path: Path) -> None:
    shape = _ledger_shape(migrated_url)  # 008's ledger, at head
    _ensure(migrated_url)
    assert _ledger_shape(migrated_url) == shape, "ensure_ledger leaves 008's ledger as it is"
    ids = users(migrated_url)
    path = write(tmp_path / "a.csv", "\n".join([HEADER, analytics_line(ids[0], when="2026-11-02 10:00:00+00")]) + "\n")
    agentdb.bulk_import("analytics", path, database_url=migrated_url)
    agentdb.downgrade("007", database_url=migrated_url)
    assert rows(migrated_url, "SELECT to_regclass('agentdb.imports')") == [(None,)]
    assert rows(migrated_url, "SELECT row_count FROM agentdb.archived_tables WHERE table_schema = 'agentdb' "
                              "AND table_name = 'imports'") == [(1,)], "its rows are archived, as a rollback does"
    # A first import at 007 creates the ledger; 008 (and on to head) then runs over it and changes nothing.
    _ensure(migrated_url)
    agentdb.upgrade(database_url=migrated_url)
    assert _ledger_shape(migrated_url) == shape
    assert any(c[0] == "imports_rows_add_up" for c in shape[1]) and len(shape[2]) == 4


def test_the_seed_example_works_as_written(migrated_url: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    ids = users(migrated_url)
    write(tmp_path / "analytics.csv", "\n".join([HEADER] + [analytics_line(i) for i in ids]) + "\n")
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    monkeypatch.chdir(tmp_path)
    module = _load()
    imported = module.bulk_import("analytics", "analytics.csv")  # as the seed documents write it
    exported = module.bulk_export("users", "users.csv")
    assert (imported.status, imported.rows_loaded, count(migrated_url)) == ("done", 3, 3)
    lines = (tmp_path / "users.csv").read_text().splitlines()
    assert exported.rows == 3 and len(lines) == 4 and lines[0].startswith("id,")
    assert all(any(e in line for line in lines) for e in EMAILS), "an export has the values"


def test_the_008_script_imports_and_exports(migrated_url: str, tmp_path: Path) -> None:
    ids = users(migrated_url)
    source = write(tmp_path / "in.csv", "\n".join([HEADER] + [analytics_line(i) for i in ids * 2]) + "\n")

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(MIGRATION), *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path, env=environment)

    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"COLUMNS": "100", "TERM": "dumb"}

    loaded = script("import", "analytics", str(source), "--database-url", migrated_url)
    assert loaded.returncode == 0, loaded.stderr
    assert "6 rows read = 6 loaded + 0 rejected + 0 skipped" in loaded.stdout and count(migrated_url) == 6
    dumped = script("--database-url", migrated_url, "export", "users", str(tmp_path / "users.csv"))
    assert dumped.returncode == 0, dumped.stderr
    assert len((tmp_path / "users.csv").read_text().splitlines()) == 4
    assert not any(e in dumped.stdout + dumped.stderr + loaded.stdout + loaded.stderr for e in EMAILS)
