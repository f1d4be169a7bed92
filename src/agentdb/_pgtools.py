"""Find PostgreSQL client programs (pg_dump, psql, pgbench) that fit a server.

``pg_dump`` refuses a server newer than itself, so the right binary depends on
the server: the embedded ``pgserver`` package ships PostgreSQL 16's tools,
Debian installs each major version under ``/usr/lib/postgresql/N/bin``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

__all__ = ["find_tool", "tool_major"]


def _candidates(name: str) -> list[Path]:
    found: list[Path] = []
    explicit = os.environ.get("AGENTDB_PG_BINDIR")
    if explicit:
        found.append(Path(explicit) / name)
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            import pgserver._commands as pgc  # type: ignore[import-untyped,unused-ignore]

        found.append(Path(pgc.POSTGRES_BIN_PATH) / name)
    except Exception:  # pgserver is optional here
        pass
    found.extend(Path(p) for p in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True))
    on_path = shutil.which(name)
    if on_path:
        found.append(Path(on_path))
    return [p for p in found if p.is_file() and os.access(p, os.X_OK)]


def tool_major(path: Path) -> int | None:
    """The major version a PostgreSQL program reports with ``--version``."""
    try:
        text = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", text)
    return int(match.group(1)) if match else None


def find_tool(name: str, server_major: int) -> Path:
    """The program ``name`` whose major version is closest above or equal to ``server_major``."""
    best: tuple[int, Path] | None = None
    for path in _candidates(name):
        major = tool_major(path)
        if major is None or major < server_major:
            continue
        if best is None or major < best[0]:
            best = (major, path)
    if best is None:
        raise FileNotFoundError(f"no {name} for PostgreSQL {server_major} or newer was found")
    return best[1]
