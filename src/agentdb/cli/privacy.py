"""``agentdb privacy``: the CLI of :mod:`agentdb.privacy` (erase, export, hold, release, requests, reapply).

Nothing printed here is personal data: user ids, request ids, table names and
counts only.  The export's file name is not echoed either (it often names the
person): its size and sha256 say which file was written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentdb.cli._common import (
    JsonOpt,
    LockTimeoutOpt,
    RetriesOpt,
    compact_table,
    duration,
    new_group,
    out,
    print_json,
    state,
)

app = new_group(help="GDPR: erase a person and prove it, export their data, legal holds, reapply after restore.")

UserArg = Annotated[int, typer.Argument(help="The user id (users.id).", min=1)]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the plan per table; change nothing.")]
NoProofOpt = Annotated[bool, typer.Option("--no-proof", help="Skip the scan of every column afterwards.")]

_EXIT = {"refused": 1, "unknown": 2, "unproven": 5, "failed": 6}


def _changes_table(changes: dict[str, dict[str, int]]) -> None:
    table = compact_table("table", "deleted", "nullified", "pseudonymised")
    for name, actions in changes.items():
        table.add_row(name, *(f"{actions.get(verb, 0):,}" for verb in ("deleted", "nullified", "pseudonymised")))
    out.print(table)


def _proof_line(report: object) -> str:
    from agentdb.privacy import ErasureReport

    assert isinstance(report, ErasureReport)
    proof = report.proof
    if proof is None:
        return "proof: not run"
    line = (f"proof: {proof.hits} hit(s) in {proof.relations} tables, {proof.columns} columns, "
            f"{proof.rows:,} rows ({proof.seconds:.1f} s)")
    if proof.shared_hits:
        line += f"; {proof.shared_hits} cell(s) hold a value another person shares"
    if proof.skipped:
        line += f"; {proof.skipped} value(s) too short to search"
    return line


def _print_erasure(report: object) -> None:
    from agentdb.privacy import ErasureReport

    assert isinstance(report, ErasureReport)
    who = f"user {report.user_id}"
    if report.dry_run:
        if report.status == "refused":
            out.print(f"dry run: {who} is under legal hold (request {report.hold_id}): erasure would be refused")
            return
        if report.status == "nothing":
            out.print(f"dry run: {who}: nothing to erase (erased by request {report.erased_by})")
            return
        out.print(f"dry run: erasing {who} would change {report.rows:,} rows in {len(report.changes)} tables; "
                  "nothing was changed")
        _changes_table(report.changes)
        if report.audit_rows_written:
            out.print(f"plus {report.audit_rows_written} audit rows the erasure writes, then pseudonymises")
        scans = "; ".join(report.seq_scans) if report.seq_scans else "none: every statement uses an index"
        out.print(f"sequential scans: {scans}")
        if report.indexed:
            out.print(f"archive copies to index first: {len(report.indexed)}")
        return
    if report.status == "nothing":
        out.print(f"{who}: nothing to erase, erased by request {report.erased_by}; nothing was changed")
        return
    if report.error:
        out.print(f"{who}: {report.status}: {report.error}")
        return
    out.print(f"erased {who} (request {report.request_id}): {report.rows:,} rows in {len(report.changes)} tables, "
              f"one transaction, {report.seconds * 1000:.0f} ms")
    _changes_table(report.changes)
    out.print(_proof_line(report))
    if report.proof is not None:
        for where, count in report.proof.locations.items():
            out.print(f"  still found in {where}: {count} cell(s)")
        for where in report.proof.unscanned:
            out.print(f"  not scanned: {where}")
    if report.unmapped:
        out.print(f"archive tables of no declared table (scanned, not erased): {', '.join(report.unmapped)}")


@app.command("erase")
def erase(
    user_ids: Annotated[list[int] | None, typer.Argument(help="User ids; one transaction each.", min=1,
                                                         show_default=False)] = None,
    pending: Annotated[bool, typer.Option("--pending", help="Process the ledger's pending requests.")] = False,
    dry_run: DryRunOpt = False,
    no_proof: NoProofOpt = False,
    lock_timeout: LockTimeoutOpt = None,
    lock_retries: RetriesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Erase each user everywhere (archive and audit too), in one transaction each, and prove it."""
    from agentdb.errors import AgentdbError
    from agentdb.privacy import erase_users

    if bool(user_ids) == pending:
        raise AgentdbError("give user ids or --pending (the ledger's queue), not both and not neither")
    state.on_interrupt = lambda: ("the erasure in progress was rolled back (erasures already reported stay done); "
                                  "run the command again to finish")
    reports = erase_users(None if pending else list(user_ids or []), database_url=state.database_url,
                          data_dir=state.data_dir, dry_run=dry_run, proof=not no_proof,
                          lock_timeout=duration(lock_timeout, "lock_timeout"), lock_retries=lock_retries,
                          stop_on_error=len(user_ids or []) == 1)
    if as_json:
        print_json([r.as_dict() for r in reports] if pending or len(reports) != 1 else reports[0].as_dict())
    elif len(reports) == 1:
        _print_erasure(reports[0])
    else:
        table = compact_table("user", "request", "status", "rows", "hits", "ms")
        for r in reports:
            table.add_row(str(r.user_id), str(r.request_id or ""), r.status, f"{r.rows:,}",
                          str(r.proof.hits) if r.proof else "", f"{r.seconds * 1000:.0f}")
        out.print(table)
        out.print(f"{len(reports)} request(s); " + (_proof_line(reports[0]) if reports and reports[0].proof
                                                     else "proof: not run"))
    code = max((_EXIT.get(r.status, 0) for r in reports), default=0)
    if code:
        raise typer.Exit(code)


