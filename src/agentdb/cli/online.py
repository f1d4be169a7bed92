"""``agentdb online plan|start|status|pause|resume|set|abort|complete``: the CLI of :mod:`agentdb.online`."""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentdb.cli._common import JsonOpt, compact_table, duration, new_group, online_progress_bar, out, print_json, state

if TYPE_CHECKING:
    from agentdb import online

app = new_group(help="Online changes of busy tables: capture, batched copy, verify, short cut-over, resume.",
                no_args_is_help=True)

#: ``online.KINDS``, written out so that ``agentdb --help`` does not load the engine (a test keeps them equal).
KIND_NAMES = ("add_check", "add_column", "add_foreign_key", "add_unique", "alter_column_type", "create_index",
              "drop_index", "merge_columns", "partition", "rename_column", "split_column", "unpartition")

TableArg = Annotated[str, typer.Argument(help="The table, e.g. analytics or public.analytics.")]
KindArg = Annotated[str, typer.Argument(help=f"The kind of change: {', '.join(KIND_NAMES)}.")]
ChangeArg = Annotated[str, typer.Argument(help="The change: its id, or the table it changes.")]
PremakeOpt = Annotated[int | None, typer.Option("--premake", min=0, help="partition: months made ahead (4).")]
ColumnOpt = Annotated[str | None, typer.Option(
    "--column", help="The column changed (alter_column_type, add_column, rename_column, split_column).")]
TypeOpt = Annotated[str | None, typer.Option("--type", help="Its (new) type, e.g. bigint or 'varchar(200)'.")]
UsingOpt = Annotated[str | None, typer.Option("--using", help="alter_column_type: the USING expression.")]
DefaultOpt = Annotated[str | None, typer.Option(
    "--default", help="add_column: a constant default, read by existing rows without a rewrite "
                      "(-o server_default=EXPR for a SQL expression such as now()).")]
BackfillOpt = Annotated[str | None, typer.Option(
    "--backfill", help="add_column: an expression over the row that fills the existing rows in batches.")]
NotNullOpt = Annotated[bool, typer.Option(
    "--not-null", help="add_column: NOT NULL, by a NOT VALID check validated online, never a locked scan.")]
NameOpt = Annotated[str | None, typer.Option(
    "--name", help="The index or constraint (create_index, drop_index, add_unique, add_check, add_foreign_key).")]
ColumnsOpt = Annotated[str | None, typer.Option(
    "--columns", help="Comma-separated columns (create_index, add_unique, add_foreign_key, merge_columns).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--option", "-o", metavar="KEY=VALUE",
    help="Any other option of the kind, VALUE as JSON or plain text: -o new_name=user_id, -o unique=true, "
         "-o 'into={\"first_name\": [\"text\", \"split_part(name, \' \', 1)\"]}'.")]
ThrottleOpt = Annotated[
    str | None, typer.Option("--throttle-sql", help="Pause between batches while this SQL expression is true.")
]
LagOpt = Annotated[
    str | None, typer.Option("--max-replica-lag", help="Pause while a replica's replay lag is above this (e.g. 1s).")
]
BatchOpt = Annotated[float | None, typer.Option("--batch-seconds", min=0.01, help="Target time per batch (0.05).")]
LockOpt = Annotated[str | None, typer.Option("--lock-timeout", help="lock_timeout of the cut-over (200ms).")]


def kind_options(*, premake: int | None = None, column: str | None = None, type_: str | None = None,
                 using: str | None = None, default: str | None = None, backfill: str | None = None,
                 not_null: bool = False, name: str | None = None, columns: str | None = None,
                 pairs: list[str] | None = None) -> dict[str, Any]:
    """The options given on the command line, as the kind takes them.

    Only the options given are passed: the kind names an option it does not
    take (``add_check takes name, condition``), and one it needs and lacks.
    """
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="'--option'")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    named: dict[str, Any] = {"premake": premake, "column": column, "type": type_, "using": using, "backfill": backfill,
             "name": name, "condition": None}
    if default is not None:
        named["default"] = default
    if not_null:
        named["nullable"] = False
    if columns is not None:
        named["columns"] = [c.strip() for c in columns.split(",") if c.strip()]
    options.update({key: value for key, value in named.items() if value is not None})
    return options


