"""Erasing a person: the plan's steps in one transaction, the ledger, then the proof.

:func:`erase_user` is the seed documents' ``erase_user(user_id=123)``.  For
one request:

1. the request is opened in the ledger (a ``pending`` one is reused);
2. one transaction, under ``lock_timeout`` with the shared retry helper:
   an advisory lock on the user id (two erasures of one person, or an erasure
   and a hold, never interleave); a legal hold refuses it (recorded, nothing
   changed); the person's identifying values are read into memory; the plan's
   steps run (:mod:`agentdb.privacy.plan`); the ledger row becomes ``erased``
   with the rows per table, and ``event_logs`` gets ``privacy.erasure`` with
   the request id and counts only.  The audit rows the deletes write carry
   ``agentdb.actor = 'agentdb privacy: erasure request N'`` and are
   pseudonymised with the rest;
3. after the commit, the proof scan (:mod:`agentdb.privacy.proof`); the
   request becomes ``done`` (no hit) or ``unproven`` (hits: where, never what).

The bulk-change guard stays on: every statement touches one person's rows,
which the guard counts as one user, so it never refuses (it is never switched
off here).  The transaction sets ``enable_seqscan = off``: every statement has
an index on the column it filters by (:mod:`agentdb.privacy.plan`), and a
planner misled by stale statistics right after a bulk load must not read a
whole partition instead; a statement without such an index would still scan,
and the dry run (and a test) would show it.

Erasing an erased user changes nothing and says so; a user id nothing is
known about is :class:`~agentdb.errors.UnknownUser`.

.. warning::
   The transaction takes ``ROW EXCLUSIVE`` on every table it changes -- on a
   partitioned ``analytics``, on every partition, as any UPDATE of the parent
   does -- and row locks on the person's rows, for the tens of milliseconds it
   lasts.  Writers of other rows are not blocked; DDL that needs ``ACCESS
   EXCLUSIVE`` (a plain ``DETACH PARTITION``, a migration) waits for it, and an
   erasure waiting behind such DDL gives up after ``lock_timeout`` and retries
   (the shared helper, :func:`agentdb.runtime.locks.retry_on_lock_timeout`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import sqlalchemy as sa
from psycopg import sql

from agentdb.connection import connect, create_engine, resolve
from agentdb.errors import AgentdbError, ErasureFailed, ErasureRefused, UnknownUser
from agentdb.migrate._common import settings_from
from agentdb.privacy import ledger
from agentdb.privacy._sql import affected, execute, one, primary_message
from agentdb.privacy.plan import PSEUDONYM_PREFIX, ErasurePlan, Step, build_plan
from agentdb.privacy.proof import ProofReport, ProofValue, capture, scan
from agentdb.runtime.locks import LOCK_NOT_AVAILABLE, RetryPolicy, retry_on_lock_timeout, sqlstate_of
from agentdb.runtime.settings import RunSettings
from agentdb.schema.analytics import AUDITED_TABLES

__all__ = ["ErasureReport", "erase_user", "erase_users", "request_erasure"]

#: Advisory lock namespace (two-key form): (namespace, user id) serialises requests about one person.
USER_LOCK = 0x0A6E7D10
_AUDITED = {a.table for a in AUDITED_TABLES}


@dataclass
class ErasureReport:
    """What erasing one person did (or, in a dry run, would do): counts per relation, never a value."""

    user_id: int
    request_id: int | None = None
    dry_run: bool = False
    #: ``done``, ``unproven``, ``erased`` (no proof asked), ``nothing`` (already erased), ``refused``, ``failed``,
    #: ``unknown``; a dry run: ``planned``, ``nothing``, ``refused``.
    status: str = "planned"
    #: ``schema.table`` -> {"deleted"|"nullified"|"pseudonymised": rows}.
    changes: dict[str, dict[str, int]] = field(default_factory=dict)
    #: The earlier request that erased the user, when there was nothing left to erase.
    erased_by: int | None = None
    #: The active legal hold that refuses (or would refuse) the erasure.
    hold_id: int | None = None
    #: Archive copies given an index on the column people are looked up by (``schema.table.column``).
    indexed: list[str] = field(default_factory=list)
    #: Archive tables of no declared table: not erased by declaration (the proof still reads them).
    unmapped: list[str] = field(default_factory=list)
    #: Dry run: statements the planner would run with a sequential scan (``schema.table: action``).
    seq_scans: list[str] = field(default_factory=list)
    #: Dry run: audit rows the erasure itself writes (deleted or unlinked audited rows), then pseudonymises.
    audit_rows_written: int = 0
    proof: ProofReport | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def rows(self) -> int:
        return sum(sum(actions.values()) for actions in self.changes.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id, "request_id": self.request_id, "dry_run": self.dry_run, "status": self.status,
            "rows": self.rows, "changes": self.changes, "erased_by": self.erased_by, "hold_id": self.hold_id,
            "indexed": self.indexed, "unmapped": self.unmapped, "seq_scans": self.seq_scans,
            "audit_rows_written": self.audit_rows_written,
            "proof": self.proof.as_dict() if self.proof else None, "seconds": round(self.seconds, 4),
            "error": self.error,
        }


def pseudonym(key: bytes, user_id: int) -> str:
    """The keyed pseudonym of a user: HMAC-SHA256 of the id under the database's key, never of a value."""
    return PSEUDONYM_PREFIX + hmac.new(key, f"user:{user_id}".encode(), hashlib.sha256).hexdigest()[:24]


