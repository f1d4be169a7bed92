"""Reading the request ledger: :func:`privacy_requests` (``agentdb privacy requests``)."""

from __future__ import annotations

from pathlib import Path

from agentdb.connection import connect, create_engine, resolve
from agentdb.migrate._common import settings_from
from agentdb.privacy import ledger
from agentdb.privacy.ledger import PrivacyRequest

__all__ = ["overdue_privacy_requests", "privacy_requests"]


def privacy_requests(
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    user_id: int | None = None,
    kind: str | None = None,
    status: str | None = None,
    overdue: bool = False,
    limit: int | None = None,
) -> list[PrivacyRequest]:
    """The ledger's requests, newest first (``overdue``: open ones past their deadline, oldest first).

    Read-only: a database without a ledger has no requests.  Nothing returned is personal data.
    """
    settings = settings_from(database_url, data_dir)
    target = resolve(settings.database_url, settings.data_dir)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            found = (ledger.overdue_requests(connection) if overdue else
                     ledger.list_requests(connection, user_id=user_id, kind=kind, status=status, limit=limit))
            connection.rollback()
            return found
    finally:
        engine.dispose()


def overdue_privacy_requests(*, database_url: str | None = None,
                             data_dir: str | Path | None = None) -> list[PrivacyRequest]:
    """Erasure and export requests still open after their legal deadline, oldest first (for the health check)."""
    return privacy_requests(database_url=database_url, data_dir=data_dir, overdue=True)
