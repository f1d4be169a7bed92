"""Describe, then execute: an online change as a plan of phases, each a list of steps.

A kind of change (:mod:`agentdb.online.kinds`) turns a *design* -- the JSON
document it derives from the catalogue when the change is planned, with the
name of every object it will create -- into a :class:`Plan`.  The same plan
serves the dry run (phases, the lock each step takes and how long it may wait,
estimated rows), the SQL listing (every statement with comments), the
progress display and the engine that executes it; a resume rebuilds the plan
from the design stored with the change, so it runs exactly the same SQL.

Phases are of four sorts:

``steps``
    Each step is one transaction, committed together with the change's new
    step number.  A *contended* step takes a lock the application's own
    queries take (SHARE ROW EXCLUSIVE to add a trigger or a foreign key,
    ACCESS EXCLUSIVE to drop one); it runs under the short ``lock_timeout``
    with bounded, jittered retries.  Other steps either touch only the
    change's own new objects, or take a lock that does not block reads or
    writes (SHARE UPDATE EXCLUSIVE for ``VALIDATE CONSTRAINT``).
``copy``
    Key-ordered batches (:mod:`agentdb.online.copy`).
``verify``
    Count and checksum per key range in one snapshot (:mod:`agentdb.online.verify`).
``cutover``
    One transaction: take ACCESS EXCLUSIVE on both tables under the short
    ``lock_timeout`` (retried), check the source's definition has not changed,
    run the catalogue-only swap statements, commit.  Nothing is scanned,
    copied or validated while the lock is held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from psycopg import sql

from agentdb.online import backfill as _backfill
from agentdb.online import verify as _verify
from agentdb.online._sql import render
from agentdb.online.copy import CopySpec, batch_statement, range_statement
from agentdb.online.settings import OnlineSettings

__all__ = ["CutoverSpec", "Phase", "Plan", "Step"]

PhaseSort = Literal["steps", "copy", "backfill", "verify", "cutover"]


@dataclass(frozen=True)
class Step:
    """One transaction's worth of statements, and what it locks."""

    title: str
    statements: tuple[sql.Composable, ...]
    #: Human-readable locks, e.g. ``SHARE ROW EXCLUSIVE on public.analytics``.
    locks: tuple[str, ...] = ()
    #: Takes a lock that application queries also take: short lock_timeout and retries.
    contended: bool = False
    #: Python work done in the same transaction after the statements (e.g. registering the table
    #: with partition maintenance); its title says what it does.
    call: Callable[[sa.Connection], None] | None = field(default=None, compare=False)
    #: Statements that cannot run in a transaction (``CREATE INDEX CONCURRENTLY``): each runs on its own,
    #: then the change's row moves on in a transaction of its own.  They must be safe to run again
    #: (a crash between them and the row's update redoes the step).
    concurrent: bool = False
    #: For a concurrent step: statements (each on its own) that clean up after it fails, e.g. dropping
    #: the INVALID index a failed ``CREATE INDEX CONCURRENTLY`` leaves.
    undo: tuple[sql.Composable, ...] = ()

    def as_dict(self, settings: OnlineSettings) -> dict[str, Any]:
        return {
            "title": self.title,
            "locks": list(self.locks),
            "contended": self.contended,
            "concurrent": self.concurrent,
            "lock_timeout_s": settings.lock_timeout if self.contended else None,
            "may_wait_s": round(settings.worst_wait(), 1) if self.contended else None,
            "statements": len(self.statements),
        }


@dataclass(frozen=True)
class CutoverSpec:
    #: The LOCK TABLE statement(s): all the waiting happens here.
    lock: Step
    #: Catalogue-only statements run while the locks are held.
    swap: Step
    #: The source whose definition must still match the design's fingerprint.
    source: tuple[str, str]