def _params(key: bytes, user_id: int) -> dict[str, Any]:
    digest = hmac.new(key, f"user:{user_id}".encode(), hashlib.sha256).digest()
    return {"user": user_id, "pseudonym": pseudonym(key, user_id), "pseudonym_uuid": str(uuid.UUID(bytes=digest[:16])),
            "actor_hashes": []}


def _actor_hashes(key: bytes, values: Iterable[ProofValue]) -> list[str]:
    """Keyed hashes of the values, as the audit step compares them on the server (the values stay here)."""
    return sorted({hashlib.sha256(key + v.value.lower().encode()).hexdigest() for v in values})


def _settings(database_url: str | None, data_dir: str | Path | None, lock_timeout: float | None,
              lock_retries: int | None) -> RunSettings:
    return settings_from(database_url, data_dir, lock_timeout=lock_timeout, lock_retries=lock_retries)


def _policy(settings: RunSettings) -> RetryPolicy:
    return RetryPolicy(attempts=settings.lock_retries, base_delay=settings.retry_delay)


def _session(connection: sa.Connection, settings: RunSettings, actor: str | None = None) -> None:
    """Transaction-local settings of an erasure (undone with its savepoint when an attempt is retried).

    ``jit`` is off: with sequential scans priced out, every plan's cost looks huge and PostgreSQL would
    spend most of a millisecond statement compiling it.
    """
    execute(connection, sql.SQL(
        "SELECT set_config('lock_timeout', %(lock)s, true), set_config('statement_timeout', %(statement)s, true), "
        "set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true), "
        "set_config('agentdb.actor', %(actor)s, true)"
    ), {"lock": f"{int(settings.lock_timeout * 1000)}ms", "statement": f"{int(settings.statement_timeout * 1000)}ms",
        "actor": actor or ""})


def _lock_user(connection: sa.Connection, user_id: int) -> None:
    execute(connection, "SELECT pg_advisory_xact_lock(%s, hashint8(%s))", (USER_LOCK, user_id))


def _collect(connection: sa.Connection, plan: ErasurePlan, params: dict[str, Any]) -> dict[str, set[int]]:
    """The ids of the person's rows in every relation other relations' rows hang from (parents first)."""
    doomed: dict[str, set[int]] = {}
    for collect in plan.collects:
        params.update(plan.ids_params(doomed))
        doomed[collect.relation.qualified] = {int(r[0]) for r in execute(
            connection, plan.collect_statement(collect), params)}
    params.update(plan.ids_params(doomed))
    return doomed


def _add(changes: dict[str, dict[str, int]], step: Step, rows: int) -> None:
    if rows:
        actions = changes.setdefault(step.relation.qualified, {})
        actions[step.verb] = actions.get(step.verb, 0) + rows


def prepare_indexes(connection: sa.Connection, plan: ErasurePlan, settings: RunSettings) -> list[str]:
    """Give archive copies an index on the column people are looked up by, in a short transaction of its own.

    ``CREATE INDEX`` takes a ``SHARE`` lock on the archive copy (nobody writes
    it) for the time of one read of it; done once, every later erasure finds
    its rows by the index.
    """
    made: list[str] = []
    for relation, column in list(plan.needs_index):
        def build(relation: Any = relation, column: str = column) -> None:
            _session(connection, settings)
            execute(connection, sql.SQL("CREATE INDEX ON {} ({})").format(relation.ident, sql.Identifier(column)))

        retry_on_lock_timeout(build, connection, _policy(settings), what=f"index on {relation.qualified}")
        connection.commit()
        made.append(f"{relation.qualified}.{column}")
    plan.needs_index.clear()
    return made


