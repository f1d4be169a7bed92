"""``agentdb import`` and ``agentdb export``: the CLI of :mod:`agentdb.bulk`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentdb.cli._common import JsonOpt, compact_table, err, new_group, out, print_json, state

app = new_group()

_SHOWN_REJECTS = 20


def _bar(enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TextColumn("{task.fields[rows]} rows"), TimeRemainingColumn(), console=err, transient=True,
                    disable=not enabled)


def _print_import(report: Any) -> None:
    out.print(report.summary(), markup=False)
    if report.rejects:
        table = compact_table("line", "column", "sqlstate", "reason")
        for row in report.rejects[:_SHOWN_REJECTS]:
            reason = row.reason if len(row.reason) <= 60 else row.reason[:57] + "..."
            table.add_row(str(row.line), (row.column or "")[:20], row.sqlstate or "", reason)
        out.print(table)
        if len(report.rejects) > _SHOWN_REJECTS:
            out.print(f"... and {len(report.rejects) - _SHOWN_REJECTS:,} more (--json lists every one)")
    if report.rejects_path:
        out.print(f"rejected lines: {report.rejects_path}", markup=False)
    for reason, count in report.skipped.items():
        out.print(f"skipped {count:,}: {reason}", markup=False)
    if report.partitions_created:
        out.print(f"partitions created: {', '.join(report.partitions_created)}", markup=False)
    if report.partitions_needed:
        out.print(f"partitions to create: {', '.join(report.partitions_needed)}", markup=False)


@app.command("import")
def import_(
    table: Annotated[str, typer.Argument(help="Table to load (table or schema.table).")],
    file: Annotated[str, typer.Argument(help="CSV, TSV or JSON Lines file (.gz, .zst); - for stdin.")],
    format: Annotated[str | None, typer.Option("--format", help="csv, tsv or jsonl (default: extension).")] = None,
    delimiter: Annotated[str | None, typer.Option("--delimiter", help="Field delimiter (default , or tab).")] = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help="File encoding (default utf-8).")] = None,
    max_rejects: Annotated[str, typer.Option("--max-rejects", help="Load the good rows if at most N or N% are bad "
                                             "(default 0: all or nothing).")] = "0",
    on_conflict: Annotated[str, typer.Option("--on-conflict", help="Existing key: error, skip or update.")] = "error",
    batch_rows: Annotated[int | None, typer.Option("--batch-rows", min=1, help="Commit every N rows; resumable.")
                          ] = None,
    force: Annotated[bool, typer.Option("--force", help="Import a file that was already imported.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and check everything, load nothing.")] = False,
    rejects: Annotated[Path | None, typer.Option("--rejects", help="Rejects file (default: FILE.rejects.EXT).")
                       ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Load a file into a table with COPY: every bad line reported, nothing loaded unless allowed."""
    from agentdb.bulk import bulk_import
    from agentdb.errors import BulkError

    state.on_interrupt = lambda: "the transaction in progress was rolled back; committed batches stay (resumable)"
    show = not as_json and err.is_terminal
    try:
        with _bar(show) as bar:
            task = bar.add_task("import", total=None, rows=0)

            def progress(p: Any) -> None:
                bar.update(task, completed=p.bytes_done, total=p.bytes_total or None, rows=f"{p.rows:,}",
                           description=p.phase)

            report = bulk_import(table, file, database_url=state.database_url, data_dir=state.data_dir,
                                 format=format, delimiter=delimiter, encoding=encoding, max_rejects=max_rejects,
                                 on_conflict=on_conflict, batch_rows=batch_rows, force=force, dry_run=dry_run,
                                 rejects=rejects, progress=progress if show else None)
    except BulkError as exc:
        if exc.report is not None:
            if as_json:
                print_json(exc.report.as_dict())  # type: ignore[attr-defined]
            else:
                _print_import(exc.report)
        raise
    if as_json:
        print_json(report.as_dict())
    else:
        _print_import(report)


@app.command("export")
def export(
    table: Annotated[str, typer.Argument(help="Table to export (table or schema.table).")],
    file: Annotated[str, typer.Argument(help="Output .csv, .tsv, .jsonl (.gz, .zst); - for stdout.")],
    columns: Annotated[str | None, typer.Option("--columns", help="Comma-separated columns (default all).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Rows with TIME-COLUMN >= this ISO time.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Rows with TIME-COLUMN < this ISO time.")] = None,
    time_column: Annotated[str | None, typer.Option("--time-column", help="Default created_at.")] = None,
    format: Annotated[str | None, typer.Option("--format", help="csv, tsv or jsonl (default: extension).")] = None,
    delimiter: Annotated[str | None, typer.Option("--delimiter", help="Field delimiter.")] = None,
    pseudonymize: Annotated[bool, typer.Option("--pseudonymize", help="Personal columns as keyed pseudonyms "
                                               "(key: AGENTDB_PSEUDONYM_KEY or --key-file).")] = False,
    key_file: Annotated[Path | None, typer.Option("--key-file", help="File holding the pseudonym key.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a table to a file from one consistent snapshot (REPEATABLE READ)."""
    from agentdb.bulk import bulk_export
    from agentdb.errors import BulkInputInvalid

    key: bytes | None = None
    if key_file is not None:
        try:
            key = key_file.read_bytes().strip()
        except OSError:
            raise BulkInputInvalid(table, "--key-file", f"{key_file.name!r} cannot be read") from None
    to_stdout = file == "-"
    show = not as_json and err.is_terminal and not to_stdout
    with _bar(show) as bar:
        task = bar.add_task("export", total=None, rows=0)

        def progress(p: Any) -> None:
            bar.update(task, completed=p.bytes, rows=f"{p.rows:,}")

        report = bulk_export(table, file, database_url=state.database_url, data_dir=state.data_dir, columns=columns,
                             since=since, until=until, time_column=time_column, format=format, delimiter=delimiter,
                             pseudonymize_personal=pseudonymize, pseudonym_key=key,
                             progress=progress if show else None)
    console = err if to_stdout else out
    if as_json:
        if to_stdout:
            import json

            print(json.dumps(report.as_dict(), default=str), file=sys.stderr)
        else:
            print_json(report.as_dict())
    else:
        console.print(report.summary(), markup=False)
