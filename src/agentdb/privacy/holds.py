"""Legal holds: while one is active on a user, erasure is refused (and the refusal recorded).

A hold is a ledger row of kind ``hold``: ``active`` until released.  At most
one is active per user (a unique partial index); placing a second returns the
first.  Holds and erasures of a user take the same advisory lock, so an
erasure never slips past a hold being placed.

The reason is stored, so it must not carry the personal data the ledger is
built to keep out: it is refused when it contains one of the person's
identifying values (compared in memory, case-insensitively), when it is empty,
longer than 200 characters or has control characters.  Refer to a case
number, not to a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agentdb.connection import connect, create_engine, resolve
from agentdb.errors import HoldReasonRejected, NoActiveHold, UnknownUser
from agentdb.migrate._common import settings_from
from agentdb.privacy import ledger
from agentdb.privacy.erase import _collect, _erased_before, _lock_user, _params, _session
from agentdb.privacy.plan import build_plan
from agentdb.privacy.proof import capture

__all__ = ["HoldReport", "place_hold", "release_hold"]

MAX_REASON = 200


@dataclass(frozen=True)
class HoldReport:
    """A hold placed or released: the ledger request, and whether this call changed anything."""

    user_id: int
    request_id: int
    status: str
    changed: bool

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "request_id": self.request_id, "status": self.status,
                "changed": self.changed}


def _check_reason(user_id: int, reason: str, values: list[str]) -> str:
    text = " ".join(reason.split())
    if not text:
        raise HoldReasonRejected(user_id, "it is empty")
    if len(text) > MAX_REASON:
        raise HoldReasonRejected(user_id, f"it is longer than {MAX_REASON} characters")
    if any(not c.isprintable() for c in text):
        raise HoldReasonRejected(user_id, "it contains control characters")
    folded = text.casefold()
    if any(len(value) >= 3 and value.casefold() in folded for value in values):
        raise HoldReasonRejected(user_id, "it quotes the person's identifying data (e-mail, name or an external id)")
    return text


def _connection(database_url: str | None, data_dir: str | Path | None) -> tuple[sa.Engine, Any, Any]:
    settings = settings_from(database_url, data_dir)
    target = resolve(settings.database_url, settings.data_dir)
    return create_engine(target), target, settings


def place_hold(user_id: int, reason: str, *, database_url: str | None = None,
               data_dir: str | Path | None = None) -> HoldReport:
    """Put ``user_id`` under legal hold: erasure is refused until :func:`release_hold`.

    Raises :class:`~agentdb.errors.HoldReasonRejected` for a reason that
    quotes the person, :class:`~agentdb.errors.UnknownUser` when nothing is
    held about the user.  An active hold is returned as it is (``changed`` False).
    """
    engine, target, settings = _connection(database_url, data_dir)
    try:
        with connect(engine, target) as connection:
            ledger.ensure_ledger(connection)
            connection.commit()
            plan = build_plan(connection)
            params = _params(ledger.pseudonym_key(connection), user_id)
            connection.rollback()
            _session(connection, settings)
            _lock_user(connection, user_id)
            active = ledger.requests_of(connection, user_id, "hold", ("active",))
            if active:
                connection.rollback()
                return HoldReport(user_id, active[0].id, "active", changed=False)
            _collect(connection, plan, params)
            values = [v.value for v in capture(connection, plan, params)]
            users = plan.relations and any(r.table == "users" and not r.copy for r in plan.relations)
            exists = bool(users) and bool(connection.execute(
                sa.text("SELECT EXISTS (SELECT FROM public.users WHERE id = :id)"), {"id": user_id}).scalar())
            if not exists and not values:
                erased_by = _erased_before(connection, user_id)
                connection.rollback()
                raise UnknownUser(user_id, erased_by=erased_by)
            text = _check_reason(user_id, reason, values)
            request_id = ledger.open_request(connection, "hold", user_id, status="active", reason=text)
            ledger.record_event(connection, "privacy.hold", f"legal hold request {request_id} placed",
                                {"request": request_id}, request_id=request_id)
            connection.commit()
            return HoldReport(user_id, request_id, "active", changed=True)
    finally:
        engine.dispose()


def release_hold(user_id: int, *, database_url: str | None = None, data_dir: str | Path | None = None) -> HoldReport:
    """End the active legal hold of ``user_id`` (:class:`~agentdb.errors.NoActiveHold` when there is none)."""
    engine, target, settings = _connection(database_url, data_dir)
    try:
        with connect(engine, target) as connection:
            ledger.ensure_ledger(connection)
            _session(connection, settings)
            _lock_user(connection, user_id)
            active = ledger.requests_of(connection, user_id, "hold", ("active",))
            if not active:
                connection.rollback()
                raise NoActiveHold(user_id)
            request_id = active[0].id
            ledger.update_request(connection, request_id, status="released", completed_at=True)
            ledger.record_event(connection, "privacy.hold_released", f"legal hold request {request_id} released",
                                {"request": request_id}, request_id=request_id)
            connection.commit()
            return HoldReport(user_id, request_id, "released", changed=True)
    finally:
        engine.dispose()
