"""The ``agentdb`` command line: a thin Typer layer over :mod:`agentdb.commands`.

Read commands take ``--json`` for machines; people get rich tables.  An error
is one line on stderr and a non-zero exit (the code is the error's
``exit_code``); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from dataclasses import asdict
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from agentdb import commands, embedded
from agentdb.errors import AgentdbError
from agentdb.runtime.dryrun import DryRunReport
from agentdb.runtime.environment import RunReport
from agentdb.runtime.settings import parse_duration

__all__ = ["app", "main"]

app = typer.Typer(
    name="agentdb",
    help="PostgreSQL schema, migrations and data operations of the Spotify AI Agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
embedded_app = typer.Typer(help="The embedded PostgreSQL server (used when DATABASE_URL is not set).",
                           no_args_is_help=True)
app.add_typer(embedded_app, name="embedded")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class _State:
    database_url: str | None = None
    data_dir: Path | None = None
    debug: bool = False


state = _State()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
RevisionArg = Annotated[str, typer.Argument(help="Revision id, head, base, +N or -N.")]
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


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID | Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=_json_default))


def _duration(value: str | None, name: str) -> float | None:
    return None if value is None else parse_duration(value, name)


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


def _show_report(report: RunReport, as_json: bool, verb: str) -> None:
    if as_json:
        _print_json({"database": report.database, "steps": [asdict(s) for s in report.steps],
                     "warnings": report.warnings})
        return
    for warning in report.warnings:
        err.print(f"warning: {warning}")
    if not report.steps:
        out.print(f"nothing to {verb}: the database is already there")
        return
    for step in report.steps:
        out.print(f"{step.direction:<9} {step.revision}  {step.description}  [dim]({step.duration_ms:.0f} ms)[/dim]")


def _show_dry_run(report: DryRunReport, as_json: bool) -> None:
    if as_json:
        _print_json(report.as_dict())
        return
    for warning in report.warnings:
        err.print(f"warning: {warning}")
    at = ", ".join(report.revisions_before) or "base"
    if not report.steps:
        out.print(f"dry run: nothing to {report.direction} (database at {at})")
        return
    table = Table("revision", "statements", "ms", "locks taken", "rewrites", title=f"dry run: {report.direction}")
    for step in report.steps:
        locks = [
            f"{lock.mode} {lock.relation}" + (" (new)" if lock.created else " (dropped)" if lock.dropped else "")
            for lock in step.observed.locks if lock.kind in {"table", "partitioned table", "materialized view"}
        ]
        others = sum(1 for lock in step.observed.locks if lock.kind not in {"table", "partitioned table",
                                                                              "materialized view"})
        if others:
            locks.append(f"[dim]+{others} on indexes/sequences[/dim]")
        table.add_row(
            f"{step.plan.revision} {step.plan.description}", str(len(step.observed.statements)),
            f"{step.observed.duration_ms:.0f}", "\n".join(locks) or "none",
            ", ".join(step.observed.rewritten) or "none",
        )
    out.print(table)
    out.print(f"rolled back: the database is still at {at}; no history row was written")


@app.command(context_settings={"ignore_unknown_options": True})
def upgrade(
    revision: RevisionArg = "head",
    lock_timeout: LockTimeoutOpt = None,
    statement_timeout: StatementTimeoutOpt = None,
    lock_retries: RetriesOpt = None,
    run_lock_timeout: RunLockOpt = None,
    ignore_checksums: Annotated[
        bool, typer.Option("--ignore-checksums", help="Run even if applied migration files have changed.")
    ] = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply migrations up to REVISION (default: head)."""
    if dry_run:
        _show_dry_run(commands.dry_run(
            revision, direction="upgrade", database_url=state.database_url, data_dir=state.data_dir,
            lock_timeout=_duration(lock_timeout, "lock timeout"),
            statement_timeout=_duration(statement_timeout, "statement timeout"),
            lock_retries=lock_retries, run_lock_timeout=_duration(run_lock_timeout, "run lock timeout"),
            ignore_checksums=ignore_checksums or None,
        ), as_json)
        return
    report = commands.upgrade(
        revision, database_url=state.database_url, data_dir=state.data_dir,
        lock_timeout=_duration(lock_timeout, "lock timeout"),
        statement_timeout=_duration(statement_timeout, "statement timeout"),
        lock_retries=lock_retries, run_lock_timeout=_duration(run_lock_timeout, "run lock timeout"),
        ignore_checksums=ignore_checksums or None,
    )
    _show_report(report, as_json, "upgrade")


