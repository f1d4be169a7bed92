"""The findings of the governance checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["EXIT_INCOMPLETE", "EXIT_OK", "EXIT_VIOLATIONS", "CheckReport", "Exemption", "Violation"]


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


#: Exit status of ``agentdb check``: every check ran and none found a violation.
EXIT_OK = 0
#: At least one violation (whatever else happened).
EXIT_VIOLATIONS = 7
#: No violation found, but a check could not run (a tool it needs is missing): the result is unknown.
EXIT_INCOMPLETE = 9


@dataclass
class CheckReport:
    checked: tuple[str, ...] = ()
    violations: list[Violation] = field(default_factory=list)
    exemptions: list[Exemption] = field(default_factory=list)
    #: Checks not run because the caller asked so ("squawk: skipped on request").
    skipped: list[str] = field(default_factory=list)
    #: Checks that could not run, with how to fix that ("squawk: not installed (...)"): their verdict is unknown.
    unknown: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every check that was asked for ran, and none found a violation."""
        return not self.violations and not self.unknown

    @property
    def exit_code(self) -> int:
        """7 on a violation; 9 when nothing was found but a check could not run (not a pass, not a violation)."""
        if self.violations:
            return EXIT_VIOLATIONS
        return EXIT_INCOMPLETE if self.unknown else EXIT_OK

    def summary(self) -> str:
        """The last line ``agentdb check`` prints."""
        count = len(self.checked)
        if self.violations:
            return f"{len(self.violations)} violation(s) in {count} migrations"
        if self.unknown:
            return f"no violation in {count} migrations, but {len(self.unknown)} check(s) could not run (see above)"
        return f"ok: {count} migrations pass every check"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "checked": list(self.checked),
            "violations": [asdict(v) for v in self.violations],
            "exemptions": [asdict(e) for e in self.exemptions], "skipped": list(self.skipped),
            "unknown": list(self.unknown),
        }
