"""``agentdb health``: the CLI of :mod:`agentdb.health`.

Exit codes are those of Nagios plugins, so the command drops into any monitoring
that runs them: 0 ok, 1 warning, 2 critical, 3 unknown (a check that could not
judge, or a usage error).  ``--format prometheus`` prints the text exposition
for a textfile collector or a scrape wrapper; ``--html FILE`` writes one
self-contained page.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from agentdb.cli._common import JsonOpt, duration, json_default, new_group, out, print_json, state

app = new_group()

_STYLE = {"ok": "green", "warning": "yellow", "critical": "bold red", "unknown": "magenta"}


def _split(values: list[str] | None) -> list[str]:
    """``--only a,b --only c`` -> ``[a, b, c]``."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _thresholds(values: list[str] | None) -> dict[str, str]:
    from agentdb.errors import HealthOptionInvalid

    parsed = {}
    for value in values or []:
        key, equals, setting = value.partition("=")
        if not equals or not key.strip() or not setting.strip():
            raise HealthOptionInvalid(f"threshold {value!r} is not CHECK_ID.NAME=VALUE")
        parsed[key.strip()] = setting.strip()
    return parsed


def _list_checks() -> None:
    from agentdb.health import list_checks

    table = Table("check", "title", "thresholds (override with -t CHECK.NAME=VALUE)", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False)
    for item in list_checks():
        params = ", ".join(f"{name}={param.default:g} {param.unit}" for name, param in item.params.items())
        table.add_row(item.id, item.title + (" (--deep)" if item.deep else ""), params)
    out.print(table)


def _evidence_line(entry: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, default=json_default) if isinstance(v, list | dict) else v}"
                     for k, v in entry.items())


def _print_report(report: Any) -> None:
    width = min(out.width or 100, 100)
    counts = report.counts()
    out.print(f"agentdb health: [{_STYLE[report.status.label]}]{report.status.label}[/] · "
              f"{len(report.results)} checks in {report.seconds:.2f} s · PostgreSQL {report.server_version}")
    out.print(" · ".join(f"{counts[s]} {s}" for s in ("critical", "warning", "unknown", "ok")), markup=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, width=width)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("finding", overflow="fold", ratio=1)
    for result in report.sorted():
        table.add_row(f"[{_STYLE[result.status.label]}]{result.status.label}[/]", result.id, result.message)
    out.print(table)
    problems = [r for r in report.sorted() if r.status.label != "ok"]
    for result in problems:
        out.print()
        out.print(f"[{_STYLE[result.status.label]}]{result.status.label}[/] {result.id}: {result.title}")
        lines = [result.message] + [_evidence_line(e) for e in result.evidence[:5]]
        if result.evidence_total > 5:
            lines.append(f"... {result.evidence_total - 5} more (--json or --html shows up to 20)")
        for label, text in [("", line) for line in lines] + [("remedy: ", result.remediation),
                                                              ("lock: ", result.lock)]:
            if text:
                out.print(textwrap.fill(label + text, width=width, initial_indent="  ", subsequent_indent="    "),
                          markup=False, highlight=False)
    if report.previous_run_at is not None:
        changed = report.changed
        out.print()
        out.print(f"since the run recorded {report.previous_run_at:%Y-%m-%d %H:%M:%S %Z}: "
                  + (", ".join(f"{r.id} {r.previous.label} -> {r.status.label}" for r in changed)
                     if changed else "no status changed"), markup=False)


@app.command("health")
def health(
    as_json: JsonOpt = False,
    output_format: Annotated[
        str, typer.Option("--format", help="table (default), json or prometheus.", show_default=False)
    ] = "table",
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only these check ids or groups.")] = None,
    skip: Annotated[list[str] | None, typer.Option("--skip", help="Skip these check ids or groups.")] = None,
    threshold: Annotated[
        list[str] | None, typer.Option("--threshold", "-t", help="Override: CHECK_ID.NAME=VALUE (5min, 1GB, 90%).")
    ] = None,
    deep: Annotated[bool, typer.Option("--deep", help="Also verify indexes and heaps with amcheck.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")] = None,
    record: Annotated[
        bool, typer.Option("--record", help="Store the statuses in agentdb.health_runs (compared next time).")
    ] = False,
    statement_timeout: Annotated[
        str, typer.Option("--statement-timeout", help="Per statement (default 5s).", show_default=False)
    ] = "5s",
    lock_timeout: Annotated[
        str, typer.Option("--lock-timeout", help="Per statement (default 500ms).", show_default=False)
    ] = "500ms",
    list_only: Annotated[bool, typer.Option("--list", help="List the checks and thresholds; run nothing.")] = False,
) -> None:
    """Health and integrity checks; exit 0 ok, 1 warning, 2 critical, 3 unknown (as Nagios plugins)."""
    from agentdb.errors import HealthOptionInvalid
    from agentdb.health import check_health, render_html, render_prometheus

    if list_only:
        _list_checks()
        return
    chosen = "json" if as_json else output_format
    if chosen not in ("table", "json", "prometheus"):
        raise HealthOptionInvalid(f"unknown format {output_format!r}", hint="table, json or prometheus")
    state.on_interrupt = lambda: "nothing was changed: the health check only reads"
    report = check_health(
        database_url=state.database_url, data_dir=state.data_dir, only=_split(only), skip=_split(skip),
        thresholds=_thresholds(threshold), deep=deep, record=record,
        statement_timeout=duration(statement_timeout, "statement timeout") or 5.0,
        lock_timeout=duration(lock_timeout, "lock timeout") or 0.5,
    )
    if html is not None:
        html.write_text(render_html(report), encoding="utf-8")
    if chosen == "json":
        print_json(report.as_dict())
    elif chosen == "prometheus":
        out.print(render_prometheus(report), end="", markup=False, highlight=False, soft_wrap=True)
    else:
        _print_report(report)
        if html is not None:
            out.print(f"HTML report: {html}", markup=False)
    if report.exit_code:
        raise typer.Exit(report.exit_code)