def _anything(connection: sa.Connection, plan: ErasurePlan, params: dict[str, Any]) -> bool:
    """Whether the erasure would change a row (counted by index; the users row answers at once when it exists)."""
    if any(r.table == "users" and not r.copy for r in plan.relations) and one(
            connection, "SELECT EXISTS (SELECT FROM public.users WHERE id = %(user)s)", params):
        return True
    return any(one(connection, plan.count_statement(step), params) for step in plan.steps)


def _run_steps(connection: sa.Connection, plan: ErasurePlan, params: dict[str, Any]) -> dict[str, dict[str, int]]:
    changes: dict[str, dict[str, int]] = {}
    for step in plan.steps:
        statement = plan.apply_statement(step)
        if statement is None:  # the foreign key's ON DELETE SET NULL does it when the parent row goes
            _add(changes, step, int(one(connection, plan.count_statement(step), params)))
        else:
            _add(changes, step, affected(connection, statement, params))
    return changes


def _seq_scans(connection: sa.Connection, plan: ErasurePlan, params: dict[str, Any]) -> list[str]:
    """The steps whose statement the planner would run with a sequential scan (EXPLAIN, nothing runs)."""
    found: list[str] = []
    for step in plan.steps:
        statement = plan.apply_statement(step) or plan.count_statement(step)
        (document,) = execute(connection, sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement), params)[0]
        scanned = sorted({name for name in _seq_scanned(document) if name != ledger.SETTINGS})
        if scanned:
            found.append(f"{step.relation.qualified}: {step.action} ({', '.join(scanned)})")
    return found


def _seq_scanned(node: Any) -> Iterable[str]:
    """Relation names of the ``Seq Scan`` nodes of an EXPLAIN (FORMAT JSON) document."""
    if isinstance(node, dict):
        if node.get("Node Type") == "Seq Scan":
            yield str(node.get("Relation Name"))
        for child in node.values():
            yield from _seq_scanned(child)
    elif isinstance(node, list):
        for child in node:
            yield from _seq_scanned(child)


def _audit_writes(plan: ErasurePlan, changes: dict[str, dict[str, int]]) -> int:
    return sum(sum(actions.values()) for name, actions in changes.items()
               if name.startswith("public.") and name.removeprefix("public.") in _AUDITED)


def _erased_before(connection: sa.Connection, user_id: int) -> int | None:
    done = ledger.requests_of(connection, user_id, "erasure", ("erased", "done", "unproven"))
    return done[-1].id if done else None


def _refuse(connection: sa.Connection, user_id: int, request_id: int | None, hold: ledger.PrivacyRequest) -> int:
    """Record the refusal (a new or the pending request becomes ``refused``) and commit it."""
    if request_id is None:
        request_id = ledger.open_request(connection, "erasure", user_id)
    ledger.update_request(connection, request_id, status="refused", completed_at=True, hold_id=hold.id,
                          reason=f"legal hold (request {hold.id})")
    ledger.record_event(connection, "privacy.erasure_refused", f"erasure request {request_id} refused: legal hold",
                        {"request": request_id, "hold": hold.id}, level="warning", request_id=request_id)
    connection.commit()
    return request_id


