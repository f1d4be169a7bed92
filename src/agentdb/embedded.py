"""The embedded PostgreSQL 16 server (the ``pgserver`` package).

With no ``DATABASE_URL``, agentdb keeps a PostgreSQL cluster in a local data
directory (``.agentdb/`` by default) and starts it on demand.  The server
listens on a Unix socket inside that directory only (no TCP port), trusts
local connections, and keeps running after the command that started it, so
the next command reuses it; ``agentdb embedded stop`` stops it.

Layout of the data directory::

    .agentdb/
        pgdata/        the PostgreSQL cluster (PG_VERSION, postmaster.pid, log, socket)
        agentdb.lock   taken while a process starts or stops the server

The application database inside the cluster is ``agentdb``.

.. warning::
   When agentdb runs as root, PostgreSQL refuses to; ``pgserver`` then runs
   the server as the system user ``pgserver`` and hands the cluster
   directory to that user.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentdb.errors import EmbeddedServerError

__all__ = [
    "DATABASE",
    "DEFAULT_DATA_DIR",
    "EmbeddedStatus",
    "ensure_running",
    "resolve_data_dir",
    "status",
    "stop",
]

DEFAULT_DATA_DIR = ".agentdb"
DATABASE = "agentdb"
SERVER_MAJOR = "16"
_LOCK_WAIT_SECONDS = 60.0

_log = logging.getLogger(__name__)


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The embedded data directory: argument, ``AGENTDB_DATA_DIR``, or ``./.agentdb``."""
    chosen = data_dir or os.environ.get("AGENTDB_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class EmbeddedStatus:
    """What ``agentdb embedded status`` reports."""

    data_dir: str
    initialized: bool
    running: bool
    pid: int | None
    version: str | None
    socket_dir: str | None
    url: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _pgdata(data_dir: Path) -> Path:
    return data_dir / "pgdata"


def _require_directory(data_dir: Path) -> None:
    """Refuse a data directory path that names a file (or the like): nothing could be created or found in it.

    Without this, starting says ``File exists`` and ``status`` promises to create a server there.
    """
    if data_dir.exists() and not data_dir.is_dir():
        raise EmbeddedServerError(
            str(data_dir), "it is a file, not a directory",
            hint="give --data-dir or AGENTDB_DATA_DIR a directory, or a path that does not exist yet",
        )
    pgdata = _pgdata(data_dir)
    if pgdata.exists() and not pgdata.is_dir():
        raise EmbeddedServerError(str(data_dir), "its pgdata is a file, not a directory", hint="move the file aside")


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """Hold ``agentdb.lock`` so that only one process starts or stops the server."""
    _require_directory(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        handle = open(data_dir / "agentdb.lock", "a+")  # closed in the finally below
    except OSError as exc:
        raise EmbeddedServerError(
            str(data_dir), f"cannot create the data directory: {exc.strerror}",
            hint="choose a writable place with --data-dir or AGENTDB_DATA_DIR",
        ) from None
    wait = float(os.environ.get("AGENTDB_EMBEDDED_LOCK_TIMEOUT") or _LOCK_WAIT_SECONDS)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        str(data_dir),
                        f"locked by another process (agentdb.lock) for more than {wait:.0f}s",
                        hint="wait for the other agentdb command, or stop it",
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        handle.close()


def _check_cluster(data_dir: Path) -> None:
    """Refuse a data directory that is not an intact PostgreSQL 16 cluster."""
    pgdata = _pgdata(data_dir)
    if not pgdata.exists():
        return
    version_file = pgdata / "PG_VERSION"
    if not version_file.exists():
        if any(pgdata.iterdir()):
            raise EmbeddedServerError(
                str(data_dir), "pgdata/ is not a PostgreSQL cluster (PG_VERSION is missing); it may be corrupt",
                hint="move the directory aside to start afresh, or set DATABASE_URL",
            )
        return
    version = version_file.read_text().strip()
    if version != SERVER_MAJOR:
        raise EmbeddedServerError(
            str(data_dir), f"the cluster was made by PostgreSQL {version}, the embedded server is {SERVER_MAJOR}",
            hint="upgrade it with pg_upgrade or move it aside",
        )
    for required in ("global", "base", "pg_wal"):
        if not (pgdata / required).is_dir():
            raise EmbeddedServerError(
                str(data_dir), f"the cluster is corrupt: pgdata/{required}/ is missing",
                hint="restore it from a backup or move it aside to start afresh",
            )


def _quiet_import() -> Any:
    # platformdirs warns about a missing XDG_RUNTIME_DIR on import; that is noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    logging.getLogger("pgserver").setLevel(
        logging.DEBUG if logging.getLogger("agentdb").isEnabledFor(logging.DEBUG) else logging.CRITICAL
    )
    return pgserver


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def ensure_running(data_dir: str | Path) -> str:
    """Start the embedded server unless it runs; return the URL of the ``agentdb`` database."""
    data_dir = Path(data_dir)
    with _exclusive(data_dir):
        _check_cluster(data_dir)
        pgserver = _quiet_import()
        pgdata = _pgdata(data_dir)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = pgserver.get_server(pgdata, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError, OSError) as exc:
            detail = _tail(pgdata / "log") or type(exc).__name__
            raise EmbeddedServerError(
                str(data_dir), f"the server did not start: {detail}",
                hint=f"see {pgdata / 'log'}; move the directory aside if it is damaged",
            ) from None
        base_uri: str = server.get_uri()
        _ensure_database(base_uri)
        uri: str = server.get_uri(DATABASE)
        return uri


def _ensure_database(uri: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if exists is None:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))


def _postmaster(pgdata: Path) -> Any:
    pgserver = _quiet_import()
    from pgserver.utils import PostmasterInfo

    del pgserver
    try:
        return PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):
        return None


def status(data_dir: str | Path | None = None) -> EmbeddedStatus:
    """Report on the embedded server without starting it."""
    directory = resolve_data_dir(data_dir)
    _require_directory(directory)
    pgdata = _pgdata(directory)
    version_file = pgdata / "PG_VERSION"
    initialized = version_file.exists()
    info = _postmaster(pgdata) if initialized else None
    version = version_file.read_text().strip() if initialized else None
    if info is None or not (info.is_running() and info.status == "ready"):
        return EmbeddedStatus(str(directory), initialized, False, None, version, None, None)
    return EmbeddedStatus(
        data_dir=str(directory),
        initialized=initialized,
        running=True,
        pid=int(info.pid),
        version=version,
        socket_dir=str(info.socket_dir) if info.socket_dir else None,
        url=str(info.get_uri(database=DATABASE)),
    )


def stop(data_dir: str | Path | None = None) -> bool:
    """Stop the embedded server; return ``False`` when it was not running."""
    directory = resolve_data_dir(data_dir)
    _require_directory(directory)
    pgdata = _pgdata(directory)
    if not (pgdata / "PG_VERSION").exists():
        return False
    with _exclusive(directory):
        info = _postmaster(pgdata)
        if info is None or not info.is_running():
            return False
        pgserver = _quiet_import()
        pg_ctl = pgserver._commands.pg_ctl
        user = "pgserver" if os.geteuid() == 0 else None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedServerError(
                str(directory), f"the server did not stop: {type(exc).__name__}",
                hint=f"see {pgdata / 'log'}",
            ) from None
        return True
