"""The registry's rules for erasure: every column of a user-linked table declared, whatever its type; and checks.

``agentdb check`` and these tests fail on a column declared neither personal
nor not personal (a timestamp or a counter too: they say something about a
person), and on a declaration erasure could not carry out.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from _fixture_migrations import migrations_copy, write_migration

from agentdb import governance
from agentdb.privacy.rules import registry_problems, table_rules
from agentdb.schema import metadata
from agentdb.schema._pii import Category, Erasure, not_personal, personal
from agentdb.schema.personal_data import analyst_columns, registry, undeclared_columns


@pytest.fixture
def probe() -> Iterator[list[sa.Table]]:
    """Tables added to the schema declaration for one test, removed after it."""
    added: list[sa.Table] = []
    yield added
    for table in added:
        metadata.remove(table)


def test_the_project_declares_every_column_and_erasure_can_carry_out_every_declaration() -> None:
    assert undeclared_columns() == []
    assert registry_problems() == []


def test_a_non_text_column_of_a_user_linked_table_needs_a_declaration(probe: list[sa.Table]) -> None:
    probe.append(sa.Table(
        "probe_ratings", metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("playlist_id", sa.BigInteger, sa.ForeignKey("playlists.id", ondelete="CASCADE")),
        sa.Column("stars", sa.SmallInteger),  # undeclared: a number says how a person rated something
        sa.Column("rated_at", sa.DateTime(timezone=True)),  # undeclared: when they did
        sa.Column("public", sa.Boolean, info=not_personal("a display setting")),
    ))
    assert undeclared_columns() == [("probe_ratings", "stars"), ("probe_ratings", "rated_at")]
    assert [p.split(":")[0] for p in registry_problems()] == ["probe_ratings.stars", "probe_ratings.rated_at"]
    sources = {d.column: d.source for d in registry() if d.table == "probe_ratings"}
    assert sources == {"id": "key", "playlist_id": "key", "public": "declared"}


def test_agentdb_check_reports_the_registry_problems(probe: list[sa.Table], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    location = migrations_copy(tmp_path)
    monkeypatch.setenv("AGENTDB_SCRIPT_LOCATION", str(location))
    write_migration(location, "002_add_moods.py", revision="002", down_revision="001",
                    upgrade="op.create_table('probe_moods', sa.Column('id', sa.BigInteger(), primary_key=True),\n"
                            "    sa.Column('user_id', sa.BigInteger(),\n"
                            "              sa.ForeignKey('users.id', ondelete='CASCADE')),\n"
                            "    sa.Column('energy', sa.Integer()))",
                    downgrade="op.drop_table('probe_moods')")
    probe.append(sa.Table(
        "probe_moods", metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE")),
        sa.Column("energy", sa.Integer),
    ))

    report = governance.check(squawk=False)

    # Before, an integer column passed (only text, JSON and arrays needed a declaration): now both rules see it.
    assert [str(v) for v in report.violations] == [
        "002_add_moods.py: [personal-data] new column probe_moods.energy of user-linked table probe_moods is not "
        "in the personal-data registry; declare it (personal or not)",
        "agentdb/schema: [personal-data] probe_moods.energy: column of a user-linked table is declared neither "
        "personal nor not personal",
    ]
    probe[0].c.energy.info.update(personal(Category.BEHAVIOURAL, Erasure.DELETE_ROW))
    assert governance.check(squawk=False).ok


def test_declarations_erasure_could_not_carry_out_are_problems(probe: list[sa.Table]) -> None:
    probe.append(sa.Table(
        "probe_broken", metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("owner_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="RESTRICT"),
                  info=personal(Category.PSEUDONYMOUS, Erasure.NULLIFY)),
        sa.Column("device", sa.Text, nullable=False, info=personal(Category.BEHAVIOURAL, Erasure.NULLIFY)),
        sa.Column("score", sa.Integer, info=personal(Category.BEHAVIOURAL, Erasure.PSEUDONYMIZE)),
        sa.Column("note", sa.Text, info=personal(Category.FREE_TEXT, Erasure.DELETE_ROW)),
    ))
    problems = [p for p in registry_problems() if p.startswith("probe_broken")]
    assert problems == [
        "probe_broken.device: erasure NULLIFY on a NOT NULL column cannot run",
        "probe_broken.score: erasure PSEUDONYMIZE on a INTEGER column: no pseudonym fits it",
        "probe_broken.note: erasure DELETE_ROW, but erasure never deletes rows of probe_broken "
        "(no ON DELETE CASCADE path to users)",
        "probe_broken.owner_id: foreign key to users ON DELETE RESTRICT would stop erasure; "
        "declare CASCADE or SET NULL",
    ]


def test_row_timestamps_follow_their_table_and_the_analyst_grants_did_not_move() -> None:
    by_column = {(d.table, d.column): d for d in registry()}
    assert (by_column["users", "created_at"].category, by_column["users", "created_at"].erasure) == (
        Category.BEHAVIOURAL, Erasure.DELETE_ROW)
    assert by_column["event_logs", "created_at"].erasure is Erasure.KEEP
    assert not by_column["tracks", "created_at"].pii.personal
    assert by_column["audit_log", "entity_id"].category is Category.PSEUDONYMOUS
    assert table_rules()["ml_logs"].pseudonymize == ("error",)  # a CHECK needs a message on failed events
    # The declarations added for erasure keep every analyst grant migration 005 made.
    path = next(Path(__file__).parents[1].glob("src/agentdb/migrations/versions/005_*.py"))
    spec = importlib.util.spec_from_file_location("m005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    frozen = {table: list(columns) for table, columns in module._ANALYST_COLUMNS.items()}
    assert {t: c for t, c in analyst_columns().items() if t in frozen} == frozen
