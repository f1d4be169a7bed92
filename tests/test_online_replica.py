"""The throttle with a real streaming standby: pg_basebackup of the test server, a second server on its own
socket; pausing the standby's replay stops the backfill within a batch or two, resuming it lets it finish.

Skipped on the embedded server (pgserver ships no pg_basebackup, and its server is not started as a user
that replication can be set up for) and where Debian's PostgreSQL tools are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest
from _online_kind_helpers import make_tables, scalar

from agentdb import online
from agentdb.online import OnlineSettings, Progress

BIN = Path("/usr/lib/postgresql/15/bin")


def _server_socket() -> str | None:
    dsn = os.environ.get("AGENTDB_TEST_DSN")
    if not dsn:
        return None
    return (parse_qs(urlparse(dsn).query).get("host") or [None])[0]


def _as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    command = args if os.geteuid() != 0 else ("runuser", "-u", "postgres", "--", *args)
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture
def standby(database_url: str) -> Iterator[str]:
    socket = _server_socket()
    if socket is None:
        pytest.skip("the embedded server (pgserver) cannot be given a streaming standby: no pg_basebackup")
    if not (BIN / "pg_basebackup").exists() or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("Debian's PostgreSQL 15 tools (pg_basebackup, pg_ctl) are not installed")
    base = Path(tempfile.mkdtemp(prefix="agentdb-standby-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    # A slot of its own: on a busy server the WAL after the backup would be recycled before the standby asks.
    slot = f"agentdb_test_standby_{os.getpid()}"
    try:
        backup = _as_postgres(str(BIN / "pg_basebackup"), "-d", f"host={socket} user=postgres "
                              "application_name=agentdb_test_standby", "-D", str(data), "-R", "-X", "stream",
                              "-c", "fast", "-C", "-S", slot)
        if backup.returncode != 0:
            pytest.skip(f"pg_basebackup of the test server failed: {backup.stderr.strip()[:300]}")
        max_connections = scalar(database_url, "SHOW max_connections")
        started = _as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(base / "log"),
                               "-o", f"-c listen_addresses='' -k {sock} -c port=5499 -c fsync=off "
                               f"-c max_connections={max_connections} -c hot_standby=on", "start")
        assert started.returncode == 0, started.stderr + (base / "log").read_text()
        url = f"postgresql://postgres@/postgres?host={sock}&port=5499"
        deadline = time.monotonic() + 60
        while scalar(database_url, "SELECT count(*) FROM pg_stat_replication WHERE application_name = "
                     "'agentdb_test_standby' AND state = 'streaming'") != 1:
            assert time.monotonic() < deadline, "the standby never streamed"
            time.sleep(0.2)
        yield url
    finally:
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)
        with psycopg.connect(database_url, autocommit=True) as conn:  # a slot left behind would keep WAL forever
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND NOT active", (slot,))


def test_paused_replay_stops_the_backfill_and_resumed_replay_lets_it_finish(database_url: str,
                                                                             standby: str) -> None:
    make_tables(database_url, 30000)
    progress: list[Progress] = []
    settings = OnlineSettings(batch_size=500, min_batch_size=500, max_batch_size=500, max_replica_lag=0.5,
                              throttle_poll=0.1, throttle_sql="pg_sleep(0.05) IS NULL")
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(online.start("par", "add_column", database_url=database_url, settings=settings,
                                        progress=progress.append, column="label", type="text",
                                        backfill="upper(name)"))
        except Exception as exc:  # reported by the assertion below
            outcome.append(exc)

    driver = threading.Thread(target=run)
    with psycopg.connect(standby, autocommit=True) as replica:
        driver.start()
        while not any(p.phase == "backfill" and p.rows_done > 2000 for p in progress):
            assert driver.is_alive(), outcome
            time.sleep(0.02)
        replica.execute("SELECT pg_wal_replay_pause()")
        paused_at = max(p.rows_done for p in progress)
        deadline = time.monotonic() + 20
        while not any(p.note and "replica agentdb_test_standby replay lag" in p.note for p in progress):
            assert time.monotonic() < deadline and driver.is_alive(), "the backfill was never throttled"
            time.sleep(0.05)
        # Replay stops at the next record after the pause request, so the estimate can dip once; then it holds.
        time.sleep(1.0)
        stopped_at = max(p.rows_done for p in progress)
        # 0.5 s of lag at one batch per >= 0.05 s (the throttle_sql sleep): at most 10 batches more, and one in flight
        assert stopped_at - paused_at <= (0.5 / 0.05 + 1) * 500
        time.sleep(2.0)
        assert max(p.rows_done for p in progress) == stopped_at, "it went on while the replica was behind"
        assert replica.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() == ("paused",)
        replica.execute("SELECT pg_wal_replay_resume()")
        driver.join(timeout=120)
    [result] = outcome
    assert isinstance(result, online.ChangeStatus) and result.status == "completed", result
    assert scalar(database_url, "SELECT count(*) FROM par WHERE label IS DISTINCT FROM upper(name)") == 0
