"""The ``agentdb`` command line: a thin Typer layer over the capabilities' typed functions.

One module per command group (:mod:`.migrate`, :mod:`.governance`,
:mod:`.demo`, :mod:`.bulk`, :mod:`.privacy`, :mod:`.embedded`...); a new capability adds its module to
:data:`_GROUPS`.  Read commands take ``--json`` for machines; people get rich
tables.  An error is one line on stderr and a non-zero exit (the code is the
error's ``exit_code``); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from agentdb.cli import bulk, demo, embedded, governance, health, migrate, online, partitions, privacy
from agentdb.cli._common import err, state
from agentdb.errors import AgentdbError

__all__ = ["app", "main"]

app = typer.Typer(
    name="agentdb",
    help="PostgreSQL schema, migrations and data operations of the Spotify AI Agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)

#: Command groups whose commands sit at the top level (``agentdb upgrade``), and named ones (``agentdb embedded``).
_GROUPS = (migrate.app, governance.app, demo.app, health.app, bulk.app)
_NAMED = {
    "online": online.app, "partitions": partitions.app, "privacy": privacy.app, "embedded": embedded.app,
}
for _group in _GROUPS:
    app.add_typer(_group)
for _name, _group in _NAMED.items():
    app.add_typer(_group, name=_name)


@app.callback()
def _main(
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="PostgreSQL URL; default DATABASE_URL, else embedded.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Embedded server data directory (default .agentdb/).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and SQL logging.")] = False,
) -> None:
    state.database_url = database_url
    state.data_dir = data_dir
    state.debug = debug
    _setup_logging(debug)


def _setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("agentdb")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False
    logging.getLogger("alembic").setLevel(logging.INFO if debug else logging.WARNING)
    # The runner logs one line per step for plain `alembic`; the CLI prints the same from the report instead.
    logging.getLogger("agentdb.run").setLevel(logging.DEBUG if debug else logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one line per error, the traceback only with ``--debug``."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        # Not standalone: Typer would turn Ctrl-C into a silent exit 130 and print usage errors itself.
        code = app(args=args, prog_name="agentdb", standalone_mode=False)
    except typer.TyperException as exc:  # a usage error: click's own message and exit code (2)
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        err.print(f"interrupted: {_after_interrupt()}", markup=False)
        raise SystemExit(130) from None
    except Exception as exc:
        if not _interrupted(exc):
            _fail(exc, debug)
        # Cleaning up after a Ctrl-C failed too (a connection left mid-query): still an interrupt.
        if debug:
            traceback.print_exc()
        err.print(f"interrupted: {_after_interrupt()}", markup=False)
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        err.print(f"interrupted: {_after_interrupt()}", markup=False)
        raise SystemExit(130) from None
    if code == _INTERRUPTED:  # Typer's answer to a KeyboardInterrupt inside a command
        err.print(f"interrupted: {_after_interrupt()}", markup=False)
    if isinstance(code, int) and code:
        raise SystemExit(code)


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a Ctrl-C was being handled (its context chain holds the interrupt)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__context__ or current.__cause__
    return False


def _fail(exc: Exception, debug: bool) -> NoReturn:
    """One line for an error, the traceback only with ``--debug``; an unexpected one (a bug) says so."""
    if isinstance(exc, AgentdbError):
        if debug:
            traceback.print_exc()
        err.print(f"error: {exc}", markup=False)
        raise SystemExit(exc.exit_code) from None
    if debug:  # a bug: still one line unless --debug
        traceback.print_exc()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    err.print(f"error: unexpected {type(exc).__name__}: {first} (run with --debug for details)", markup=False)
    raise SystemExit(1) from None


_INTERRUPTED = 130


def _after_interrupt() -> str:
    """What a Ctrl-C left behind, as the running command tells it; never raises."""
    if state.on_interrupt is None:
        return "stopped before finishing"
    try:
        return state.on_interrupt()
    except BaseException:  # a second Ctrl-C, or the database is gone: say what is certain
        return "the transaction in progress was rolled back; run `agentdb current` to see where the database is"
