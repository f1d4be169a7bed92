"""``python versions/NNN_name.py``: run one migration file as a script.

The file's revision is brought in with its prerequisites first, through the
same run lock, timeouts and history as ``agentdb upgrade``; ``--down`` undoes
it (rolls back to the revision before it, so every later migration first).
A revision already applied is reported and the script exits 0.

The migrations directory is the one the file lives in, whatever
``AGENTDB_SCRIPT_LOCATION`` says: the file runs in its own history.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

__all__ = ["main"]


def _revision_of(path: Path) -> tuple[str, str | None]:
    namespace = runpy.run_path(str(path), run_name="agentdb_migration_probe")
    return str(namespace["revision"]), namespace.get("down_revision")


def main(file: str, argv: list[str] | None = None) -> None:
    """Entry point used by the ``if __name__ == "__main__"`` block of every migration."""
    from agentdb import commands
    from agentdb.errors import AgentdbError

    path = Path(file).resolve()
    os.environ["AGENTDB_SCRIPT_LOCATION"] = str(path.parent.parent)
    parser = argparse.ArgumentParser(prog=f"python {path.name}", description=f"Apply migration {path.stem}.")
    parser.add_argument("--down", action="store_true", help="undo this migration (and every later one) instead")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: DATABASE_URL or embedded)")
    parser.add_argument("--data-dir", default=None, help="embedded server data directory")
    args = parser.parse_args(argv)
    try:
        revision, down_revision = _revision_of(path)
        state = commands.current(database_url=args.database_url, data_dir=args.data_dir)
        applied = revision not in state.pending
        where = ", ".join(state.revisions) or "base"
        if args.down:
            if not applied:
                print(f"{revision} is not applied (database at {where}); nothing to undo")
                return
            report = commands.downgrade(down_revision or "base", database_url=args.database_url, data_dir=args.data_dir)
        else:
            if applied:
                print(f"{revision} is already applied (database at {where})")
                return
            report = commands.upgrade(revision, database_url=args.database_url, data_dir=args.data_dir)
    except AgentdbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    for step in report.steps:
        print(f"{step.direction} {step.revision} {step.description} ({step.duration_ms:.0f} ms)")
    if not report.steps:
        print("nothing to do")
