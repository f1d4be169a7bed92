"""``python versions/008_bulk_import_export.py import|export TABLE FILE [options]``: the seeds' script form.

``import``/``export`` run ``agentdb import``/``agentdb export`` (the global
``--database-url``/``--data-dir``/``--debug`` may come anywhere on the line);
anything else is the usual version-file script (bring the database to revision
008, ``--down``...).
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(file: str, argv: list[str] | None = None) -> None:
    from agentdb.runtime.script import main as migration_main
    from agentdb.runtime.script import split_global_options

    args = list(sys.argv[1:] if argv is None else argv)
    front, rest = split_global_options(args)
    if not rest or rest[0] not in ("import", "export"):
        migration_main(file, args)
        return
    from agentdb import cli

    cli.main(front + rest)
