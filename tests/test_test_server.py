"""The test suite stops the embedded test server it started, and leaves alone one that was already running."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from conftest import BIN, ROOT

from agentdb import embedded

#: A test that needs no database: the session still starts the server (the report header shows its version;
#: not under -q, which drops the header).
PURE_TEST = "tests/test_dry_run.py::test_dry_run_report_is_a_plain_object_separate_from_the_run"


def _pytest_session(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTDB_TEST_DSN"}
    env["AGENTDB_TEST_DATA_DIR"] = str(data_dir)
    return subprocess.run([str(BIN / "pytest"), PURE_TEST, "-p", "no:cacheprovider"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_session_stops_the_embedded_server_it_started_and_not_one_it_found_running() -> None:
    # Not tmp_path: another pytest process may prune this session's basetemp while the server runs in it.
    with tempfile.TemporaryDirectory(prefix="agentdb-test-server-") as parent:
        _check_sessions(Path(parent) / "embedded")


def _check_sessions(data_dir: Path) -> None:
    try:
        first = _pytest_session(data_dir)
        assert first.returncode == 0, first.stdout + first.stderr
        status = embedded.status(data_dir)
        assert status.initialized, "the session did not start the embedded server"
        assert not status.running, "the session left the embedded server it started running"

        embedded.ensure_running(data_dir)
        pid = embedded.status(data_dir).pid
        second = _pytest_session(data_dir)
        assert second.returncode == 0, second.stdout + second.stderr
        assert embedded.status(data_dir).pid == pid, "the session stopped a server that was already running"
    finally:
        embedded.stop(data_dir)