@dataclass(frozen=True)
class Phase:
    name: str
    summary: str
    sort: PhaseSort = "steps"
    steps: tuple[Step, ...] = ()
    copy: CopySpec | None = None
    backfill: _backfill.BackfillSpec | None = None
    verify: _verify.VerifySpec | None = None
    cutover: CutoverSpec | None = None

    def locks(self) -> list[str]:
        if self.sort == "copy":
            assert self.copy is not None
            return [f"ROW SHARE on {'.'.join(self.copy.source)} (FOR KEY SHARE of each batch's rows)",
                    f"ROW EXCLUSIVE on {'.'.join(self.copy.target)}"]
        if self.sort == "backfill":
            assert self.backfill is not None
            return [f"ROW EXCLUSIVE on {'.'.join(self.backfill.table)} (each batch's rows, until it commits)"]
        if self.sort == "verify":
            assert self.verify is not None
            return [f"ACCESS SHARE on {'.'.join(self.verify.source)} and {'.'.join(self.verify.target)}"]
        if self.sort == "cutover":
            assert self.cutover is not None
            return list(self.cutover.lock.locks)
        return list(dict.fromkeys(lock for step in self.steps for lock in step.locks))

    def as_dict(self, settings: OnlineSettings) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "sort": self.sort, "summary": self.summary, "locks": self.locks()}
        if self.sort == "steps":
            data["steps"] = [s.as_dict(settings) for s in self.steps]
        elif self.sort == "cutover":
            data["lock_timeout_s"] = settings.lock_timeout
            data["may_wait_s"] = round(settings.worst_wait(), 1)
            data["swap_statements"] = len(self.cutover.swap.statements) if self.cutover else 0
        elif self.sort in ("copy", "backfill"):
            data["first_batch_rows"] = settings.batch_size
            data["batch_seconds"] = settings.batch_seconds
            data["batch_lock_timeout_s"] = settings.batch_lock_timeout
        return data

    def statements(self) -> list[tuple[str, sql.Composable]]:
        """(comment, statement) pairs, in order, for the SQL listing."""
        out: list[tuple[str, sql.Composable]] = []
        if self.sort == "steps":
            for step in self.steps:
                out += [(_step_comment(step), s) for s in step.statements[:1]]
                out += [("", s) for s in step.statements[1:]]
        elif self.sort == "copy":
            assert self.copy is not None
            if self.copy.uses_ranges:
                out.append((
                    f"from min({self.copy.key[0]}) to its maximum when the copy starts, one range per batch, each "
                    "its own transaction committed with the checkpoint ({after} = the previous range's end); "
                    "{batch_size} adapts to the target batch time",
                    range_statement(self.copy, None, None),
                ))
            else:
                out.append((
                    "repeated until no row is left, each batch its own transaction committed with the checkpoint; "
                    "the first batch has no lower bound, later ones start after the previous batch's last key; "
                    "{batch_size} adapts to the target batch time",
                    batch_statement(self.copy, ["<last key>"] * len(self.copy.key), ["<greatest key at start>"] *
                                    len(self.copy.key), None),
                ))
        elif self.sort == "backfill":
            assert self.backfill is not None
            if self.backfill.uses_ranges:
                out.append((
                    f"from min({self.backfill.key[0]}) to its maximum when the backfill starts, one range per "
                    "batch, each its own transaction committed with the checkpoint, with "
                    f"{_backfill.BYPASS_SETTING} set locally so the change's trigger lets it through; "
                    "{batch_size} adapts to the target batch time",
                    _backfill.statement(self.backfill, None, None),
                ))
            else:
                out.append((
                    "key-ordered batches of {batch_size} rows (keyset), each its own transaction committed with "
                    "the checkpoint", _backfill.keyset_statement(self.backfill, None, 0)))
        elif self.sort == "verify":
            assert self.verify is not None
            statements = _verify.statements(self.verify)
            out.append(("one snapshot: count and checksum per key range, source vs new", statements[0]))
            out += [("", s) for s in statements[1:]]
        else:
            assert self.cutover is not None
            out.append(("BEGIN; " + _step_comment(self.cutover.lock), self.cutover.lock.statements[0]))
            out += [("", s) for s in self.cutover.lock.statements[1:]]
            out.append(("then, under the lock, catalogue changes only: " + self.cutover.swap.title,
                        self.cutover.swap.statements[0]))
            out += [("", s) for s in self.cutover.swap.statements[1:]]
            out.append(("", sql.SQL("COMMIT")))
        return out


def _step_comment(step: Step) -> str:
    locks = "; ".join(step.locks) or "no lock on application tables"
    wait = " (short lock_timeout, retried)" if step.contended else ""
    if step.concurrent:
        wait += " (outside a transaction)"
    return f"{step.title} -- locks: {locks}{wait}"


@dataclass(frozen=True)
class Plan:
    """What an online change will do; from :func:`agentdb.online.plan`, executed by :func:`agentdb.online.run`."""

    kind: str
    schema: str
    table: str
    design: dict[str, Any]
    phases: tuple[Phase, ...]
    rows_estimated: int
    settings: OnlineSettings
    notes: tuple[str, ...] = field(default=())

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def phase(self, name: str) -> Phase:
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(name)

    def phase_names(self) -> list[str]:
        return [p.name for p in self.phases]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "table": self.qualified,
            "rows_estimated": self.rows_estimated,
            "phases": [p.as_dict(self.settings) for p in self.phases],
            "notes": list(self.notes),
            "settings": self.settings.as_dict(),
        }

    def sql(self) -> str:
        """Every phase's SQL with comments, for ``agentdb sql`` and for review."""
        lines = [f"-- online change: {self.kind} of {self.qualified} (about {self.rows_estimated:,} rows)"]
        for note in self.notes:
            lines.append(f"-- note: {note}")
        for phase in self.phases:
            lines += ["", f"-- === phase {phase.name}: {phase.summary}"]
            for comment, statement in phase.statements():
                if comment:
                    lines.append("-- " + comment)
                lines.append(render(statement).strip() + ";")
        return "\n".join(lines) + "\n"
