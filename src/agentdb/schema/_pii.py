"""How a column declares the personal data it can hold: ``info={"pii": PII(...)}``.

The declaration sits on the :class:`~sqlalchemy.Column` in the schema modules,
so the registry (:mod:`agentdb.schema.personal_data`), the analyst grants
(:mod:`agentdb.access`) and the checks all read one source.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["PII", "Category", "Erasure", "RowTime", "not_personal", "personal", "row_time"]


class Category(StrEnum):
    """What kind of personal data a column holds."""

    #: Not personal data.
    NONE = "none"
    #: Names a person directly: display name, external account id.
    IDENTIFIER = "identifier"
    #: Reaches a person: e-mail address.
    CONTACT = "contact"
    #: Links rows to a person without naming them: user ids, session ids, request ids.
    PSEUDONYMOUS = "pseudonymous"
    #: Text a person wrote or that was written about them; may contain anything.
    FREE_TEXT = "free_text"
    #: Where a person is: country.
    LOCATION = "location"
    #: What a person did or was shown: events, clicks, sign-in times.
    BEHAVIOURAL = "behavioural"
    #: What a person chose: language, account state.
    PREFERENCE = "preference"
    #: What a person agreed to.
    CONSENT = "consent"
    #: Secrets or their hashes.
    CREDENTIAL = "credential"


class Erasure(StrEnum):
    """What erasing a person does to the column."""

    #: The row goes (usually by an ``ON DELETE CASCADE`` from ``users``).
    DELETE_ROW = "delete_row"
    #: The value is set to NULL; the row stays.
    NULLIFY = "nullify"
    #: The value is replaced by a pseudonym or scrubbed of the person's data; the row stays.
    PSEUDONYMIZE = "pseudonymize"
    #: The value is kept; :attr:`PII.reason` gives the legal reason.
    KEEP = "keep"


@dataclass(frozen=True)
class PII:
    """The personal-data declaration of one column.

    ``analyst`` lets the analyst role read a *personal* column (pseudonymous
    analytics); a non-personal column is always readable by analysts.
    """

    category: Category
    erasure: Erasure | None = None
    reason: str = ""
    analyst: bool = False

    def __post_init__(self) -> None:
        if self.category is Category.NONE:
            if self.erasure is not None or not self.reason.strip():
                raise ValueError("a non-personal column has no erasure rule and needs a reason: use PII.none(reason)")
            return
        if self.erasure is None:
            raise ValueError(f"personal data ({self.category}) needs an erasure rule")
        if self.erasure is Erasure.KEEP and not self.reason.strip():
            raise ValueError("erasure KEEP needs the legal reason")

    @classmethod
    def none(cls, reason: str) -> PII:
        """Declare a column not personal, saying why (the reason is required)."""
        return cls(Category.NONE, None, reason)

    @property
    def personal(self) -> bool:
        return self.category is not Category.NONE

    @property
    def analyst_visible(self) -> bool:
        """Whether the analyst role gets SELECT on the column."""
        return not self.personal or self.analyst


@dataclass(frozen=True)
class RowTime:
    """A timestamp that says when its row was written: personal data exactly when its row is about a person.

    The ``created_at``/``updated_at`` helpers of :mod:`agentdb.schema._base`
    declare it, because the same helper serves catalogue tables and users'
    tables.  The registry resolves it per table: behavioural data erased with
    the row in a table whose rows go with the person, kept (anonymised) in a
    table that only links to them, not personal elsewhere.
    """

    what: str = "when the row was written"


def personal(category: Category, erasure: Erasure, reason: str = "", *, analyst: bool = False) -> dict[str, PII]:
    """``Column(..., info=personal(Category.CONTACT, Erasure.DELETE_ROW))``."""
    return {"pii": PII(category, erasure, reason, analyst)}


def not_personal(reason: str) -> dict[str, PII]:
    """``Column(..., info=not_personal("a fixed list of values"))``."""
    return {"pii": PII.none(reason)}


def row_time(what: str = "when the row was written") -> dict[str, RowTime]:
    """``Column(..., info=row_time())``: see :class:`RowTime`."""
    return {"pii": RowTime(what)}
