"""Exactly once, and kill -9 then resume: the ledger ``agentdb.imports`` and batch checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _bulk_helpers import HEADER, analytics_line, count, rows, users, write

from agentdb.bulk import bulk_import


def _numbered(tmp_path: Path, user: int, n: int) -> Path:
    lines = [HEADER] + [analytics_line(user, props=f'"{{""i"": {i}}}"') for i in range(n)]
    return write(tmp_path / "numbered.csv", "\n".join(lines) + "\n")


def test_the_same_file_is_imported_once_unless_forced(migrated_url: str, tmp_path: Path) -> None:
    path = _numbered(tmp_path, users(migrated_url)[0], 30)
    first = bulk_import("analytics", path, database_url=migrated_url)
    again = bulk_import("analytics", path, database_url=migrated_url)
    assert (first.status, again.status, again.rows_loaded) == ("done", "already imported", 0)
    assert again.previous is not None and again.previous["id"] == first.import_id
    assert "already imported" in again.summary() and count(migrated_url) == 30
    forced = bulk_import("analytics", path, database_url=migrated_url, force=True)
    assert forced.rows_loaded == 30 and count(migrated_url) == 60
    ledger = rows(migrated_url, "SELECT status, forced, rows_read, rows_loaded, file_name, file_sha256, db_user, "
                  "os_user IS NOT NULL, host IS NOT NULL FROM agentdb.imports ORDER BY id")
    assert [r[:5] for r in ledger] == [("done", False, 30, 30, "numbered.csv"), ("done", True, 30, 30, "numbered.csv")]
    assert ledger[0][5] == first.sha256 and all(r[7] and r[8] for r in ledger)


_CHILD = """
import sys, time
import agentdb.bulk.ledger as ledger
checkpoint = ledger.checkpoint
def slow(*args, **kwargs):
    checkpoint(*args, **kwargs)
    time.sleep(0.25)  # before the batch commits: a kill here loses that batch, which must come back on resume
ledger.checkpoint = slow
from agentdb.bulk import bulk_import
bulk_import("analytics", sys.argv[1], database_url=sys.argv[2], batch_rows=int(sys.argv[3]))
"""


def test_kill_9_then_the_same_command_resumes_no_row_twice_none_missing(migrated_url: str, tmp_path: Path) -> None:
    total, batch = 2000, 100
    path = _numbered(tmp_path, users(migrated_url)[0], total)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), migrated_url, str(batch)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    committed = 0
    while time.monotonic() < deadline and child.poll() is None:
        found = rows(migrated_url, "SELECT coalesce(max(checkpoint_rows), 0) FROM agentdb.imports "
                     "WHERE to_regclass('agentdb.imports') IS NOT NULL") if rows(
            migrated_url, "SELECT to_regclass('agentdb.imports') IS NOT NULL")[0][0] else [(0,)]
        committed = int(found[0][0])
        if committed >= 5 * batch:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the import finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    loaded_before = count(migrated_url)
    assert 0 < loaded_before < total and loaded_before % batch == 0, "only whole batches were committed"
    state = rows(migrated_url, "SELECT status, checkpoint_rows, checkpoint_line FROM agentdb.imports")
    assert state[0][0] == "running" and state[0][1] == loaded_before

    report = bulk_import("analytics", path, database_url=migrated_url, batch_rows=batch)
    assert report.status == "done" and report.resumed_from_line == loaded_before + 2
    numbers = [int(r[0]) for r in rows(migrated_url, "SELECT properties->>'i' FROM analytics")]
    assert len(numbers) == total, "none twice"
    assert sorted(numbers) == list(range(total)), "none missing"
    final = rows(migrated_url, "SELECT status, rows_read, rows_loaded, checkpoint_rows FROM agentdb.imports")
    assert final == [("done", total, total, total)]
    assert bulk_import("analytics", path, database_url=migrated_url).status == "already imported"


def test_a_refused_batch_keeps_earlier_batches_and_resumes_from_them(migrated_url: str, tmp_path: Path) -> None:
    user = users(migrated_url)[0]
    lines = [HEADER] + [analytics_line(user) for _ in range(25)] + [analytics_line(user, country="bad")]
    path = write(tmp_path / "b.csv", "\n".join([*lines, analytics_line(user)]) + "\n")
    import pytest

    from agentdb.errors import BulkRowsRejected

    with pytest.raises(BulkRowsRejected) as caught:
        bulk_import("analytics", path, database_url=migrated_url, batch_rows=10)
    assert "20 rows of earlier batches stay committed" in str(caught.value)
    assert count(migrated_url) == 20
    report = bulk_import("analytics", path, database_url=migrated_url, batch_rows=10, max_rejects=1)
    assert report.resumed_from_line == 22 and count(migrated_url) == 26
    assert rows(migrated_url, "SELECT status, rows_read, rows_loaded, rows_rejected FROM agentdb.imports") == [
        ("done", 27, 26, 1)]
