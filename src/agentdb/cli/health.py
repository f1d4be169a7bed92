"""``agentdb health``: the CLI of :mod:`agentdb.health`.

Exit codes are those of Nagios plugins, so the command drops into any monitoring
that runs them: 0 ok, 1 warning, 2 critical, 3 unknown (a check that could not
judge, or a usage error).  ``--format prometheus`` prints the text exposition
for a textfile collector or a scrape wrapper; ``--html FILE`` writes one
self-contained page.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperCommand

from agentdb.cli._common import JsonOpt, duration, json_default, new_group, out, print_json, state

app = new_group()


class _NagiosCommand(TyperCommand):
    """A usage error exits 3 (UNKNOWN), as Nagios plugins answer one: click's 2 would read as CRITICAL."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as exc:
            if getattr(exc, "exit_code", None) == 2:
                exc.exit_code = 3
            raise


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


def _format_param(value: float, unit: str) -> str:
    """A threshold as an override would be written: ``10MB``, ``5min``, ``80%``, ``1000``."""
    if unit == "bytes":
        for size, suffix in ((1024**4, "TB"), (1024**3, "GB"), (1024**2, "MB"), (1024, "kB")):
            if value >= size and value % size == 0:
                return f"{value / size:g}{suffix}"
        return f"{value:g}B"
    if unit == "seconds":
        for size, suffix in ((3600, "h"), (60, "min")):
            if value >= size and value % size == 0:
                return f"{value / size:g}{suffix}"
        return f"{value:g}s"
    if unit == "ratio":
        return f"{value * 100:g}%"
    return f"{value:.0f}" if value == int(value) else f"{value:g}"


def _list_checks() -> None:
    """One line per check (id and title), its thresholds on the next, as ``-t`` takes them."""
    from agentdb.health import list_checks

    checks = list_checks()
    id_width = max(len(c.id) for c in checks)
    out.print("check ids and titles; thresholds below each (override with -t CHECK_ID.NAME=VALUE)",
              markup=False, highlight=False)
    for item in checks:
        out.print(f"{item.id:<{id_width}}  {item.title}", markup=False, highlight=False)
        if item.params:
            params = ", ".join(f"{name}={_format_param(p.default, p.unit)}" for name, p in item.params.items())
            for line in textwrap.wrap(params, width=96):
                out.print("    " + line, markup=False, highlight=False)


def _evidence_line(entry: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, default=json_default) if isinstance(v, list | dict) else v}"
                     for k, v in entry.items())


def _finding_lines(message: str, width: int) -> list[str]:
    """A finding in ``width`` columns: one line when it fits, else continuation lines indented by two."""
    first, *rest = textwrap.wrap(message, width=width, break_long_words=True) or [""]
    return [first, *textwrap.wrap(" ".join(rest), width=width - 2, break_long_words=True)] if rest else [first]


_CLAUSE = re.compile(r": |; | \(")


def _headline(message: str, width: int) -> str:
    """The message, or when it does not fit, its longest leading clause that does (up to a ``: ``, ``; ``
    or `` (``), else its first clause: the rest explains the finding, and a problem's whole message is
    printed under the table anyway."""
    if len(message) <= width:
        return message
    cuts = [m.start() for m in _CLAUSE.finditer(message)]
    fitting = [c for c in cuts if c <= width]
    return message[:fitting[-1]] if fitting else message[:cuts[0]] if cuts else message


def _print_rows(results: list[Any], width: int) -> None:
    """One row per check: status, id, and the finding (of an ok check, its headline); one too long for its
    column continues on the next lines, indented two more than the column: no line is wider than ``width``."""
    id_width = max([len("check")] + [len(r.id) for r in results])
    lead = 8 + 2 + id_width + 2
    finding_width = max(width - lead, 20)
    out.print(f"{'status':<8}  {'check':<{id_width}}  finding", markup=False, highlight=False)
    out.print("─" * min(width, lead + finding_width), markup=False, highlight=False)
    for result in results:
        label = result.status.label
        message = result.message if label != "ok" else _headline(result.message, finding_width)
        first, *more = _finding_lines(message, finding_width)
        out.print(f"[{_STYLE[label]}]{label:<8}[/]  {escape(result.id):<{id_width}}  {escape(first)}",
                  highlight=False)
        for line in more:
            out.print(" " * (lead + 2) + line, markup=False, highlight=False)


def _print_report(report: Any) -> None:
    width = min(out.width or 100, 100)
    counts = report.counts()
    out.print(f"agentdb health: [{_STYLE[report.status.label]}]{report.status.label}[/] · "
              f"{len(report.results)} checks in {report.seconds:.2f} s · PostgreSQL {report.server_version}")
    out.print(" · ".join(f"{counts[s]} {s}" for s in ("critical", "warning", "unknown", "ok")), markup=False)
    _print_rows(report.sorted(), width)
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


@app.command("health", cls=_NagiosCommand)
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
