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

__all__ = ["main", "rollback_main", "split_global_options"]

#: ``agentdb``'s own options that take a value (``--debug`` takes none).
_GLOBAL_WITH_VALUE = ("--database-url", "--data-dir")


def split_global_options(args: list[str]) -> tuple[list[str], list[str]]:
    """(the options of ``agentdb`` itself, the rest) -- wherever the user put them on the line, so that a version
    file run as a script can hand them to :func:`agentdb.cli.main` before its command."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg.split("=", 1)[0] in _GLOBAL_WITH_VALUE:
            if "=" in arg:
                front.append(arg)
            else:
                front += args[index:index + 2]
                index += 1
        elif arg == "--debug":
            front.append(arg)
        else:
            rest.append(arg)
        index += 1
    return front, rest


def _revision_of(path: Path) -> tuple[str, str | None]:
    namespace = runpy.run_path(str(path), run_name="agentdb_migration_probe")
    return str(namespace["revision"]), namespace.get("down_revision")


def main(file: str, argv: list[str] | None = None) -> None:
    """Entry point used by the ``if __name__ == "__main__"`` block of every migration."""
    from agentdb import migrate
    from agentdb.cli._common import online_progress_bar
    from agentdb.errors import AgentdbError

    path = Path(file).resolve()
    os.environ["AGENTDB_SCRIPT_LOCATION"] = str(path.parent.parent)
    parser = argparse.ArgumentParser(prog=f"python {path.name}", description=f"Apply migration {path.stem}.")
    parser.add_argument("--down", action="store_true", help="undo this migration (and every later one) instead")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: DATABASE_URL or embedded)")
    parser.add_argument("--data-dir", default=None, help="embedded server data directory")
    args = parser.parse_args(argv)
    # An online change (007's conversion of analytics) shows its phases, rows, rows/s and ETA on a terminal.
    bar, progress = online_progress_bar()
    try:
        revision, down_revision = _revision_of(path)
        state = migrate.current(database_url=args.database_url, data_dir=args.data_dir)
        applied = revision not in state.pending
        where = ", ".join(state.revisions) or "base"
        if args.down:
            if not applied:
                print(f"{revision} is not applied (database at {where}); nothing to undo")
                return
            with bar:
                report = migrate.downgrade(down_revision or "base", database_url=args.database_url,
                                           data_dir=args.data_dir, progress=progress)
        else:
            if applied:
                print(f"{revision} is already applied (database at {where})")
                return
            with bar:
                report = migrate.upgrade(revision, database_url=args.database_url, data_dir=args.data_dir,
                                         progress=progress)
    except AgentdbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    from agentdb.runtime.environment import describe_online

    for step in report.steps:
        print(step.describe())
        for change in step.online:
            print(f"  {describe_online(change)}")
    if not report.steps:
        print("nothing to do")


def rollback_main(file: str, below: str, argv: list[str] | None = None) -> None:
    """``python 006_rollback.py``: undo every migration above ``below``, the way ``agentdb rollback`` does.

    Shows the plan (a dry run on the real database), asks unless ``--yes``,
    archives the rows of non-empty tables it drops (``--purge``: drops them),
    and records the run.  ``--apply`` runs the file like any other version file.
    """
    from agentdb import migrate
    from agentdb.errors import AgentdbError

    path = Path(file).resolve()
    os.environ["AGENTDB_SCRIPT_LOCATION"] = str(path.parent.parent)
    parser = argparse.ArgumentParser(
        prog=f"python {path.name}",
        description=f"Roll back every migration above {below}, keeping the rows of the tables it drops.",
    )
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--purge", action="store_true", help="drop the rows of dropped tables for real")
    parser.add_argument("--dry-run", action="store_true", help="only show what would happen")
    parser.add_argument("--apply", action="store_true", help=f"bring the database to {path.stem[:3]} instead")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: DATABASE_URL or embedded)")
    parser.add_argument("--data-dir", default=None, help="embedded server data directory")
    args = parser.parse_args(argv)
    where_args = [a for pair in (("--database-url", args.database_url), ("--data-dir", args.data_dir))
                  for a in pair if pair[1]]
    if args.apply:
        main(file, where_args)
        return
    try:
        state = migrate.current(database_url=args.database_url, data_dir=args.data_dir)
        where = ", ".join(state.revisions) or "base"
        if state.revisions in ((), (below,)) or below in state.pending:
            print(f"nothing to roll back: the database is at {where}, not above {below}")
            return
        plan = migrate.plan_rollback(below, purge=args.purge, database_url=args.database_url, data_dir=args.data_dir)
        print(f"rollback plan (database at {where}):")
        for planned in plan.steps:
            kept = [
                f"{'purge' if 'purged' in e else 'archive'} {e['rows']} rows of {e.get('archived') or e.get('purged')}"
                for e in planned.observed.archive if "archived" in e or "purged" in e
            ]
            print(f"  undo {planned.plan.revision} {planned.plan.description}: {'; '.join(kept) or 'no rows to keep'}")
        if args.dry_run:
            print(f"dry run: nothing changed, the database is still at {where}")
            return
        if not args.yes:
            if not sys.stdin.isatty():
                raise AgentdbError("rollback needs confirmation and there is no terminal to ask", hint="pass --yes")
            answer = input(f"Roll back to {below}{' and PURGE the rows' if args.purge else ''}? [y/N] ")
            if answer.strip().lower() not in {"y", "yes"}:
                print("not rolled back: nothing changed")
                raise SystemExit(1)
        report = migrate.rollback(
            below, purge=args.purge, expect_at=plan.revisions_before,
            database_url=args.database_url, data_dir=args.data_dir,
        )
    except AgentdbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    for step in report.steps:
        print(step.describe())
