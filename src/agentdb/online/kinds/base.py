"""The lifecycle every kind of online change implements.

A kind is one class in one file under ``kinds/``, registered in
:data:`agentdb.online.kinds.KINDS`.  It never executes anything itself: it
reads the catalogue and *designs* the change (validate), then *describes* it
as phases of steps (:class:`~agentdb.online.plan.Phase`) that the engine
executes, checkpoints, resumes and aborts.  The phases it may use, in order:

``start``
    create the new objects and install the capture (steps);
``copy``
    batches (a :class:`~agentdb.online.copy.CopySpec`);
``constraints``
    add and validate what must not be checked during the copy (steps);
``verify``
    compare source and new (a :class:`~agentdb.online.verify.VerifySpec`);
``cutover``
    the swap (a :class:`~agentdb.online.plan.CutoverSpec`);
``complete``
    drop what is no longer needed (steps).

plus :meth:`ChangeKind.abort_steps`, which must undo any prefix of ``start`` to
``verify`` with idempotent statements (``IF EXISTS``), so that an abort after a
crash at any point, or a second abort, leaves the source exactly as it was.
A kind that needs no copy (``create index concurrently``, ``add check not
valid then validate``) simply has no copy, verify or cutover phase.
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa

from agentdb.online.plan import Phase, Step
from agentdb.online.settings import OnlineSettings

__all__ = ["ChangeKind", "new_token"]


def new_token() -> str:
    """Eight hex digits naming a change's objects (``analytics__online_3fa2b1c4``...)."""
    return secrets.token_hex(4)


class ChangeKind(abc.ABC):
    """One kind of online change: validate and design, describe the phases, describe the abort."""

    #: The name users give (``agentdb online start --kind partition``).
    name: ClassVar[str]
    #: One line for listings.
    summary: ClassVar[str]
    #: The options :meth:`design` accepts, with their defaults.
    options: ClassVar[Mapping[str, Any]] = {}
    #: An expand/contract kind: the table stays usable by the old application until ``complete``
    #: (the contraction), so an abort is still possible while it waits there, expanded.
    abortable_until_complete: ClassVar[bool] = False

    @classmethod
    @abc.abstractmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        """Validate the change against the catalogue (read-only) and return its design: a JSON document
        naming every object the change will create, from which :meth:`phases` builds the same plan on
        every resume.  Refuses with :class:`~agentdb.errors.OnlineChangeRefused`, naming the problem."""

    @classmethod
    @abc.abstractmethod
    def phases(cls, design: Mapping[str, Any], settings: OnlineSettings) -> tuple[Phase, ...]:
        """The phases, in order."""

    @classmethod
    @abc.abstractmethod
    def abort_steps(cls, design: Mapping[str, Any]) -> tuple[Step, ...]:
        """Idempotent steps that remove everything the change created before its cut-over."""

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        """Whether the table already is what this change would make it (so a migration that runs the change
        again, after it completed, has nothing to do)."""
        return False

    @classmethod
    def rows_estimate(cls, connection: sa.Connection, design: Mapping[str, Any]) -> int:
        """Rows the copy will read, from the planner's statistics; 0 for a kind without a copy."""
        return 0

    @classmethod
    def objects(cls, design: Mapping[str, Any]) -> dict[str, list[str]]:
        """The objects this change creates, by sort (``tables``, ``functions``, ``triggers`` as
        ``schema.table.trigger``), for finding leftovers."""
        return {}

    @classmethod
    def notes(cls, design: Mapping[str, Any]) -> tuple[str, ...]:
        """Things a reviewer of the plan should know."""
        return ()
