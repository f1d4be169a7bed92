"""What every CLI module shares: the consoles, the global options, JSON output, common option types."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from agentdb.runtime.settings import parse_duration

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def new_group(**options: Any) -> typer.Typer:
    """A Typer for one command group, with plain click help (no ``<bool>`` after flags, fits 100 columns)."""
    return typer.Typer(rich_markup_mode=None, **options)


def compact_table(*columns: str, title: str | None = None) -> Table:
    """A table of one line per row: no cell wraps, a light frame, so it fits a 100-column terminal."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=title, title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    return table


class _State:
    database_url: str | None = None
    data_dir: Path | None = None
    debug: bool = False
    #: What a Ctrl-C leaves behind, said by the command that is running (see :func:`agentdb.cli.main`).
    on_interrupt: Callable[[], str] | None = None


state = _State()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
def _revision(value: str | None) -> str | None:
    """``-1`` is a revision (the commands accept unknown options for it), ``--nope`` is a mistyped option."""
    if value is not None and value.startswith("--"):
        raise typer.BadParameter(f"no such option: {value}", param_hint="REVISION")
    return value


RevisionArg = Annotated[str, typer.Argument(help="Revision id, head, base, +N or -N.", callback=_revision)]
LockTimeoutOpt = Annotated[
    str | None, typer.Option("--lock-timeout", help="lock_timeout per statement (default 5s).", show_default=False)
]
StatementTimeoutOpt = Annotated[
    str | None, typer.Option("--statement-timeout", help="statement_timeout per statement (default 0 = none).")
]
RetriesOpt = Annotated[int | None, typer.Option("--lock-retries", min=1, help="Attempts on lock timeout (default 5).")]
RunLockOpt = Annotated[
    str | None, typer.Option("--run-lock-timeout", help="How long to wait for another run (default 10min).")
]

DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Run in one transaction on the database, report locks, roll back.")
]


def json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID | Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=json_default))


def duration(value: str | None, name: str) -> float | None:
    return None if value is None else parse_duration(value, name)




def online_progress_bar() -> tuple[Any, Callable[[Any], None]]:
    """A rich progress bar for online changes on a terminal (phase, rows, rows/s, ETA); nothing on a pipe.

    Returns the bar (a context manager) and the callback to hand the engine
    (an :data:`agentdb.online.ProgressCallback`).
    """
    import sys

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} rows"),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err, transient=True,
                   disable=not sys.stderr.isatty())
    task = bar.add_task("starting", total=None, rate="")

    def update(progress: Any) -> None:
        rate = f"{progress.rows_per_second:,.0f} rows/s" if progress.rows_per_second else ""
        where = f"{progress.table} {progress.phase}"
        bar.update(task, description=f"{where}{f' ({progress.note})' if progress.note else ''}",
                   completed=progress.rows_done, total=progress.rows_total, rate=rate)

    return bar, update
