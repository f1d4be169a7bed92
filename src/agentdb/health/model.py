"""What a health run reports: one :class:`CheckResult` per check, gathered in a :class:`HealthReport`.

A result says what was measured (:attr:`CheckResult.value` against
:attr:`CheckResult.thresholds`), where (:attr:`CheckResult.evidence`: the
table, index or pid, never a row's values), what to do about it
(:attr:`CheckResult.remediation`) and which lock that remedy takes
(:attr:`CheckResult.lock`), so a person can judge whether to run it now.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["MAX_EVIDENCE", "CheckResult", "HealthReport", "Status", "worst"]

#: Evidence rows kept per result: enough to act on, bounded so a report of a sick database stays readable.
MAX_EVIDENCE = 20


class Status(enum.IntEnum):
    """A check's verdict; the values are the exit codes of Nagios plugins."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


#: How bad a status is, for the overall verdict and for sorting: a critical outranks a warning, which
#: outranks an unknown (the order Nagios' multi-check plugins use).
_SEVERITY = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}


def worst(statuses: list[Status]) -> Status:
    """The overall status of several checks: critical, else warning, else unknown, else ok."""
    return max(statuses, key=_SEVERITY.__getitem__, default=Status.OK)


@dataclass
class CheckResult:
    """The outcome of one check."""

    id: str
    title: str
    group: str
    status: Status
    #: One line for people: what was found.
    message: str
    #: The measured value the thresholds apply to (a count, seconds, a ratio, bytes), when there is one.
    value: float | None = None
    unit: str = ""
    #: ``{"warning": ..., "critical": ...}`` in :attr:`unit`; empty for a check that is either right or wrong.
    thresholds: dict[str, float] = field(default_factory=dict)
    #: What the finding is about: table, index, pid, revision... (at most :data:`MAX_EVIDENCE` items).
    evidence: list[dict[str, Any]] = field(default_factory=list)
    #: How many items there were before the evidence was cut to :data:`MAX_EVIDENCE`.
    evidence_total: int = 0
    #: What to do about it; empty when the check is ok.
    remediation: str = ""
    #: The lock the remediation takes, and what it blocks.
    lock: str = ""
    seconds: float = 0.0
    #: The status of this check in the previous recorded run, when it was different.
    previous: Status | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "group": self.group, "status": self.status.label,
            "message": self.message, "value": self.value, "unit": self.unit, "thresholds": self.thresholds,
            "evidence": self.evidence, "evidence_total": self.evidence_total, "remediation": self.remediation,
            "lock": self.lock, "seconds": round(self.seconds, 4),
            "previous": self.previous.label if self.previous is not None else None,
        }


@dataclass
class HealthReport:
    """Every result of one run, worst first, with what the run itself did."""

    database: str
    server_version: str
    started_at: datetime
    seconds: float
    results: list[CheckResult]
    #: The lock modes this run held on relations at its end (a read-only run holds AccessShareLock at most).
    locks: list[str] = field(default_factory=list)
    #: When the run the ``previous`` statuses come from was recorded; None without a recorded run.
    previous_run_at: datetime | None = None
    #: Whether this run was recorded in ``agentdb.health_runs``.
    recorded: bool = False

    @property
    def status(self) -> Status:
        return worst([r.status for r in self.results])

    @property
    def exit_code(self) -> int:
        return int(self.status)

    @property
    def changed(self) -> list[CheckResult]:
        """Results whose status differs from the previous recorded run."""
        return [r for r in self.results if r.previous is not None and r.previous != r.status]

    def sorted(self) -> list[CheckResult]:
        """Problems first (critical, warning, unknown), then by id."""
        return sorted(self.results, key=lambda r: (-_SEVERITY[r.status], r.id))

    def counts(self) -> dict[str, int]:
        return {s.label: sum(1 for r in self.results if r.status == s) for s in Status}

    def result(self, check_id: str) -> CheckResult:
        for r in self.results:
            if r.id == check_id:
                return r
        raise KeyError(check_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.label, "exit_code": self.exit_code, "database": self.database,
            "server_version": self.server_version, "started_at": self.started_at.isoformat(),
            "seconds": round(self.seconds, 3), "counts": self.counts(), "locks": self.locks,
            "previous_run_at": self.previous_run_at.isoformat() if self.previous_run_at else None,
            "recorded": self.recorded, "results": [r.as_dict() for r in self.sorted()],
        }
