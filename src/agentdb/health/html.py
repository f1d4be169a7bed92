"""The report as one self-contained HTML page: no script, no external file, charts as inline SVG.

For the people who open pghero today: the results problems first, each with
its evidence, remedy and the lock that remedy takes, and a few charts of the
values people would rather see than read (how full the connection slots and
the transaction-ID space are, which tables carry dead tuples, where the time
of the run went).  Every text from the database is escaped.
"""

from __future__ import annotations

import html
import json
from typing import Any

from agentdb.health.model import CheckResult, HealthReport, Status

__all__ = ["render_html"]

_COLOURS = {Status.OK: "#2e7d32", Status.WARNING: "#ef6c00", Status.CRITICAL: "#c62828", Status.UNKNOWN: "#6d6d6d"}
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:2em}
.meta{color:#666} .badge{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-weight:600}
table{border-collapse:collapse;width:100%} td,th{padding:5px 8px;border-bottom:1px solid #e4e4e4;text-align:left;
vertical-align:top} th{background:#f6f6f6} details{margin:.2em 0} pre{white-space:pre-wrap;margin:0;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:24px} .chart{flex:1 1 320px} .chart h3{font-size:1em;margin:.5em 0}
small{color:#666}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(status: Status) -> str:
    return f'<span class="badge" style="background:{_COLOURS[status]}">{status.label}</span>'


def _bars(title: str, items: list[tuple[str, float]], *, limit: float | None = None, fmt: str = "{:.0%}",
          warn: float | None = None) -> str:
    """A horizontal bar chart: one bar per (label, value), scaled to ``limit`` or the largest value."""
    if not items:
        return ""
    top = limit or max((v for _, v in items), default=1.0) or 1.0
    row, width, label_w = 22, 460, 170
    parts = [f'<svg width="{width + label_w + 70}" height="{row * len(items) + 10}" role="img" '
             f'aria-label="{_esc(title)}">']
    for i, (label, value) in enumerate(items):
        y = i * row + 4
        w = max(1.0, min(value / top, 1.0) * width)
        colour = "#c62828" if warn is not None and value >= warn else "#1565c0"
        shown = label if len(label) <= 26 else label[:25] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" font-size="12">{_esc(shown)}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{row - 6}" fill="{colour}"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 14}" font-size="12">{_esc(fmt.format(value))}</text>')
    if warn is not None and limit:
        x = label_w + min(warn / top, 1.0) * width
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{row * len(items) + 6}" stroke="#ef6c00" '
                     'stroke-dasharray="4 3"/>')
    parts.append("</svg>")
    return f'<div class="chart"><h3>{_esc(title)}</h3>{"".join(parts)}</div>'


def _result(report: HealthReport, check_id: str) -> CheckResult | None:
    try:
        return report.result(check_id)
    except KeyError:
        return None


def _charts(report: HealthReport) -> str:
    charts = []
    gauges: list[tuple[str, float]] = []
    connections = _result(report, "server.connections")
    if connections and connections.value is not None:
        gauges.append(("connection slots used", connections.value))
    xid = _result(report, "server.xid_wraparound")
    if xid and xid.value is not None:
        gauges.append(("transaction-ID space used", xid.value / 2**31))
    mxid = _result(report, "server.multixact_wraparound")
    if mxid and mxid.value is not None:
        gauges.append(("multixact space used", mxid.value / 2**31))
    cache = _result(report, "server.cache_hit_ratio")
    if cache and cache.value is not None:
        gauges.append(("cache hit ratio", cache.value))
    charts.append(_bars("How full (share of the limit)", gauges, limit=1.0, warn=0.8))
    dead = _result(report, "server.dead_tuples")
    if dead and dead.evidence:
        charts.append(_bars("Dead tuples (share of the table)",
                            [(e["table"], float(e["dead_ratio"])) for e in dead.evidence[:10]], limit=1.0))
    for check_id, key, title in (("server.table_bloat", "bloat_ratio", "Estimated table bloat"),
                                 ("server.index_bloat", "bloat_ratio", "Estimated index bloat")):
        found = _result(report, check_id)
        if found:
            items = [(e.get("table") or e.get("index") or "?", float(e[key])) for e in found.evidence if key in e]
            charts.append(_bars(title, items[:10], limit=1.0))
    per_db = connections.evidence[:10] if connections else []
    charts.append(_bars("Connections per database", [(e["database"], float(e["connections"])) for e in per_db],
                        fmt="{:.0f}"))
    slow = sorted(report.results, key=lambda r: -r.seconds)[:12]
    charts.append(_bars("Where the run's time went (seconds)", [(r.id, r.seconds) for r in slow], fmt="{:.3f}"))
    return '<div class="charts">' + "".join(c for c in charts if c) + "</div>"


def render_html(report: HealthReport) -> str:
    """One HTML page for ``report``."""
    counts = report.counts()
    summary = " ".join(f"{_badge(s)} {counts[s.label]}" for s in (Status.CRITICAL, Status.WARNING, Status.UNKNOWN,
                                                                  Status.OK))
    rows = []
    for r in report.sorted():
        evidence = ""
        if r.evidence:
            more = f" (first {len(r.evidence)} of {r.evidence_total})" if r.evidence_total > len(r.evidence) else ""
            evidence = (f"<details><summary>evidence{more}</summary><pre>"
                        f"{_esc(json.dumps(r.evidence, indent=1, default=str))}</pre></details>")
        remedy = (f"<div><b>remedy:</b> {_esc(r.remediation)}</div><div><b>lock:</b> {_esc(r.lock)}</div>"
                  if r.remediation else "")
        changed = (f"<br><small>was {r.previous.label}</small>" if r.previous is not None
                   and r.previous != r.status else "")
        value = "" if r.value is None else f"{r.value:,.4g} {_esc(r.unit)}"
        limits = ", ".join(f"{k} {v:,.4g}" for k, v in r.thresholds.items())
        rows.append(f"<tr><td>{_badge(r.status)}{changed}</td><td><b>{_esc(r.title)}</b><br><small>{_esc(r.id)}"
                    f"</small></td><td>{_esc(r.message)}{remedy}{evidence}</td><td>{value}<br><small>{limits}"
                    "</small></td></tr>")
    previous = (f" · compared with the run recorded {_esc(report.previous_run_at.isoformat(timespec='seconds'))}"
                if report.previous_run_at else "")
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>agentdb health</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>agentdb health {_badge(report.status)}</h1>"
        f"<div class=\"meta\">{_esc(report.database)} · PostgreSQL {_esc(report.server_version)} · "
        f"{_esc(report.started_at.isoformat(timespec='seconds'))} · {len(report.results)} checks in "
        f"{report.seconds:.2f} s · locks held: {_esc(', '.join(report.locks) or 'none')}{previous}</div>"
        f"<p>{summary}</p><h2>Charts</h2>{_charts(report)}"
        "<h2>Results, problems first</h2><table><tr><th>status</th><th>check</th><th>finding</th>"
        f"<th>value</th></tr>{''.join(rows)}</table></body></html>\n"
    )