@app.command("export")
def export(user_id: UserArg, file: Annotated[Path, typer.Argument(help="Where to write the JSON document.")],
           as_json: JsonOpt = False) -> None:
    """Write everything held about the user, with each column's category, as one JSON document."""
    from agentdb.privacy import export_user

    report = export_user(user_id, file, database_url=state.database_url, data_dir=state.data_dir)
    if as_json:
        print_json(report.as_dict())
        return
    out.print(f"exported user {user_id} (request {report.request_id}): {report.total_rows:,} rows from "
              f"{len(report.rows)} tables, {report.bytes:,} bytes, sha256 {report.sha256[:16]}")
    for name, withheld in report.withheld.items():
        out.print(f"  withheld from {name}: {', '.join(sorted(withheld))}")


@app.command("hold")
def hold(
    user_id: UserArg,
    reason: Annotated[str, typer.Option("--reason", help="A case reference; never a name or an e-mail.")],
    as_json: JsonOpt = False,
) -> None:
    """Put the user under legal hold: erasure is refused (and recorded) until released."""
    from agentdb.privacy import place_hold

    report = place_hold(user_id, reason, database_url=state.database_url, data_dir=state.data_dir)
    if as_json:
        print_json(report.as_dict())
    elif report.changed:
        out.print(f"user {user_id} is under legal hold (request {report.request_id}): erasure is refused")
    else:
        out.print(f"user {user_id} was already under legal hold (request {report.request_id}); nothing changed")


@app.command("release")
def release(user_id: UserArg, as_json: JsonOpt = False) -> None:
    """End the user's legal hold."""
    from agentdb.privacy import release_hold

    report = release_hold(user_id, database_url=state.database_url, data_dir=state.data_dir)
    if as_json:
        print_json(report.as_dict())
    else:
        out.print(f"legal hold of user {user_id} released (request {report.request_id})")


@app.command("requests")
def requests(
    user_id: Annotated[int | None, typer.Option("--user", help="Only this user id.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="erasure, export or hold.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="pending, done, refused...")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Open requests past their deadline.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N, newest first.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The request ledger: no personal data, safe to keep outside the database's backups (--json)."""
    from agentdb.privacy import privacy_requests

    found = privacy_requests(database_url=state.database_url, data_dir=state.data_dir, user_id=user_id, kind=kind,
                             status=status, overdue=overdue, limit=limit)
    if as_json:
        print_json({"requests": [r.as_dict() for r in found]})
        return
    table = compact_table("id", "kind", "user", "received", "deadline", "status", "rows", "hits")
    for r in found:
        rows = sum(sum(actions.values()) for actions in r.rows_affected.values())
        table.add_row(str(r.id), r.kind, str(r.user_id), f"{r.received_at:%Y-%m-%d %H:%M}",
                      f"{r.deadline:%Y-%m-%d}" if r.deadline else "", r.status, f"{rows:,}" if rows else "",
                      "" if r.proof_hits is None else str(r.proof_hits))
    out.print(table)
    out.print(f"{len(found)} request(s)")


@app.command("reapply")
def reapply(
    from_database: Annotated[str | None, typer.Option("--from-database", help="Read the ledger of this URL.")] = None,
    ledger_file: Annotated[Path | None, typer.Option("--ledger", help="A `privacy requests --json` file.")] = None,
    dry_run: DryRunOpt = False,
    no_proof: NoProofOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase again every user of a completed erasure request (after a backup was restored)."""
    from agentdb.privacy import reapply_erasures

    state.on_interrupt = lambda: "the erasure in progress was rolled back; run reapply again to finish"
    report = reapply_erasures(database_url=state.database_url, data_dir=state.data_dir, from_database=from_database,
                              ledger_file=ledger_file, dry_run=dry_run, proof=not no_proof)
    if as_json:
        print_json(report.as_dict())
    else:
        verb = "would erase" if dry_run else "erased"
        out.print(f"{len(report.requests)} completed erasure(s) in the {report.source}; {verb} again: "
                  f"{len(report.erased_again)}")
        if report.merged:
            out.print(f"copied into this database's ledger: {report.merged} request(s)")
        if report.erased_again:
            table = compact_table("request", "user", "rows", "hits")
            for r in report.erased_again:
                table.add_row(str(r.request_id), str(r.user_id), f"{r.rows:,}", str(r.proof.hits) if r.proof else "")
            out.print(table)
    if any(r.proof is not None and not r.proof.proven for r in report.requests):
        raise typer.Exit(5)