def _erase_one(connection: sa.Connection, plan: ErasurePlan, key: bytes, user_id: int, settings: RunSettings,
               *, dry_run: bool, pending: int | None = None,
               reapply: int | None = None) -> tuple[ErasureReport, list[ProofValue]]:
    """Erase (or plan the erasure of) one person in one transaction; returns the report and the values to prove.

    ``pending``: an open request of the ledger to complete (else a new one is
    opened); ``reapply``: a completed request to apply again (after a restore):
    no new ledger row, no hold check (the erasure was already done lawfully).
    """
    report = ErasureReport(user_id, request_id=reapply or pending, dry_run=dry_run, unmapped=list(plan.unmapped))
    params = _params(key, user_id)
    started = time.monotonic()

    if dry_run:
        _session(connection, settings)
        execute(connection, "SET TRANSACTION READ ONLY")
        hold = ledger.requests_of(connection, user_id, "hold", ("active",)) if reapply is None else []
        report.hold_id = hold[0].id if hold else None
        _collect(connection, plan, params)
        values = capture(connection, plan, params)
        params["actor_hashes"] = _actor_hashes(key, values)
        for step in plan.steps:
            _add(report.changes, step, int(one(connection, plan.count_statement(step), params)))
        report.seq_scans = _seq_scans(connection, plan, params)
        report.audit_rows_written = _audit_writes(plan, report.changes)
        report.indexed = [f"{r.qualified}.{c}" for r, c in plan.needs_index]
        erased_by = _erased_before(connection, user_id)
        connection.rollback()
        report.seconds = time.monotonic() - started
        if report.hold_id is not None:
            report.status = "refused"
        elif not report.rows:
            if erased_by is None and reapply is None:
                raise UnknownUser(user_id)
            report.status, report.erased_by = "nothing", erased_by or reapply
        return report, []

    state: dict[str, Any] = {}

    def attempt() -> None:
        _session(connection, settings)
        _lock_user(connection, user_id)
        if reapply is None:
            hold = ledger.requests_of(connection, user_id, "hold", ("active",))
            if hold:
                state["hold"] = hold[0]
                return
        _collect(connection, plan, params)
        if reapply is None and pending is None and not _anything(connection, plan, params):
            state["changes"] = {}  # nothing to erase: no ledger row, not even a sequence value
            return
        request_id = reapply or pending or ledger.open_request(connection, "erasure", user_id)
        state["request"] = request_id
        execute(connection, "SELECT set_config('agentdb.actor', %s, true)",
                (f"agentdb privacy: erasure request {request_id}",))
        values = capture(connection, plan, params)
        params["actor_hashes"] = _actor_hashes(key, values)
        state["values"] = values
        state["changes"] = _run_steps(connection, plan, params)

    try:
        retry_on_lock_timeout(attempt, connection, _policy(settings), what=f"erasure of user {user_id}")
    except sa.exc.DBAPIError as exc:
        connection.rollback()
        _failed(connection, user_id, exc, pending, reapply)
    except AgentdbError:
        connection.rollback()
        raise

    if "hold" in state:
        connection.rollback()
        report.hold_id = state["hold"].id
        report.request_id = _refuse(connection, user_id, pending, state["hold"])
        report.status = "refused"
        raise ErasureRefused(user_id, report.request_id, state["hold"].id)

    report.changes = state["changes"]
    report.request_id = state.get("request")
    if not report.rows:
        connection.rollback()  # nothing changed: not even a new ledger row
        erased_by = _erased_before(connection, user_id)
        connection.rollback()
        if pending is not None:  # a queued request about nobody (any more): answered, nothing is held
            ledger.update_request(connection, pending, status="done", completed_at=True, proof_hits=0,
                                  reason="no data held")
            connection.commit()
        elif erased_by is None and reapply is None:
            raise UnknownUser(user_id)
        report.status, report.erased_by = "nothing", erased_by or reapply
        report.request_id = pending or reapply
        report.seconds = time.monotonic() - started
        return report, []
    if reapply is not None:
        execute(connection, "UPDATE agentdb.privacy_requests SET reapplied_at = now(), "
                "reapply_count = reapply_count + 1 WHERE id = %s", (reapply,))
        ledger.record_event(connection, "privacy.erasure_reapplied", f"erasure request {reapply} applied again",
                            {"request": reapply, "tables": len(report.changes), "rows": report.rows},
                            request_id=reapply)
    else:
        assert report.request_id is not None  # opened in the transaction, since rows were changed
        ledger.update_request(connection, report.request_id, status="erased", completed_at=True,
                              rows_affected=report.changes, error=None)
        ledger.record_event(connection, "privacy.erasure", f"erasure request {report.request_id} done",
                            {"request": report.request_id, "tables": len(report.changes), "rows": report.rows},
                            request_id=report.request_id)
    connection.commit()
    report.status = "erased"
    report.seconds = time.monotonic() - started
    return report, state["values"]


def _failed(connection: sa.Connection, user_id: int, exc: sa.exc.DBAPIError, pending: int | None,
            reapply: int | None) -> NoReturn:
    """Record a failed erasure (its transaction was rolled back) and raise :class:`ErasureFailed`."""
    state, reason = primary_message(exc)
    if state == LOCK_NOT_AVAILABLE or sqlstate_of(exc) == LOCK_NOT_AVAILABLE:
        raise exc
    request_id = reapply or pending or ledger.open_request(connection, "erasure", user_id)
    if reapply is None:
        ledger.update_request(connection, request_id, status="failed", error=f"[{state or '?'}] {reason}")
    connection.commit()
    raise ErasureFailed(user_id, request_id, state, reason) from None


def _prove(connection: sa.Connection, reports: Sequence[ErasureReport], values: dict[int, list[ProofValue]],
           settings: RunSettings) -> None:
    """One proof scan for all the requests just erased; their ledger rows get the hits and the final status."""
    erased = [r for r in reports if r.status == "erased" and r.request_id is not None]
    if not erased:
        return
    proofs = scan(connection, {r.request_id: values.get(r.request_id, []) for r in erased if r.request_id},
                  policy=_policy(settings), lock_timeout=settings.lock_timeout)
    for report in erased:
        assert report.request_id is not None
        report.proof = proofs[report.request_id]
        report.status = "done" if report.proof.proven else "unproven"
        ledger.update_request(connection, report.request_id, status=report.status, proof_hits=report.proof.hits,
                              proof=report.proof.as_dict())
    connection.commit()


