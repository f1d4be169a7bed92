"""After a backup is restored: erase again everyone the ledger says was erased.

A restored backup brings erased people back.  :func:`reapply_erasures` reads
the completed erasure requests (``erased``, ``done``, ``unproven``) of a
ledger and erases each user again, then proves it with one scan:

* by default the ledger of the database itself (a backup taken after the
  erasure, or a table restored on its own);
* ``from_database``: the ledger of another database -- the production
  database, when a backup of it is restored elsewhere;
* ``ledger_file``: the JSON of ``agentdb privacy requests --json`` (it holds
  no personal data, so it can be kept where backups are not: see the README).

Requests the restored database does not know are copied into its ledger
(same id when it is free), so that the next reapply needs no outside source.
Holds are not checked: these erasures were already done lawfully; a hold
placed since cannot bring the data back.  A user already erased here is
reported ``nothing`` and not touched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agentdb.connection import connect, create_engine, resolve
from agentdb.errors import AgentdbError, InvalidLedger
from agentdb.privacy import ledger
from agentdb.privacy._sql import execute
from agentdb.privacy.erase import ErasureReport, _erase_one, _prove, _settings, prepare_indexes
from agentdb.privacy.plan import build_plan
from agentdb.privacy.proof import ProofValue

__all__ = ["COMPLETED", "ReapplyReport", "reapply_erasures"]

#: Statuses of an erasure request that was carried out.
COMPLETED = ("erased", "done", "unproven")


@dataclass
class ReapplyReport:
    """What reapplying did: where the ledger came from, the requests copied in, one report per request."""

    source: str
    merged: int = 0
    requests: list[ErasureReport] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def erased_again(self) -> list[ErasureReport]:
        return [r for r in self.requests if r.status not in {"nothing", "planned"} or (self.dry_run and r.rows)]

    @property
    def hits(self) -> int:
        return sum(r.proof.hits for r in self.requests if r.proof)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "merged": self.merged, "dry_run": self.dry_run,
                "erased_again": len(self.erased_again), "hits": self.hits,
                "requests": [r.as_dict() for r in self.requests], "seconds": round(self.seconds, 3)}


def _from_file(path: Path) -> list[dict[str, Any]]:
    shown = "the ledger file"  # never its path: it may name the person or the case
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidLedger(shown, exc.strerror or "cannot be read") from None
    except ValueError:
        raise InvalidLedger(shown, "not JSON") from None
    rows = document.get("requests") if isinstance(document, dict) else document
    if not isinstance(rows, list):
        raise InvalidLedger(shown, "expected a list of requests (agentdb privacy requests --json)")
    for row in rows:
        if not (isinstance(row, dict) and isinstance(row.get("id"), int) and isinstance(row.get("user_id"), int)
                and row.get("kind") in ledger.KINDS and row.get("status") in ledger.STATUSES):
            raise InvalidLedger(shown, "a request lacks an integer id, user_id, or a known kind and status")
    return rows


def _from_database(url: str) -> list[dict[str, Any]]:
    target = resolve(url)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            found = [r.as_dict() for r in ledger.list_requests(connection, kind="erasure")]
            connection.rollback()
            return found
    finally:
        engine.dispose()


def _merge(connection: sa.Connection, requests: Sequence[dict[str, Any]]) -> int:
    """Copy into this ledger the requests it lacks; their id is kept when free.  Returns how many."""
    copied = 0
    for request in requests:
        existing = ledger.get_request(connection, int(request["id"]))
        if existing is not None and existing.user_id == request["user_id"] and existing.kind == request["kind"]:
            continue
        received = request.get("received_at")
        received_at = datetime.fromisoformat(received) if isinstance(received, str) else received
        new_id = ledger.open_request(connection, str(request["kind"]), int(request["user_id"]),
                                     status=str(request["status"]), received_at=received_at,
                                     request_id=None if existing is not None else int(request["id"]))
        completed = request.get("completed_at")
        ledger.update_request(connection, new_id, rows_affected=request.get("rows_affected") or {},
                              proof_hits=request.get("proof_hits"),
                              completed_at=datetime.fromisoformat(completed) if isinstance(completed, str)
                              else completed or True)
        request["id"] = new_id
        copied += 1
    if copied:
        execute(connection, "SELECT setval(pg_get_serial_sequence('agentdb.privacy_requests', 'id'), "
                "greatest((SELECT max(id) FROM agentdb.privacy_requests), 1))")
    return copied


def reapply_erasures(
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    from_database: str | None = None,
    ledger_file: str | Path | None = None,
    dry_run: bool = False,
    proof: bool = True,
    lock_timeout: float | None = None,
    lock_retries: int | None = None,
) -> ReapplyReport:
    """Erase again every user of a completed erasure request; see the module docstring for the sources."""
    if from_database and ledger_file:
        raise AgentdbError("give --from-database or --ledger, not both")
    started = time.monotonic()
    settings = _settings(database_url, data_dir, lock_timeout, lock_retries)
    if ledger_file is not None:
        source, outside = "ledger file", _from_file(Path(ledger_file))
    elif from_database is not None:
        source, outside = f"ledger of {resolve(from_database).redacted()}", _from_database(from_database)
    else:
        source, outside = "database's own ledger", None
    target = resolve(settings.database_url, settings.data_dir)
    engine = create_engine(target)
    report = ReapplyReport(source, dry_run=dry_run)
    values: dict[int, list[ProofValue]] = {}
    try:
        with connect(engine, target) as connection:
            ledger.ensure_ledger(connection)
            candidates = [r for r in (outside if outside is not None else [
                r.as_dict() for r in ledger.list_requests(connection, kind="erasure")])
                if r["kind"] == "erasure" and r["status"] in COMPLETED]
            candidates.sort(key=lambda r: int(r["id"]))
            if outside is not None and not dry_run:
                report.merged = _merge(connection, candidates)
            connection.commit()
            plan = build_plan(connection)
            key = ledger.pseudonym_key(connection)
            connection.rollback()
            if not dry_run:
                prepare_indexes(connection, plan, settings)
            seen: set[int] = set()
            for request in candidates:
                user_id = int(request["user_id"])
                if user_id in seen:
                    continue
                seen.add(user_id)
                erased, found = _erase_one(connection, plan, key, user_id, settings, dry_run=dry_run,
                                           reapply=int(request["id"]))
                report.requests.append(erased)
                if found and erased.request_id is not None:
                    values[erased.request_id] = found
            if proof and not dry_run:
                _prove(connection, report.requests, values, settings)
            if not dry_run and report.erased_again:
                ledger.record_event(connection, "privacy.reapply", f"{len(report.erased_again)} erasures applied again",
                                    {"requests": [r.request_id for r in report.erased_again],
                                     "merged": report.merged})
                connection.commit()
    finally:
        engine.dispose()
    report.seconds = time.monotonic() - started
    return report
