"""``agentdb seed-demo``: the CLI of :mod:`agentdb.demo`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agentdb.cli._common import JsonOpt, err, new_group, out, print_json, state

app = new_group()


@app.command("seed-demo")
def seed_demo(
    scale: Annotated[str, typer.Option("--scale", help="small, medium or large (1M analytics rows).")] = "small",
    users: Annotated[int | None, typer.Option("--users", min=10, help="Override the number of users.")] = None,
    analytics_rows: Annotated[
        int | None, typer.Option("--analytics-rows", min=0, help="Override the number of analytics rows.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same data.")] = 42,
    append: Annotated[bool, typer.Option("--append", help="Add to a database that already has rows.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fill every table with realistic demo data in one transaction (refuses a non-empty database)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from agentdb import demo

    state.on_interrupt = lambda: "nothing was written: seed-demo runs in one transaction, which was rolled back"
    plan = demo.plan_demo(scale, users=users, analytics_rows=analytics_rows, seed=seed)
    if as_json:
        report = demo.seed_demo(scale, database_url=state.database_url, data_dir=state.data_dir, seed=seed,
                                users=users, analytics_rows=analytics_rows, append=append)
        print_json(report.as_dict())
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("seeding users", total=len(plan.tables))
        position = iter(plan.tables[1:])

        def advance(load: demo.TableLoad) -> None:
            bar.update(task, advance=1, description=f"seeding {next(position, 'commit')}")

        report = demo.seed_demo(scale, database_url=state.database_url, data_dir=state.data_dir, seed=seed,
                                users=users, analytics_rows=analytics_rows, append=append, progress=advance)
    table = Table("table", "rows", "seconds", "rows/s", "how", title=f"demo data ({report.scale}, seed {seed})")
    for load in report.tables:
        rate = f"{load.rows_per_second:,.0f}" if load.seconds > 0 and load.rows else ""
        table.add_row(load.table, f"{load.rows:,}", f"{load.seconds:.2f}" if load.seconds else "", rate, load.method)
    out.print(table)
    out.print(f"{report.total_rows:,} rows in {report.seconds:.1f} s, in one transaction")


