"""Helpers for the bulk import/export tests: rows in a database at head, files, and the CLI with bulk registered.

Not a test module (no ``test_`` prefix).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
HEADER = "user_id,event_type,track_id,properties,country,device,session_id,created_at"
#: Personal values that must never appear in any output.
EMAILS = ("alice.secret@example.org", "bob.hidden@example.org", "carol.private@example.org")


def users(url: str) -> list[int]:
    """Three users; their ids."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO users (email, display_name) VALUES (%s, 'Alice Secretname'), (%s, 'Bob Hiddenname'), "
            "(%s, 'Carol Privatename') RETURNING id", EMAILS).fetchall()
    return [int(r[0]) for r in rows]


def analytics_line(user: int | str, event: str = "play", when: str = "2026-05-01 10:00:00+00",
                   country: str = "DE", props: str = '"{""ms"": 1}"') -> str:
    return f"{user},{event},,{props},{country},mobile,,{when}"


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def rows(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def count(url: str, table: str = "analytics") -> int:
    return int(rows(url, f"SELECT count(*) FROM {table}")[0][0])




def cli(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """``agentdb ARGS`` in a child process, as a user runs it."""
    import os

    full = {**os.environ, "COLUMNS": "100", "TERM": "dumb", **(env or {})}
    full.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "agentdb", *args], input=stdin, capture_output=True, env=full,
                          cwd=cwd or ROOT, timeout=120)
