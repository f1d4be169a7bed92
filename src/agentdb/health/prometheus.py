"""The report in Prometheus' text exposition format, through prometheus_client.

Labels are bounded: ``check`` takes only the registered check ids (about fifty,
fixed by the code) and ``level`` only ``warning``/``critical``.  No table,
index, pid or query ever becomes a label: evidence stays in the JSON and HTML
reports, so a sick database cannot blow up the series count of the server
that scrapes it (the cardinality problem of postgres_exporter #549).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from agentdb.health.model import HealthReport

__all__ = ["render_prometheus"]


def render_prometheus(report: HealthReport) -> str:
    """``agentdb_health_*`` gauges of ``report`` as exposition text."""
    registry = CollectorRegistry()
    status = Gauge("agentdb_health_check_status", "Status of a check: 0 ok, 1 warning, 2 critical, 3 unknown",
                   ["check", "group"], registry=registry)
    value = Gauge("agentdb_health_check_value", "The value a check measured, in the unit of the check",
                  ["check", "unit"], registry=registry)
    threshold = Gauge("agentdb_health_check_threshold", "A check's threshold, in the unit of the check",
                      ["check", "level"], registry=registry)
    duration = Gauge("agentdb_health_check_duration_seconds", "How long a check took", ["check"], registry=registry)
    overall = Gauge("agentdb_health_status", "Worst status of the run: 0 ok, 1 warning, 2 critical, 3 unknown",
                    registry=registry)
    run_seconds = Gauge("agentdb_health_run_duration_seconds", "How long the whole run took", registry=registry)
    counts = Gauge("agentdb_health_checks", "Checks per status", ["status"], registry=registry)
    for result in report.results:
        status.labels(result.id, result.group).set(int(result.status))
        if result.value is not None:
            value.labels(result.id, result.unit or "").set(result.value)
        for level, limit in result.thresholds.items():
            threshold.labels(result.id, level).set(limit)
        duration.labels(result.id).set(result.seconds)
    overall.set(int(report.status))
    run_seconds.set(report.seconds)
    for label, n in report.counts().items():
        counts.labels(label).set(n)
    return generate_latest(registry).decode()
