"""``agentdb partitions [TABLE] | list [TABLE] | maintain``: the CLI of :mod:`agentdb.partitions`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from agentdb.cli._common import JsonOpt, compact_table, duration, err, new_group, out, print_json, state


class _TableOrCommand(TyperGroup):
    """``agentdb partitions analytics`` is ``agentdb partitions list analytics``: a word that is not a command
    is the table to list."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[Any, Any, list[str]]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["list", *args]
        return super().resolve_command(ctx, args)


app = new_group(help="Partitions of the managed tables: `agentdb partitions [TABLE]` lists them; `maintain` keeps "
                     "them ahead, drained and retired.", invoke_without_command=True, cls=_TableOrCommand)


def _show_partitions(table: str | None, exact: bool, as_json: bool) -> None:
    from agentdb import partitions
    rows = partitions.list_partitions(table, database_url=state.database_url, data_dir=state.data_dir, exact=exact)
    if as_json:
        print_json([row.as_dict() for row in rows])
        return
    if not rows:
        out.print("no partitions (no table is managed by partition maintenance)" if table is None
                  else f"{table} has no partitions")
        return
    listing = compact_table("table", "partition", "from", "to", "rows", "size")
    for row in rows:
        count = "" if row.rows is None else f"{row.rows:,}" + ("" if row.rows_exact else " (est.)")
        bounds = ("default", "") if row.lower is None and row.upper is None else (
            f"{row.lower:%Y-%m-%d}" if row.lower else "", f"{row.upper:%Y-%m-%d}" if row.upper else "")
        listing.add_row(row.table.removeprefix("public."), row.partition.split(".")[-1], *bounds, count,
                        f"{row.size_bytes / 1048576:,.1f} MB")
    out.print(listing)


ExactOpt = Annotated[bool, typer.Option("--exact", help="Count rows exactly instead of the planner's estimate.")]


@app.callback()
def _partitions(ctx: typer.Context, exact: ExactOpt = False, as_json: JsonOpt = False) -> None:
    """Without a subcommand: list the partitions of every managed table."""
    if ctx.invoked_subcommand is None:
        _show_partitions(None, exact, as_json)


@app.command("list")
def list_(
    table: Annotated[str | None, typer.Argument(help="A partitioned table; default every managed one.")] = None,
    exact: ExactOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """List partitions with their bounds, rows and size."""
    _show_partitions(table, exact, as_json)


@app.command("maintain")
def maintain(
    table: Annotated[str | None, typer.Option("--table", help="Only this managed table.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the steps and their locks; change nothing.")] = False,
    lock_timeout: Annotated[
        str | None, typer.Option("--lock-timeout", help="lock_timeout per lock-taking step (200ms).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Keep `premake` months ahead, drain the DEFAULT partition, apply retention; idempotent, cron-safe."""
    from agentdb import partitions
    state.on_interrupt = lambda: "every step that finished stays; the next `agentdb partitions maintain` goes on"
    timeout = duration(lock_timeout, "lock timeout") if lock_timeout is not None else None
    report = partitions.maintain_partitions(database_url=state.database_url, data_dir=state.data_dir, table=table,
                                            dry_run=dry_run, lock_timeout=timeout or 0.2)
    if as_json:
        print_json(report.as_dict())
        return
    for step in report.plan if dry_run else ():
        out.print(f"would {step.describe()}", markup=False, soft_wrap=False)
    for table_report in report.tables:
        for warning in table_report.warnings:
            err.print(f"warning: {warning}", markup=False, soft_wrap=False)
    out.print(report.summary(), markup=False, soft_wrap=False)
    if not report.ok:
        raise typer.Exit(6)
