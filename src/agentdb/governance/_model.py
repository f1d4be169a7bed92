"""The findings of the governance checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CheckReport", "Exemption", "Violation"]


@dataclass(frozen=True)
class Violation:
    """One broken rule: which file, which rule, and a one-line message that says what to do."""

    rule: str
    filename: str
    message: str
    revision: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}" if self.line else self.filename
        return f"{where}: [{self.rule}] {self.message}"


@dataclass(frozen=True)
class Exemption:
    """A squawk rule a migration declares it must break, with the reason (reported, not a violation)."""

    filename: str
    revision: str
    rule: str
    reason: str
    occurrences: int

    def __str__(self) -> str:
        return f"{self.filename}: allowed squawk {self.rule} ({self.occurrences}x): {self.reason}"


@dataclass
class CheckReport:
    checked: tuple[str, ...] = ()
    violations: list[Violation] = field(default_factory=list)
    exemptions: list[Exemption] = field(default_factory=list)
    #: Checks that could not run, with the reason ("squawk: skipped on request").
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "checked": list(self.checked),
            "violations": [asdict(v) for v in self.violations],
            "exemptions": [asdict(e) for e in self.exemptions], "skipped": list(self.skipped),
        }
