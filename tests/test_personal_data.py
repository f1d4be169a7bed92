"""The personal-data registry: declared once on the Core columns, complete, and the source of the analyst grants."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import agentdb
from agentdb.schema import metadata
from agentdb.schema.personal_data import (
    PII,
    Category,
    Erasure,
    analyst_columns,
    declared_columns,
    registry,
    undeclared_columns,
    user_linked_tables,
)


def test_every_text_and_json_column_of_a_user_linked_table_is_declared() -> None:
    assert undeclared_columns() == []


def test_an_undeclared_text_column_of_a_user_linked_table_is_reported() -> None:
    probe = sa.Table(
        "probe_notes", metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("playlist_id", sa.BigInteger, sa.ForeignKey("playlists.id")),
        sa.Column("note", sa.Text),
        sa.Column("extra", sa.JSON),
        sa.Column("checked", sa.Text, info={"pii": PII.none("a probe")}),
    )
    try:
        assert "probe_notes" in user_linked_tables()  # probe_notes -> playlists -> users
        assert undeclared_columns() == [("probe_notes", "note"), ("probe_notes", "extra")]
        assert ("probe_notes", "note") not in set(declared_columns())
        assert ("probe_notes", "checked") in set(declared_columns())
    finally:
        metadata.remove(probe)


def test_declarations_say_category_erasure_and_reason() -> None:
    by_column = {(d.table, d.column): d for d in registry()}

    email = by_column["users", "email"]
    assert (email.category, email.erasure, email.source) == (Category.CONTACT, Erasure.DELETE_ROW, "declared")
    derived = by_column["event_logs", "user_id"]
    assert (derived.category, derived.erasure, derived.source) == (Category.PSEUDONYMOUS, Erasure.NULLIFY,
                                                                   "foreign key")
    assert by_column["audit_log", "actor"].pii.reason
    assert by_column["tracks", "title"].source == "not user-linked"
    assert {(t, c) for t, c in declared_columns()} == {(t.name, c.name) for t in metadata.tables.values()
                                                       for c in t.columns}


@pytest.mark.parametrize(
    "make",
    [lambda: PII(Category.CONTACT), lambda: PII(Category.FREE_TEXT, Erasure.KEEP), lambda: PII.none(" "),
     lambda: PII(Category.NONE, Erasure.NULLIFY, "x")],
    ids=["personal-without-erasure", "keep-without-reason", "none-without-reason", "none-with-erasure"],
)
def test_an_incomplete_declaration_is_rejected(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_analysts_get_analytics_and_non_personal_columns_only() -> None:
    granted = analyst_columns()

    assert granted["analytics"] == [c.name for c in metadata.tables["analytics"].columns]
    assert "email" not in granted["users"] and "display_name" not in granted["users"]
    assert "body" not in granted.get("ai_content_versions", [])
    assert "old_values" not in granted["audit_log"]
    for declaration in registry():
        if declaration.column in granted.get(declaration.table, []):
            assert not declaration.pii.personal or declaration.pii.analyst


def test_the_registry_is_public_api() -> None:
    assert "personal_data_registry" in agentdb.__all__
    assert agentdb.personal_data_registry() == registry()
