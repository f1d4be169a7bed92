"""``python src/agentdb/migrations/versions/010_gdpr_erasure.py USER_ID``: the seed documents' erasure script.

Migration 010's ``__main__`` calls :func:`main`: it erases one user (with the
proof), or with ``--dry-run`` shows the plan, like ``agentdb privacy erase``.
``--apply`` (with ``--down``) brings the database to revision 010 instead, like
any other version file.
"""

from __future__ import annotations

import argparse
import json
import sys

from agentdb.errors import AgentdbError

__all__ = ["main"]


def main(file: str | None = None, argv: list[str] | None = None) -> None:
    given = list(sys.argv[1:] if argv is None else argv)
    if file is not None and "--apply" in given:
        from agentdb.runtime.script import main as migration_main

        migration_main(file, [a for a in given if a != "--apply"])
        return
    parser = argparse.ArgumentParser(description="Erase a user (GDPR art. 17) and prove it; see agentdb privacy.")
    parser.add_argument("user_id", type=int, help="the user id to erase")
    parser.add_argument("--database-url", help="PostgreSQL URL (default DATABASE_URL, else embedded)")
    parser.add_argument("--data-dir", help="embedded server data directory")
    parser.add_argument("--dry-run", action="store_true", help="show the plan per table, change nothing")
    parser.add_argument("--apply", action="store_true", help="bring the database to revision 010 instead")
    args = parser.parse_args(given)
    from agentdb.privacy import erase_user

    try:
        report = erase_user(args.user_id, database_url=args.database_url, data_dir=args.data_dir,
                            dry_run=args.dry_run)
    except AgentdbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    print(json.dumps(report.as_dict(), indent=1))
    if report.proof is not None and not report.proof.proven:
        raise SystemExit(5)
