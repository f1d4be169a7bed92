"""Every command's output fits a 100-column terminal: no line longer, none cut short, table rows on one line.

The CLI runs as a user runs it (the installed entry point, ``COLUMNS=100``) on a
database with demo data, through the whole life of a database: fresh upgrade,
dry runs, listings, a rollback with archived rows and the upgrade that brings
them back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from conftest import run_cli

import agentdb

WIDTH = 100


def _check_fits(args: tuple[str, ...], text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= WIDTH, f"`agentdb {' '.join(args)}` printed {len(line)} columns: {line!r}"
        assert "…" not in line, f"`agentdb {' '.join(args)}` cut a line short: {line!r}"


def _run(url: str, *args: str, data_dir: Path | None = None) -> str:
    where = ["--data-dir", str(data_dir)] if data_dir else ["--database-url", url]
    result = run_cli(*where, *args, env={"COLUMNS": str(WIDTH), "TERM": "dumb"})
    # health exits 1 on a warning (fresh demo data has stale planner statistics): Nagios' convention.
    assert result.returncode in ({0, 1} if args[0] == "health" else {0}), (args, result.stdout, result.stderr)
    _check_fits(args, result.stdout)
    _check_fits(args, result.stderr)
    return result.stdout


def test_every_command_fits_100_columns(database_url: str) -> None:
    plan = _run(database_url, "upgrade", "--dry-run")
    assert len(plan.splitlines()) < 60, "a dry run lists only the locks that matter"
    applied = _run(database_url, "upgrade")
    steps = [line for line in applied.splitlines() if not line.startswith("  ")]  # online changes are indented
    assert len(steps) == len(agentdb.list_migrations(database_url=database_url))
    _run(database_url, "seed-demo")
    for args in (("current",), ("history",), ("heads",), ("validate",), ("check",),
                 ("downgrade", "004", "--dry-run"), ("rollback", "004", "--dry-run"), ("rollback", "004", "--yes"),
                 ("upgrade", "--dry-run"), ("upgrade",), ("health", "--skip", "server.risky_settings"),
                 ("online", "start", "analytics", "unpartition"), ("online", "start", "analytics", "partition"),
                 ("online", "status", "--all"), ("partitions",), ("partitions", "analytics"),
                 ("partitions", "maintain", "--dry-run")):
        _run(database_url, *args)
    listing = _run(database_url, "migrations")
    rows = [line for line in listing.splitlines() if line[:3].isdigit()]
    assert len(rows) == len(agentdb.list_migrations(database_url=database_url)), "one line per migration"
    with tempfile.TemporaryDirectory(prefix="w", dir="/tmp") as short:  # the path is printed whole
        _run(database_url, "embedded", "status", data_dir=Path(short) / "none")


@pytest.mark.parametrize("command", [
    (), ("upgrade",), ("downgrade",), ("rollback",), ("current",), ("history",), ("heads",), ("migrations",),
    ("check",), ("sql",), ("validate",), ("repair",), ("new",), ("seed-demo",), ("embedded",),
    ("embedded", "status"), ("embedded", "stop"), ("health",), ("online",), ("online", "plan"), ("online", "start"),
    ("online", "status"), ("partitions",), ("partitions", "maintain"),
])
def test_help_fits_100_columns_and_shows_no_type_after_flags(command: tuple[str, ...]) -> None:
    result = run_cli(*command, "--help", env={"COLUMNS": str(WIDTH)})
    assert result.returncode == 0, result.stderr
    _check_fits((*command, "--help"), result.stdout)
    assert "<bool>" not in result.stdout
