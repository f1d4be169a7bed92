"""``agentdb online plan|start|status|pause|resume|abort|complete``: the CLI of :mod:`agentdb.online`."""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any

import typer

from agentdb import online
from agentdb.cli._common import JsonOpt, compact_table, duration, new_group, online_progress_bar, out, print_json, state

app = new_group(help="Online changes of busy tables: capture, batched copy, verify, short cut-over, resume.",
                no_args_is_help=True)

TableArg = Annotated[str, typer.Argument(help="The table, e.g. analytics or public.analytics.")]
KindArg = Annotated[str, typer.Argument(help=f"The kind of change: {', '.join(sorted(online.KINDS))}.")]
ChangeArg = Annotated[str, typer.Argument(help="The change: its id, or the table it changes.")]
PremakeOpt = Annotated[int | None, typer.Option("--premake", min=0, help="partition: months made ahead (4).")]
ThrottleOpt = Annotated[
    str | None, typer.Option("--throttle-sql", help="Pause between batches while this SQL expression is true.")
]
LagOpt = Annotated[
    str | None, typer.Option("--max-replica-lag", help="Pause while a replica's replay lag is above this (e.g. 1s).")
]
BatchOpt = Annotated[float | None, typer.Option("--batch-seconds", min=0.01, help="Target time per batch (0.5).")]
LockOpt = Annotated[str | None, typer.Option("--lock-timeout", help="lock_timeout of the cut-over (200ms).")]


def _options(premake: int | None) -> dict[str, Any]:
    return {"premake": premake} if premake is not None else {}


def _settings(throttle_sql: str | None, max_replica_lag: str | None, batch_seconds: float | None,
              lock_timeout: str | None) -> online.OnlineSettings:
    changes: dict[str, Any] = {}
    if throttle_sql is not None:
        changes["throttle_sql"] = throttle_sql
    if max_replica_lag is not None:
        changes["max_replica_lag"] = duration(max_replica_lag, "replica lag")
    if batch_seconds is not None:
        changes["batch_seconds"] = batch_seconds
    if lock_timeout is not None:
        changes["lock_timeout"] = duration(lock_timeout, "lock timeout")
    return online.OnlineSettings(**changes)


def _show(change: online.ChangeStatus, as_json: bool) -> None:
    if as_json:
        print_json(change.as_dict())
        return
    rows = f"{change.rows_done:,}" + (f" of ~{change.rows_estimated:,}" if change.rows_estimated else "")
    out.print(f"change {change.id}: {change.kind} of {change.table}: {change.status}, phase {change.phase}, "
              f"{rows} rows", markup=False)
    if change.lock_hold_ms is not None:
        out.print(f"  longest ACCESS EXCLUSIVE hold at cut-over: {change.lock_hold_ms:.1f} ms", markup=False)
    if change.error:
        out.print(f"  error: {change.error}", markup=False, soft_wrap=False)


@app.command("plan")
def plan_(table: TableArg, kind: KindArg = "partition", premake: PremakeOpt = None,
          sql: Annotated[bool, typer.Option("--sql", help="Print every phase's SQL with comments.")] = False,
          as_json: JsonOpt = False) -> None:
    """Show what a change would do (phases, locks, how long each may wait, rows); changes nothing."""
    planned = online.plan(table, kind, database_url=state.database_url, data_dir=state.data_dir, **_options(premake))
    if as_json:
        print_json(planned.as_dict())
        return
    if sql:
        sys.stdout.write(planned.sql())
        return
    out.print(f"plan: {planned.kind} of {planned.qualified}, ~{planned.rows_estimated:,} rows", markup=False)
    for phase in planned.phases:
        out.print(f"{phase.name}: {phase.summary}", markup=False, soft_wrap=False)
        # One line per kind of lock: the same step on every month partition is said once.
        locks = dict.fromkeys(re.sub(r"_p\d{6}\b", "_pYYYYMM", lock) for lock in phase.locks())
        for lock in locks:
            out.print(f"  lock: {lock}", markup=False, soft_wrap=False)
    for note in planned.notes:
        out.print(f"note: {note}", markup=False, soft_wrap=False)


@app.command("start")
def start_(table: TableArg, kind: KindArg = "partition", premake: PremakeOpt = None,
           throttle_sql: ThrottleOpt = None, max_replica_lag: LagOpt = None, batch_seconds: BatchOpt = None,
           lock_timeout: LockOpt = None, as_json: JsonOpt = False) -> None:
    """Run a change online to the end; after a crash, `agentdb online resume TABLE` carries on."""
    state.on_interrupt = lambda: f"the change stopped at its last checkpoint; `agentdb online resume {table}` " \
                                 f"carries on, `agentdb online abort {table}` undoes it"
    settings = _settings(throttle_sql, max_replica_lag, batch_seconds, lock_timeout)
    bar, update = online_progress_bar()
    with bar:
        change = online.start(table, kind, database_url=state.database_url, data_dir=state.data_dir,
                              settings=settings, progress=update, **_options(premake))
    _show(change, as_json)


@app.command("resume")
def resume_(change: ChangeArg, as_json: JsonOpt = False) -> None:
    """Carry a change on from its checkpoint (after a crash), or let a paused one go on."""
    state.on_interrupt = lambda: f"the change stopped at its last checkpoint; run `agentdb online resume {change}`"
    bar, update = online_progress_bar()
    with bar:
        result = online.resume(change, database_url=state.database_url, data_dir=state.data_dir, progress=update)
    _show(result, as_json)


@app.command("pause")
def pause_(change: ChangeArg, as_json: JsonOpt = False) -> None:
    """Pause a change between batches (it keeps its place); `resume` lets it go on."""
    _show(online.pause(change, database_url=state.database_url, data_dir=state.data_dir), as_json)


@app.command("abort")
def abort_(change: ChangeArg, as_json: JsonOpt = False) -> None:
    """Undo a change that is not cut over yet: the table ends as it was, nothing of the change is left."""
    _show(online.abort(change, database_url=state.database_url, data_dir=state.data_dir), as_json)


@app.command("complete")
def complete_(change: ChangeArg, as_json: JsonOpt = False) -> None:
    """Finish a change left cut over: drop (or archive) the old table."""
    _show(online.complete(change, database_url=state.database_url, data_dir=state.data_dir), as_json)


@app.command("status")
def status_(
    all_: Annotated[bool, typer.Option("--all", help="Also the latest finished changes.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every unfinished change (interrupted ones and what they left behind flagged); --all adds finished ones."""
    changes = online.status(database_url=state.database_url, data_dir=state.data_dir, include_finished=all_)
    if as_json:
        print_json([c.as_dict() for c in changes])
        return
    if not changes:
        out.print("no online change under way" + ("" if all_ else " (--all shows finished ones)"))
        return
    table = compact_table("id", "kind", "table", "status", "phase", "rows", "driven by")
    for c in changes:
        driver = f"pid {c.client_pid}" if c.driven and c.client_pid else ("nobody" if not c.driven else "?")
        table.add_row(str(c.id or ""), c.kind, c.table, c.status, c.phase, f"{c.rows_done:,}", driver)
    out.print(table)
    for c in changes:
        if c.objects and not c.driven and c.status not in {"completed", "aborted"}:
            out.print(f"change {c.id or '?'} left behind: {', '.join(c.objects)}", markup=False, soft_wrap=False)