def _settings(throttle_sql: str | None, max_replica_lag: str | None, batch_seconds: float | None,
              lock_timeout: str | None) -> online.OnlineSettings:
    from agentdb import online

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
def plan_(table: TableArg, kind: KindArg = "partition", premake: PremakeOpt = None, column: ColumnOpt = None,
          type_: TypeOpt = None, using: UsingOpt = None, default: DefaultOpt = None, backfill: BackfillOpt = None,
          not_null: NotNullOpt = False, name: NameOpt = None, columns: ColumnsOpt = None, option: SetOpt = None,
          sql: Annotated[bool, typer.Option("--sql", help="Print every phase's SQL with comments.")] = False,
          as_json: JsonOpt = False) -> None:
    """Show what a change would do (phases, locks, how long each may wait, rows); changes nothing."""
    from agentdb import online

    options = kind_options(premake=premake, column=column, type_=type_, using=using, default=default,
                           backfill=backfill, not_null=not_null, name=name, columns=columns, pairs=option)
    planned = online.plan(table, kind, database_url=state.database_url, data_dir=state.data_dir, **options)
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
def start_(table: TableArg, kind: KindArg = "partition", premake: PremakeOpt = None, column: ColumnOpt = None,
           type_: TypeOpt = None, using: UsingOpt = None, default: DefaultOpt = None, backfill: BackfillOpt = None,
           not_null: NotNullOpt = False, name: NameOpt = None, columns: ColumnsOpt = None, option: SetOpt = None,
           throttle_sql: ThrottleOpt = None, max_replica_lag: LagOpt = None, batch_seconds: BatchOpt = None,
           lock_timeout: LockOpt = None, as_json: JsonOpt = False) -> None:
    """Run a change online to the end; after a crash, `agentdb online resume TABLE` carries on.

    An expand/contract kind (add_column, rename_column, split_column,
    merge_columns) stops expanded, both application versions working;
    `agentdb online complete TABLE` contracts once the old version is gone.
    """
    from agentdb import online

    options = kind_options(premake=premake, column=column, type_=type_, using=using, default=default,
                           backfill=backfill, not_null=not_null, name=name, columns=columns, pairs=option)
    state.on_interrupt = lambda: f"the change stopped at its last checkpoint; `agentdb online resume {table}` " \
                                 f"carries on, `agentdb online abort {table}` undoes it"
    settings = _settings(throttle_sql, max_replica_lag, batch_seconds, lock_timeout)
    bar, update = online_progress_bar()
    with bar:
        change = online.start(table, kind, database_url=state.database_url, data_dir=state.data_dir,
                              settings=settings, progress=update, **options)
    _show(change, as_json)


@app.command("resume")
def resume_(change: ChangeArg, as_json: JsonOpt = False) -> None:
    """Carry a change on from its checkpoint (after a crash), or let a paused one go on."""
    from agentdb import online
    state.on_interrupt = lambda: f"the change stopped at its last checkpoint; run `agentdb online resume {change}`"
    bar, update = online_progress_bar()
    with bar:
        result = online.resume(change, database_url=state.database_url, data_dir=state.data_dir, progress=update)
    _show(result, as_json)


@app.command("pause")
def pause_(change: ChangeArg, as_json: JsonOpt = False) -> None:
    """Pause a change between batches (it keeps its place); `resume` lets it go on."""
    from agentdb import online
    _show(online.pause(change, database_url=state.database_url, data_dir=state.data_dir), as_json)


@app.command("set")
def set_(
    change: ChangeArg,
    batch_seconds: Annotated[float | None, typer.Option(
        "--batch-seconds", min=0.01, help="Adaptive batches aiming at this time each (ends a fixed --batch-size).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Fixed batches of this many rows.")
                          ] = None,
    max_replica_lag: Annotated[str | None, typer.Option(
        "--max-replica-lag", help="Pause while a replica's replay lag is above this (e.g. 2s); 'off' for never.")
    ] = None,
    throttle_sql: Annotated[str | None, typer.Option(
        "--throttle-sql", help="Pause between batches while this SQL expression is true; '' for none.")] = None,
    lock_timeout: LockOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a running change's pace, as gh-ost's interactive commands do; it takes effect at the next batch.

    The new settings are stored with the change, so a resume after a crash keeps them.
    """
    from agentdb import online

    changes: dict[str, Any] = {}
    if batch_seconds is not None and batch_size is not None:
        raise typer.BadParameter("give --batch-seconds (adaptive) or --batch-size (fixed), not both",
                                 param_hint="'--batch-size'")
    if batch_seconds is not None:
        defaults = online.OnlineSettings()
        changes.update(batch_seconds=batch_seconds, min_batch_size=defaults.min_batch_size,
                       max_batch_size=defaults.max_batch_size)
    if batch_size is not None:
        changes.update(batch_size=batch_size, min_batch_size=batch_size, max_batch_size=batch_size)
    if max_replica_lag is not None:
        changes["max_replica_lag"] = None if max_replica_lag.strip().lower() in ("off", "none") else duration(
            max_replica_lag, "replica lag")
    if throttle_sql is not None:
        changes["throttle_sql"] = throttle_sql.strip() or None
    if lock_timeout is not None:
        changes["lock_timeout"] = duration(lock_timeout, "lock timeout")
    if not changes:
        raise typer.BadParameter("nothing to change: give --batch-seconds, --batch-size, --max-replica-lag, "
                                 "--throttle-sql or --lock-timeout", param_hint="CHANGE")
    _show(online.tune(change, database_url=state.database_url, data_dir=state.data_dir, **changes), as_json)
    if not as_json:
        out.print("  now: " + ", ".join(f"{k} {'off' if v is None else v}" for k, v in changes.items()
                                        if k not in ("min_batch_size", "max_batch_size") or batch_size is None),
                  markup=False, soft_wrap=False)


@app.command("abort")
def abort_(change: ChangeArg, as_json: JsonOpt = False) -> None:
    """Undo a change that is not cut over yet: the table ends as it was, nothing of the change is left."""
    from agentdb import online
    _show(online.abort(change, database_url=state.database_url, data_dir=state.data_dir), as_json)


@app.command("complete")
def complete_(change: ChangeArg, as_json: JsonOpt = False) -> None:
    """Finish a change left cut over: drop (or archive) the old table."""
    from agentdb import online
    _show(online.complete(change, database_url=state.database_url, data_dir=state.data_dir), as_json)


@app.command("status")
def status_(
    all_: Annotated[bool, typer.Option("--all", help="Also the latest finished changes.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every unfinished change (interrupted ones and what they left behind flagged); --all adds finished ones."""
    from agentdb import online
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
