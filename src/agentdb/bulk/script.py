"""``python versions/008_bulk_import_export.py import|export TABLE FILE [options]``: the seeds' script form.

``import``/``export`` run ``agentdb import``/``agentdb export`` (the global
``--database-url``/``--data-dir``/``--debug`` may come anywhere on the line);
anything else is the usual version-file script (bring the database to revision
008, ``--down``...).
"""

from __future__ import annotations

import sys

__all__ = ["main"]

_GLOBAL_WITH_VALUE = ("--database-url", "--data-dir")


def main(file: str, argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if _command(args) not in ("import", "export"):
        from agentdb.runtime.script import main as migration_main

        migration_main(file, args)
        return
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_WITH_VALUE:
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
    from agentdb import cli

    cli.main(front + rest)


def _command(args: list[str]) -> str | None:
    """The first argument that is neither a global option nor its value: ``import``, ``export`` or another."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg.split("=", 1)[0] in _GLOBAL_WITH_VALUE:
            index += 1 if "=" in arg else 2
        elif arg == "--debug":
            index += 1
        else:
            return arg
    return None
