"""Helpers for the online-change tests: demo rows, snapshots, comparisons, leftovers, a driver process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]

#: Small batches so that a copy of a few thousand rows takes many batches (and kill points between them).
SMALL_BATCHES = {"batch_size": 200, "min_batch_size": 200, "max_batch_size": 200, "lock_retries": 20,
                 "throttle_poll": 0.1}


def fill_analytics(url: str, rows: int = 3000, *, months: int = 6) -> None:
    """Users, tracks and ``rows`` analytics events spread over the last ``months`` months (and a few ahead)."""
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO users (email, display_name) "
                     "SELECT 'u' || g || '@example.com', 'User ' || g FROM generate_series(1, 8) g")
        conn.execute("INSERT INTO tracks (title, duration_ms) SELECT 'Track ' || g, 180000 + g "
                     "FROM generate_series(1, 4) g")
        conn.execute(
            "INSERT INTO analytics (user_id, event_type, track_id, properties, country, device, session_id, "
            "created_at) "
            "SELECT CASE WHEN g %% 4 = 0 THEN NULL ELSE u.ids[1 + g %% cardinality(u.ids)] END, "
            "(ARRAY['play', 'skip', 'search', 'recommendation.click'])[1 + g %% 4], "
            "CASE WHEN g %% 3 = 0 THEN NULL ELSE t.ids[1 + g %% cardinality(t.ids)] END, "
            "jsonb_build_object('n', g, 'ms', g * 17 %% 1000), "
            "(ARRAY['DE', 'FR', 'US', NULL])[1 + g %% 4], (ARRAY['mobile', 'web', NULL])[1 + g %% 3], "
            "md5(g::text)::uuid, "
            "date_trunc('month', now()) - make_interval(months => %(months)s) "
            "  + make_interval(secs => (g::bigint * 7919) %% ((%(months)s + 1) * 30 * 86400)) "
            "FROM generate_series(1, %(rows)s) g, (SELECT array_agg(id) AS ids FROM users) u, "
            "(SELECT array_agg(id) AS ids FROM tracks) t",
            {"rows": rows, "months": months},
        )


def snapshot(url: str, name: str = "before") -> None:
    """A copy of analytics' rows in ``online_test.<name>`` (outside the application schema)."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS online_test")
        conn.execute(sql.SQL("CREATE TABLE online_test.{} AS SELECT * FROM public.analytics").format(
            sql.Identifier(name)))


def differences(url: str, left: str, right: str) -> tuple[int, int]:
    """Rows of ``left`` not in ``right``, and the other way round (EXCEPT ALL both ways)."""
    with psycopg.connect(url) as conn:
        a = conn.execute(f"SELECT count(*) FROM (SELECT * FROM {left} EXCEPT ALL SELECT * FROM {right}) x"
                         ).fetchone()
        b = conn.execute(f"SELECT count(*) FROM (SELECT * FROM {right} EXCEPT ALL SELECT * FROM {left}) x"
                         ).fetchone()
    assert a is not None and b is not None
    return int(a[0]), int(b[0])


def leftovers(url: str) -> list[str]:
    """Every object an online change creates, and every INVALID index (there should be none once it is over)."""
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgname LIKE 'agentdb\\_online\\_%' "
            "UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE proname LIKE 'online\\_%' "
            "AND pronamespace = 'agentdb'::regnamespace "
            "UNION ALL SELECT 'table ' || relname FROM pg_class WHERE relname ~ '__(online|old)_[0-9a-f]{8}$' "
            "OR relname ~ '^online_[0-9a-f]{8}_' OR relname ~ '^old_[0-9a-f]{8}_' "
            "UNION ALL SELECT 'constraint ' || conname FROM pg_constraint WHERE conname ~ '_online_[0-9a-f]{8}_' "
            "UNION ALL SELECT 'invalid index ' || indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid"
        )]


def relkind(url: str, table: str = "public.analytics") -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)", (table,)).fetchone()
    assert row is not None
    return str(row[0])


def change_row(url: str, change_id: int | None = None) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        if change_id is None:
            row = cur.execute("SELECT * FROM agentdb.online_changes ORDER BY id DESC LIMIT 1").fetchone()
        else:
            row = cur.execute("SELECT * FROM agentdb.online_changes WHERE id = %s", (change_id,)).fetchone()
    assert row is not None
    return dict(row)


_DRIVER = """
import json, sys
from agentdb import online
url, action, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
extra = json.loads(sys.argv[4])
if action == "start":
    online.start("analytics", extra.pop("kind", "partition"), database_url=url,
                 settings=online.OnlineSettings(**settings), **extra)
elif action == "resume":
    if settings:
        extra["settings"] = online.OnlineSettings(**settings)
    online.resume("analytics", database_url=url, **extra)
elif action == "abort":
    online.abort("analytics", database_url=url)
"""


def drive(url: str, action: str, *, kill_at: str | None = None, settings: dict[str, Any] | None = None,
          extra: dict[str, Any] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run start/resume/abort of the change of analytics in a separate process (which a kill point may SIGKILL)."""
    env = {k: v for k, v in os.environ.items() if k != "AGENTDB_ONLINE_KILL_AT"}
    if kill_at:
        env["AGENTDB_ONLINE_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-c", _DRIVER, url, action, json.dumps(settings or {}), json.dumps(extra or {})],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout,
    )


def spawn(url: str, action: str, *, settings: dict[str, Any] | None = None,
          extra: dict[str, Any] | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTDB_ONLINE_KILL_AT"}
    return subprocess.Popen(
        [sys.executable, "-c", _DRIVER, url, action, json.dumps(settings or {}), json.dumps(extra or {})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )


def wait_until_waiting(url: str, pid: int, timeout: float = 10.0) -> None:
    """Until backend ``pid`` waits for a lock (its wait_event_type is Lock)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            if row is not None and row[0] == "Lock":
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for a lock")