@app.command(context_settings={"ignore_unknown_options": True})
def downgrade(
    revision: RevisionArg,
    lock_timeout: LockTimeoutOpt = None,
    statement_timeout: StatementTimeoutOpt = None,
    lock_retries: RetriesOpt = None,
    run_lock_timeout: RunLockOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Roll back to REVISION (an id, -N, or base)."""
    if dry_run:
        _show_dry_run(commands.dry_run(
            revision, direction="downgrade", database_url=state.database_url, data_dir=state.data_dir,
            lock_timeout=_duration(lock_timeout, "lock timeout"),
            statement_timeout=_duration(statement_timeout, "statement timeout"),
            lock_retries=lock_retries, run_lock_timeout=_duration(run_lock_timeout, "run lock timeout"),
        ), as_json)
        return
    report = commands.downgrade(
        revision, database_url=state.database_url, data_dir=state.data_dir,
        lock_timeout=_duration(lock_timeout, "lock timeout"),
        statement_timeout=_duration(statement_timeout, "statement timeout"),
        lock_retries=lock_retries, run_lock_timeout=_duration(run_lock_timeout, "run lock timeout"),
    )
    _show_report(report, as_json, "downgrade")


def _archive_summary(events: tuple[dict[str, Any], ...]) -> str:
    parts = []
    for event in events:
        if "archived" in event:
            parts.append(f"archive {event['rows']} rows of {event['archived']}")
        elif "purged" in event:
            parts.append(f"[red]purge {event['rows']} rows of {event['purged']}[/red]")
        elif "restored" in event:
            parts.append(f"restore {event['rows']} rows into {event['restored']}")
    return "\n".join(parts) or "no rows to keep"


@app.command(context_settings={"ignore_unknown_options": True})
def rollback(
    revision: Annotated[
        str | None, typer.Argument(help="Roll back to this revision (id or base); default: one migration.")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", "-n", min=1, help="Roll back this many migrations.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    purge: Annotated[
        bool, typer.Option("--purge", help="Drop the rows of dropped tables for real instead of archiving them.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would happen.")] = False,
    lock_timeout: LockTimeoutOpt = None,
    run_lock_timeout: RunLockOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Roll back migrations without losing data: shows the plan, asks, then archives and downgrades.

    The plan is a dry run on the real database (rolled back): which migrations
    are undone and which tables' rows are archived (or, with --purge, deleted).
    Archived rows come back when the migrations are applied again.
    """
    plan = commands.plan_rollback(
        revision, steps=steps, purge=purge, database_url=state.database_url, data_dir=state.data_dir,
        lock_timeout=_duration(lock_timeout, "lock timeout"),
        run_lock_timeout=_duration(run_lock_timeout, "run lock timeout"),
    )
    at = ", ".join(plan.revisions_before) or "base"
    if not as_json:
        if not plan.steps:
            out.print(f"nothing to roll back (database at {at})")
            return
        table = Table("undo", "what happens to the data", "statements", title=f"rollback plan (database at {at})")
        for step in plan.steps:
            table.add_row(f"{step.plan.revision} {step.plan.description}", _archive_summary(step.observed.archive),
                          str(len(step.observed.statements)))
        out.print(table)
    if dry_run or not plan.steps:
        if as_json:
            _print_json({"plan": plan.as_dict(), "applied": False})
        return
    if not yes:
        if not sys.stdin.isatty():
            raise AgentdbError("rollback needs confirmation and there is no terminal to ask",
                               hint="pass --yes, or --dry-run to only see the plan")
        revisions = ", ".join(step.plan.revision for step in plan.steps)
        if not typer.confirm(f"Roll back {revisions}{' and PURGE their rows' if purge else ''}?", default=False):
            err.print("not rolled back: nothing changed")
            raise typer.Exit(1)
    report = commands.rollback(
        revision, steps=steps, purge=purge, expect_at=plan.revisions_before,
        database_url=state.database_url, data_dir=state.data_dir,
        lock_timeout=_duration(lock_timeout, "lock timeout"),
        run_lock_timeout=_duration(run_lock_timeout, "run lock timeout"),
    )
    if as_json:
        _print_json({"plan": plan.as_dict(), "applied": True,
                     "steps": [asdict(s) for s in report.steps], "database": report.database})
        return
    _show_report(report, False, "roll back")


@app.command()
def current(as_json: JsonOpt = False) -> None:
    """Show the revision the database is at and what is pending."""
    result = commands.current(database_url=state.database_url, data_dir=state.data_dir)
    if as_json:
        _print_json(result.as_dict())
        return
    at = ", ".join(result.revisions) or "base (empty)"
    status = "up to date" if result.up_to_date else f"{len(result.pending)} pending: {', '.join(result.pending)}"
    out.print(f"{result.database}\nrevision {at} ({status})")


@app.command()
def history(
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many runs.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Show the run history: every migration applied or rolled back, failures included."""
    rows = commands.history(database_url=state.database_url, data_dir=state.data_dir, limit=limit)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no migration has run on this database yet")
        return
    table = Table("id", "revision", "direction", "finished", "ms", "ok", "by", "error")
    for row in rows:
        table.add_row(
            str(row["id"]), row["revision"], row["direction"], row["finished_at"].strftime("%Y-%m-%d %H:%M:%S"),
            f"{row['duration_ms']:.0f}", "yes" if row["success"] else "[red]no[/red]",
            f"{row['os_user'] or '?'}@{row['host'] or '?'} as {row['db_user']}", row["error"] or "",
        )
    out.print(table)


@app.command()
def heads(as_json: JsonOpt = False) -> None:
    """Show the head revision(s) of the migration history."""
    rows = commands.heads()
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        out.print(f"{row['revision']} (head)  {row['description']}")


@app.command("migrations")
def migrations_(as_json: JsonOpt = False) -> None:
    """List every migration: revision, name, what it does, applied or pending, checksum, when and by whom."""
    rows = commands.list_migrations(database_url=state.database_url, data_dir=state.data_dir)
    if as_json:
        _print_json([row.as_dict() for row in rows])
        return
    table = Table("revision", "name", "description", "state", "sha256", "applied", "by")
    for row in rows:
        state_text = "applied" if row.state == "applied" else "[yellow]pending[/yellow]"
        if row.changed:
            state_text += " [red](file changed)[/red]"
        by = f"{row.applied_by or '?'} as {row.db_user}" if row.db_user else ""
        table.add_row(
            row.revision, row.name, row.description, state_text, row.checksum[:12],
            row.applied_at.strftime("%Y-%m-%d %H:%M:%S") if row.applied_at else "", by,
        )
    out.print(table)


@app.command("check")
def check_(
    no_squawk: Annotated[bool, typer.Option("--no-squawk", help="Skip the squawk SQL linter.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Governance checks over the migration files (no database): names, ids, head, docs, downgrades, squawk."""

    report = commands.check(squawk=not no_squawk)
    if as_json:
        _print_json(report.as_dict())
    else:
        for violation in report.violations:
            err.print(f"error: {violation}", markup=False)
        for exemption in report.exemptions:
            out.print(f"note: {exemption}", markup=False)
        for skipped in report.skipped:
            out.print(f"note: {skipped}", markup=False)
        if report.ok:
            out.print(f"ok: {len(report.checked)} migrations pass every check")
        else:
            err.print(f"{len(report.violations)} violation(s) in {len(report.checked)} migrations")
    if not report.ok:
        raise typer.Exit(7)


@app.command("sql")
def sql_(
    revision_range: Annotated[str, typer.Argument(metavar="FROM:TO", help="e.g. base:head, 001:003, 003:001.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
    lock_timeout: LockTimeoutOpt = None,
    statement_timeout: StatementTimeoutOpt = None,
) -> None:
    """Print the SQL of migrations FROM:TO without touching a database (offline mode)."""
    text = commands.sql(
        revision_range, lock_timeout=_duration(lock_timeout, "lock timeout"),
        statement_timeout=_duration(statement_timeout, "statement timeout"),
    )
    if output is not None:
        output.write_text(text)
    else:
        sys.stdout.write(text)


@app.command()
def validate(as_json: JsonOpt = False) -> None:
    """Check applied migrations against their files (checksums); exit 5 when one changed or is gone."""
    issues = commands.validate(database_url=state.database_url, data_dir=state.data_dir)
    fatal = [i for i in issues if i.fatal]
    if as_json:
        _print_json({"valid": not fatal, "issues": [{**asdict(i), "fatal": i.fatal} for i in issues]})
    else:
        for issue in issues:
            (err if issue.fatal else out).print(f"{'error' if issue.fatal else 'note'}: {issue.message}")
        if not fatal:
            out.print("valid: every applied migration matches its file")
    if fatal:
        raise typer.Exit(5)


@app.command()
def repair(as_json: JsonOpt = False) -> None:
    """Accept changed files of applied migrations by recording their new checksums (audited)."""
    repaired = commands.repair(database_url=state.database_url, data_dir=state.data_dir)
    if as_json:
        _print_json({"repaired": repaired})
    else:
        out.print(f"recorded new checksums for: {', '.join(repaired)}" if repaired else "nothing to repair")


@app.command("new")
def new(
    message: Annotated[str, typer.Argument(help="What the migration does, e.g. 'add playlists table'.")],
    autogenerate: Annotated[
        bool, typer.Option("--autogenerate", help="Fill it from the difference between the models and the database.")
    ] = False,
) -> None:
    """Write versions/NNN_slug.py with the next revision id, from the project's template."""
    path = commands.new_migration(message, autogenerate=autogenerate, database_url=state.database_url)
    out.print(f"created {path}")


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

    plan = demo.plan_demo(scale, users=users, analytics_rows=analytics_rows, seed=seed)
    if as_json:
        report = demo.seed_demo(scale, database_url=state.database_url, data_dir=state.data_dir, seed=seed,
                                users=users, analytics_rows=analytics_rows, append=append)
        _print_json(report.as_dict())
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
    out.print(f"{report.total_rows:,} rows in {report.seconds:.1f} s, one transaction: {report.database}")


@embedded_app.command("status")
def embedded_status(as_json: JsonOpt = False) -> None:
    """Show whether the embedded server runs, where, and its URL."""
    result = embedded.status(state.data_dir)
    if as_json:
        _print_json(result.as_dict())
        return
    if not result.initialized:
        out.print(f"no embedded server in {result.data_dir} (one is created on first use)")
    elif result.running:
        out.print(f"running: PostgreSQL {result.version}, pid {result.pid}, data {result.data_dir}\nurl {result.url}")
    else:
        out.print(f"stopped: PostgreSQL {result.version}, data {result.data_dir}")


@embedded_app.command("stop")
def embedded_stop() -> None:
    """Stop the embedded server (it starts again on the next command that needs it)."""
    stopped = embedded.stop(state.data_dir)
    out.print("stopped" if stopped else "not running")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one line per error, the traceback only with ``--debug``."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="agentdb")
    except AgentdbError as exc:
        if debug:
            traceback.print_exc()
        err.print(f"error: {exc}", markup=False)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(130) from None
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        err.print(f"error: unexpected {type(exc).__name__}: {first} (run with --debug for details)", markup=False)
        raise SystemExit(1) from None