def erase_users(
    user_ids: Sequence[int] | None = None,
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    dry_run: bool = False,
    proof: bool = True,
    lock_timeout: float | None = None,
    lock_retries: int | None = None,
    stop_on_error: bool = False,
) -> list[ErasureReport]:
    """Erase several people (default: every ``pending`` erasure request of the ledger), one transaction each.

    The plan is built once and one proof scan covers them all.  A request that
    is refused (legal hold), unknown or fails is reported with its status and
    ``error`` and the queue goes on (``stop_on_error`` raises instead).
    """
    settings = _settings(database_url, data_dir, lock_timeout, lock_retries)
    target = resolve(settings.database_url, settings.data_dir)
    engine = create_engine(target)
    reports: list[ErasureReport] = []
    values: dict[int, list[ProofValue]] = {}
    try:
        with connect(engine, target) as connection:
            ledger.ensure_ledger(connection)
            connection.commit()
            queue: list[tuple[int, int | None]]
            if user_ids is None:
                queue = [(r.user_id, r.id) for r in reversed(ledger.list_requests(
                    connection, kind="erasure", status="pending"))]
                queue += [(r.user_id, r.id) for r in reversed(ledger.list_requests(
                    connection, kind="erasure", status="failed"))]
            else:
                queue = [(user_id, _pending(connection, user_id)) for user_id in user_ids]
            connection.rollback()
            plan = build_plan(connection)
            key = ledger.pseudonym_key(connection)
            connection.rollback()
            indexed = [] if dry_run else prepare_indexes(connection, plan, settings)
            for user_id, pending in queue:
                try:
                    report, found = _erase_one(connection, plan, key, user_id, settings, dry_run=dry_run,
                                               pending=pending)
                except (UnknownUser, ErasureRefused, ErasureFailed) as exc:
                    if stop_on_error:
                        raise
                    status = {UnknownUser: "unknown", ErasureRefused: "refused"}.get(type(exc), "failed")
                    report = ErasureReport(user_id, request_id=exc.request_id, dry_run=dry_run, status=status,
                                           error=str(exc), hold_id=getattr(exc, "hold_id", None))
                    found = []
                report.indexed = report.indexed or indexed
                reports.append(report)
                if report.request_id is not None and found:
                    values[report.request_id] = found
            if proof and not dry_run:
                _prove(connection, reports, values, settings)
    finally:
        engine.dispose()
    return reports


def _pending(connection: sa.Connection, user_id: int) -> int | None:
    """The user's oldest open erasure request (pending or failed), to be completed rather than duplicated."""
    if not ledger.ledger_exists(connection):
        return None
    found = ledger.requests_of(connection, user_id, "erasure", ("pending", "failed"))
    return found[0].id if found else None


def erase_user(
    user_id: int,
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    dry_run: bool = False,
    proof: bool = True,
    lock_timeout: float | None = None,
    lock_retries: int | None = None,
) -> ErasureReport:
    """Erase everything the registry marks personal about ``user_id``, everywhere, and prove it.

    ``dry_run`` counts what would be deleted, nullified and pseudonymised per
    table and changes nothing (no ledger row either).  Raises
    :class:`~agentdb.errors.UnknownUser`, :class:`~agentdb.errors.ErasureRefused`
    (legal hold) or :class:`~agentdb.errors.ErasureFailed`; a user erased
    before gives a report with status ``nothing`` and ``erased_by``.
    """
    (report,) = erase_users([user_id], database_url=database_url, data_dir=data_dir, dry_run=dry_run, proof=proof,
                            lock_timeout=lock_timeout, lock_retries=lock_retries, stop_on_error=True)
    return report


def request_erasure(user_id: int, *, database_url: str | None = None, data_dir: str | Path | None = None) -> int:
    """Record an erasure request as ``pending`` (its deadline runs from now) and return its id; no erasure yet.

    ``erase_users()`` (``agentdb privacy erase --pending``) processes the queue.
    """
    settings = _settings(database_url, data_dir, None, None)
    target = resolve(settings.database_url, settings.data_dir)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            ledger.ensure_ledger(connection)
            request_id = _pending(connection, user_id) or ledger.open_request(connection, "erasure", user_id)
            connection.commit()
            return request_id
    finally:
        engine.dispose()
