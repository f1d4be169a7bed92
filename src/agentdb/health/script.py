"""``python versions/009_health_check.py [options]``: migration 009 as a script prints the health report.

Without ``--apply`` it is ``agentdb health`` with the same options (``--json``,
``--format prometheus``, ``--only``/``--skip``, ``-t CHECK.NAME=VALUE``,
``--record``, ``--html FILE``...) and the same Nagios exit codes (0 ok,
1 warning, 2 critical, 3 unknown or a usage error), so the file drops into a
monitoring system as a plugin.  ``--apply`` brings the database to revision 009
instead (its prerequisites first, as any version file run as a script);
``--apply --down`` undoes it.  ``--database-url``, ``--data-dir`` and
``--debug`` may come anywhere.

The migrations directory is the one the file lives in (as for every version
file run as a script): ``schema.migrations_pending`` compares the database
with the files next to this one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["main"]


def main(file: str, argv: list[str] | None = None) -> None:
    """Entry point of ``009_health_check.py``'s ``if __name__ == "__main__"`` block."""
    from agentdb.runtime.script import main as migration_main
    from agentdb.runtime.script import split_global_options

    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(file).resolve()
    if "--apply" in args:
        migration_main(file, [a for a in args if a != "--apply"])
        return
    os.environ["AGENTDB_SCRIPT_LOCATION"] = str(path.parent.parent)
    front, rest = split_global_options(args)
    if "--help" in rest or "-h" in rest:
        print(f"python {path.name} [--apply [--down]] [--database-url URL] [--data-dir DIR] [OPTIONS]\n\n"
              "With --apply: bring the database to revision 009 (--down: undo it). Otherwise: the health report\n"
              "of `agentdb health`, with its options and exit codes:\n")
        rest = ["--help"]
    from agentdb import cli

    cli.main([*front, "health", *rest])
