"""GDPR: erase a person completely and prove it, give them their data, legal holds, reapply after a restore.

Everything derives from the personal-data registry
(:mod:`agentdb.schema.personal_data`): which rows go with a person, which stay
without them, which columns are cleared or pseudonymised, which values
identify them (for the proof), and each column's category (for the export).
One module per operation kind:

* :mod:`~agentdb.privacy.rules` -- what erasure does to each declared table, and the registry's checks;
* :mod:`~agentdb.privacy.plan` -- the relations (live, detached partitions, archive) and the statements, in order;
* :mod:`~agentdb.privacy.erase` -- :func:`erase_user`, :func:`erase_users`, :func:`request_erasure`;
* :mod:`~agentdb.privacy.proof` -- the identifying values in memory, and the scan of every column afterwards;
* :mod:`~agentdb.privacy.export` -- :func:`export_user` (GDPR art. 15 and 20);
* :mod:`~agentdb.privacy.holds` -- :func:`place_hold`, :func:`release_hold`;
* :mod:`~agentdb.privacy.reapply` -- :func:`reapply_erasures`, after a backup is restored;
* :mod:`~agentdb.privacy.ledger` -- ``agentdb.privacy_requests``, without personal data; read with
  :func:`privacy_requests` and :func:`overdue_privacy_requests` (:mod:`~agentdb.privacy.requests`).
"""

from __future__ import annotations

from agentdb.privacy.erase import ErasureReport, erase_user, erase_users, request_erasure
from agentdb.privacy.export import UserExportReport, export_user
from agentdb.privacy.holds import HoldReport, place_hold, release_hold
from agentdb.privacy.ledger import PrivacyRequest
from agentdb.privacy.proof import ProofReport
from agentdb.privacy.reapply import ReapplyReport, reapply_erasures
from agentdb.privacy.requests import overdue_privacy_requests, privacy_requests

__all__ = [
    "ErasureReport",
    "HoldReport",
    "PrivacyRequest",
    "ProofReport",
    "ReapplyReport",
    "UserExportReport",
    "erase_user",
    "erase_users",
    "export_user",
    "overdue_privacy_requests",
    "place_hold",
    "privacy_requests",
    "reapply_erasures",
    "release_hold",
    "request_erasure",
]
