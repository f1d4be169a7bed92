"""``agentdb upgrade``, ``downgrade``, ``rollback``, ``current``, ``history``, ``heads``, ``migrations``,
``sql``, ``validate``, ``repair`` and ``new``: the CLI of :mod:`agentdb.migrate`."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentdb.cli._common import (
    DryRunOpt,
    JsonOpt,
    LockTimeoutOpt,
    RetriesOpt,
    RevisionArg,
    RunLockOpt,
    StatementTimeoutOpt,
    compact_table,
    duration,
    err,
    new_group,
    online_progress_bar,
    out,
    print_json,
    state,
)
from agentdb.errors import AgentdbError

if TYPE_CHECKING:
    from agentdb.runtime.dryrun import DryRunReport, LockTaken
    from agentdb.runtime.environment import RunReport

app = new_group()


def event_line(event: dict[str, Any], *, planned: bool) -> str:
    """One archive event of a step, in the future for a plan and in the past for what happened."""
    if not planned:
        from agentdb.runtime.environment import describe_event

        return describe_event(event)
    rows = f"{event.get('rows', 0):,}"
    if "archived" in event:
        return f"would archive {rows} rows of {event['archived']}"
    if "purged" in event:
        return f"would purge {rows} rows of {event['purged']}"
    if "restored" in event:
        return f"would restore {rows} archived rows into {event['restored']}"
    return ", ".join(f"{key} {value}" for key, value in event.items())


def online_plan_lines(plan: dict[str, Any]) -> list[str]:
    """A planned online change in a dry run: what it is, then its phases and their locks, within 96 columns."""
    lines = textwrap.wrap(
        f"online change {plan['kind']} of {plan['table']} (about {plan['rows_estimated']:,} rows), not run by a dry "
        "run: the real run drives it in these phases, each committing on its own", 96)
    more = False
    for phase in plan["phases"]:
        locks = list(phase.get("locks") or []) or ["no lock on application tables"]
        text = f"{phase['name']}: {locks[0]}"
        if len(locks) > 1:
            text += f"; and {len(locks) - 1} more"
            more = True
        lines += textwrap.wrap(text, 94, initial_indent="  ", subsequent_indent="    ")
    if more:
        lines.append(f"  every lock, and the SQL: agentdb online plan {plan['table']} {plan['kind']} --sql")
    return lines


def _show_report(report: RunReport, as_json: bool, verb: str) -> None:
    from agentdb.runtime.environment import describe_online

    if as_json:
        print_json({"database": report.database, "steps": [asdict(s) for s in report.steps],
                    "warnings": report.warnings})
        return
    for warning in report.warnings:
        err.print(f"warning: {warning}", markup=False)
    if not report.steps:
        out.print(f"nothing to {verb}: the database is already there")
        return
    for step in report.steps:
        out.print(step.describe(), markup=False)
        for event in step.events:
            out.print(f"  {event_line(event, planned=False)}", markup=False)
        for change in step.online:
            out.print(f"  {describe_online(change)}", markup=False)


#: PostgreSQL's table lock modes, weakest first, and what each keeps other sessions from doing.
_MODES = (
    "AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
    "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock",
)
_TABLE_KINDS = frozenset({"table", "partitioned table", "materialized view", "view"})


def _blocks(mode: str) -> str:
    rank = _MODES.index(mode) if mode in _MODES else len(_MODES) - 1
    if rank == len(_MODES) - 1:
        return "blocks reads and writes"
    if rank >= _MODES.index("ShareLock"):
        return "blocks writes"
    return "blocks neither reads nor writes"


def lock_lines(locks: Sequence[LockTaken]) -> list[str]:
    """The locks that matter: the strongest mode per table that existed before the step, and what it blocks.

    Locks on tables the step creates are summarised in one line: no other
    session can know those tables yet, so nobody can wait on them.
    """
    strongest: dict[str, str] = {}
    others = 0
    for lock in locks:
        if lock.created or lock.kind not in _TABLE_KINDS:
            others += 1
            continue
        held = strongest.get(lock.relation)
        if held is None or _MODES.index(lock.mode) > _MODES.index(held):
            strongest[lock.relation] = lock.mode
    lines = [
        f"{mode.removesuffix('Lock')} on {relation}: {_blocks(mode)}"
        for relation, mode in sorted(strongest.items(), key=lambda item: (-_MODES.index(item[1]), item[0]))
    ] or ["no lock on an existing table"]
    if others:
        lines.append(f"{others} more on new tables, indexes and sequences (nobody else can wait on them)")
    return lines


def _migration_interrupted() -> str:
    from agentdb import migrate, online
    now = migrate.current(database_url=state.database_url, data_dir=state.data_dir)
    at = ", ".join(now.revisions) or "base"
    pending = f", {len(now.pending)} pending" if now.pending else ""
    text = f"the migration that was running was rolled back; the database is at {at}{pending}"
    unfinished = [c for c in online.status(database_url=state.database_url, data_dir=state.data_dir)
                  if c.interrupted]
    for change in unfinished:
        text += (f"; online change {change.id} ({change.kind} of {change.table}) stopped at its checkpoint in "
                 f"phase {change.phase}: `agentdb upgrade` carries on, `agentdb online abort {change.id}` undoes it")
    return text


def _dry_run_interrupted() -> str:
    return "nothing was changed (a dry run rolls everything back)"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _show_dry_run(report: DryRunReport, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    for warning in report.warnings:
        err.print(f"warning: {warning}", markup=False)
    at = ", ".join(report.revisions_before) or "base"
    if not report.steps:
        out.print(f"dry run: nothing to {report.direction} (database at {at})")
        return
    out.print(f"dry run of {report.direction} from {at}: what would happen", markup=False)
    for step in report.steps:
        rewrites = f"; rewrites {', '.join(step.observed.rewritten)}" if step.observed.rewritten else ""
        out.print(
            f"{step.plan.direction} {Path(step.plan.filename).stem}: {len(step.observed.statements)} statements, "
            f"{step.observed.duration_ms:.0f} ms{rewrites}", markup=False,
        )
        for line in lock_lines(step.observed.locks):
            out.print(f"  {line}", markup=False)
        for event in step.observed.archive:
            out.print(f"  {event_line(event, planned=True)}", markup=False)
        for change in step.observed.online:
            for line in online_plan_lines(change["plan"]):
                out.print(f"  {line}", markup=False)
    out.print(f"rolled back: the database is still at {at}; nothing persisted, no history row was written")


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
    expand_only: Annotated[bool, typer.Option(
        "--expand-only", help="Leave online expand/contract changes expanded; agentdb online complete later.")
    ] = False,
) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from agentdb import migrate
    state.on_interrupt = _dry_run_interrupted if dry_run else _migration_interrupted
    if dry_run:
        _show_dry_run(migrate.dry_run(
            revision, direction="upgrade", database_url=state.database_url, data_dir=state.data_dir,
            lock_timeout=duration(lock_timeout, "lock timeout"),
            statement_timeout=duration(statement_timeout, "statement timeout"),
            lock_retries=lock_retries, run_lock_timeout=duration(run_lock_timeout, "run lock timeout"),
            ignore_checksums=ignore_checksums or None,
        ), as_json)
        return
    bar, progress = online_progress_bar()
    with bar:
        report = migrate.upgrade(
            revision, database_url=state.database_url, data_dir=state.data_dir,
            lock_timeout=duration(lock_timeout, "lock timeout"),
            statement_timeout=duration(statement_timeout, "statement timeout"),
            lock_retries=lock_retries, run_lock_timeout=duration(run_lock_timeout, "run lock timeout"),
            ignore_checksums=ignore_checksums or None, progress=progress, expand_only=expand_only or None,
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
    from agentdb import migrate
    state.on_interrupt = _dry_run_interrupted if dry_run else _migration_interrupted
    if dry_run:
        _show_dry_run(migrate.dry_run(
            revision, direction="downgrade", database_url=state.database_url, data_dir=state.data_dir,
            lock_timeout=duration(lock_timeout, "lock timeout"),
            statement_timeout=duration(statement_timeout, "statement timeout"),
            lock_retries=lock_retries, run_lock_timeout=duration(run_lock_timeout, "run lock timeout"),
        ), as_json)
        return
    bar, progress = online_progress_bar()
    with bar:
        report = migrate.downgrade(
            revision, database_url=state.database_url, data_dir=state.data_dir,
            lock_timeout=duration(lock_timeout, "lock timeout"),
            statement_timeout=duration(statement_timeout, "statement timeout"),
            lock_retries=lock_retries, run_lock_timeout=duration(run_lock_timeout, "run lock timeout"),
            progress=progress,
        )
    _show_report(report, as_json, "downgrade")


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
    from agentdb import migrate
    state.on_interrupt = _dry_run_interrupted
    plan = migrate.plan_rollback(
        revision, steps=steps, purge=purge, database_url=state.database_url, data_dir=state.data_dir,
        lock_timeout=duration(lock_timeout, "lock timeout"),
        run_lock_timeout=duration(run_lock_timeout, "run lock timeout"),
    )
    at = ", ".join(plan.revisions_before) or "base"
    if not as_json:
        if not plan.steps:
            out.print(f"nothing to roll back: the database is at {at}")
            return
        out.print(f"rollback plan (database at {at}):")
        for step in plan.steps:
            kept = [event_line(e, planned=True) for e in step.observed.archive] or ["no rows to keep"]
            out.print(f"  undo {Path(step.plan.filename).stem}: {kept[0]}", markup=False)
            for line in kept[1:]:
                out.print(f"    {line}", markup=False)
    if dry_run or not plan.steps:
        if as_json:
            print_json({"plan": plan.as_dict(), "applied": False})
        return
    if not yes:
        state.on_interrupt = lambda: "not rolled back: nothing was changed"
        if not sys.stdin.isatty():
            raise AgentdbError("rollback needs confirmation and there is no terminal to ask",
                               hint="pass --yes, or --dry-run to only see the plan")
        revisions = ", ".join(step.plan.revision for step in plan.steps)
        if not typer.confirm(f"Roll back {revisions}{' and PURGE their rows' if purge else ''}?", default=False):
            err.print("not rolled back: nothing changed")
            raise typer.Exit(1)
    state.on_interrupt = _migration_interrupted
    report = migrate.rollback(
        revision, steps=steps, purge=purge, expect_at=plan.revisions_before,
        database_url=state.database_url, data_dir=state.data_dir,
        lock_timeout=duration(lock_timeout, "lock timeout"),
        run_lock_timeout=duration(run_lock_timeout, "run lock timeout"),
    )
    if as_json:
        print_json({"plan": plan.as_dict(), "applied": True,
                     "steps": [asdict(s) for s in report.steps], "database": report.database})
        return
    _show_report(report, False, "roll back")


@app.command()
def current(as_json: JsonOpt = False) -> None:
    """Show the revision the database is at and what is pending."""
    from agentdb import migrate
    result = migrate.current(database_url=state.database_url, data_dir=state.data_dir)
    if as_json:
        print_json(result.as_dict())
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
    from agentdb import migrate
    rows = migrate.history(database_url=state.database_url, data_dir=state.data_dir, limit=limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no migration has run on this database yet")
        return
    table = compact_table("id", "revision", "direction", "finished", "ms", "ok", "by")
    failures = []
    for row in rows:
        table.add_row(
            str(row["id"]), row["revision"], row["direction"], row["finished_at"].strftime("%Y-%m-%d %H:%M:%S"),
            f"{row['duration_ms']:.0f}", "yes" if row["success"] else "[red]no[/red]",
            f"{row['os_user'] or '?'}@{row['host'] or '?'} as {row['db_user']}",
        )
        if row["error"]:
            failures.append(f"#{row['id']} {row['direction']} {row['revision']}: {row['error']}")
    out.print(table)
    for failure in failures:
        out.print(failure, markup=False, soft_wrap=False)


@app.command()
def heads(as_json: JsonOpt = False) -> None:
    """Show the head revision(s) of the migration history."""
    from agentdb import migrate
    rows = migrate.heads()
    if as_json:
        print_json(rows)
        return
    for row in rows:
        out.print(f"{Path(row['path']).stem} (head)", markup=False)


@app.command("migrations")
def migrations_(as_json: JsonOpt = False) -> None:
    """List every migration: applied, pending or changed since applied, when, by whom, checksum (--json: all)."""
    from agentdb import migrate
    rows = migrate.list_migrations(database_url=state.database_url, data_dir=state.data_dir)
    if as_json:
        print_json([row.as_dict() for row in rows])
        return
    table = compact_table("migration", "state", "applied", "by", "sha256")
    for row in rows:
        state_text = "applied" if row.state == "applied" else "[yellow]pending[/yellow]"
        if row.changed:
            state_text = "[red]changed[/red]"  # applied, and the file changed since (agentdb validate)
        by = f"{row.applied_by or '?'} as {row.db_user}" if row.db_user else ""
        table.add_row(
            row.name, state_text, row.applied_at.strftime("%Y-%m-%d %H:%M") if row.applied_at else "", by,
            row.checksum[:12],
        )
    out.print(table)


@app.command("sql")
def sql_(
    revision_range: Annotated[str, typer.Argument(metavar="FROM:TO", help="e.g. base:head, 001:003, 003:001.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
    lock_timeout: LockTimeoutOpt = None,
    statement_timeout: StatementTimeoutOpt = None,
) -> None:
    """Print the SQL of migrations FROM:TO without touching a database (offline mode).

    An online change (007) is shown phase by phase when a database is named by
    --database-url or DATABASE_URL: its catalogue is read to design it.
    """
    from agentdb import migrate
    text = migrate.sql(
        revision_range, lock_timeout=duration(lock_timeout, "lock timeout"),
        statement_timeout=duration(statement_timeout, "statement timeout"),
        database_url=state.database_url or os.environ.get("DATABASE_URL") or None,
    )
    if output is not None:
        output.write_text(text)
    else:
        sys.stdout.write(text)


@app.command()
def validate(as_json: JsonOpt = False) -> None:
    """Check applied migrations against their files (checksums); exit 5 when one changed or is gone."""
    from agentdb import migrate
    issues = migrate.validate(database_url=state.database_url, data_dir=state.data_dir)
    fatal = [i for i in issues if i.fatal]
    if as_json:
        print_json({"valid": not fatal, "issues": [{**asdict(i), "fatal": i.fatal} for i in issues]})
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
    from agentdb import migrate
    repaired = migrate.repair(database_url=state.database_url, data_dir=state.data_dir)
    if as_json:
        print_json({"repaired": repaired})
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
    from agentdb import migrate
    path = migrate.new_migration(message, autogenerate=autogenerate, database_url=state.database_url)
    out.print(f"created {path}")


