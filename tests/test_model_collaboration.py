"""Migration 004: collaborations, members, artist matching and the append-only history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from _model_db import connect, insert, make_artist, make_model_version, make_user, rejected
from psycopg import errors


@pytest.fixture
def db(migrated_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with connect(migrated_url) as conn:
        yield conn


def _role(db: psycopg.Connection[Any], name: str) -> int:
    row = db.execute("SELECT id FROM collaboration_roles WHERE name = %s", [name]).fetchone()
    assert row is not None, f"role {name} is not seeded"
    return int(row[0])


def test_default_roles_are_seeded(db: psycopg.Connection[Any]) -> None:
    names = {row[0] for row in db.execute("SELECT name FROM collaboration_roles").fetchall()}
    assert {"owner", "producer", "songwriter", "featured_artist"} <= names


def test_member_is_exactly_one_artist_or_user_once_per_collaboration(db: psycopg.Connection[Any]) -> None:
    collab = insert(db, "collaborations", title="Summer EP", created_by_user_id=make_user(db))
    artist, user = make_artist(db), make_user(db)
    producer = _role(db, "producer")
    insert(db, "collaboration_members", collaboration_id=collab, artist_id=artist, role_id=producer)
    insert(db, "collaboration_members", collaboration_id=collab, user_id=user, role_id=_role(db, "owner"))
    with rejected(errors.UniqueViolation, "collaboration_members_collaboration_id_artist_id_key"):
        insert(db, "collaboration_members", collaboration_id=collab, artist_id=artist, role_id=producer)
    with rejected(errors.CheckViolation, "collaboration_members_one_member_check"):
        insert(db, "collaboration_members", collaboration_id=collab, artist_id=make_artist(db), user_id=make_user(db),
               role_id=producer)
    with rejected(errors.CheckViolation, "collaboration_members_one_member_check"):
        insert(db, "collaboration_members", collaboration_id=collab, role_id=producer)


def test_role_in_use_cannot_be_deleted(db: psycopg.Connection[Any]) -> None:
    role = insert(db, "collaboration_roles", name="beatmaker", permissions=["view", "edit"])
    collab = insert(db, "collaborations", title="Beat tape")
    insert(db, "collaboration_members", collaboration_id=collab, artist_id=make_artist(db), role_id=role)
    with rejected(errors.ForeignKeyViolation, "collaboration_members_role_id_fkey"):
        db.execute("DELETE FROM collaboration_roles WHERE id = %s", [role])
    with rejected(errors.CheckViolation, "collaboration_roles_permissions_valid_check"):
        insert(db, "collaboration_roles", name="admin", permissions=["view", "sudo"])


def test_valid_artist_match_is_accepted(db: psycopg.Connection[Any]) -> None:
    insert(db, "artist_matches", artist_id=make_artist(db), matched_artist_id=make_artist(db), score=0.87,
           model_version_id=make_model_version(db, name="artist-matcher"))


def test_artist_cannot_be_matched_with_itself(db: psycopg.Connection[Any]) -> None:
    artist = make_artist(db)
    with rejected(errors.CheckViolation, "artist_matches_not_self_check"):
        insert(db, "artist_matches", artist_id=artist, matched_artist_id=artist, score=0.9)


def test_same_pair_is_rejected_in_either_order(db: psycopg.Connection[Any]) -> None:
    a, b = make_artist(db), make_artist(db)
    insert(db, "artist_matches", artist_id=a, matched_artist_id=b, score=0.5)
    with rejected(errors.UniqueViolation, "artist_matches_pair_key"):
        insert(db, "artist_matches", artist_id=a, matched_artist_id=b, score=0.6)
    with rejected(errors.UniqueViolation, "artist_matches_pair_key"):
        insert(db, "artist_matches", artist_id=b, matched_artist_id=a, score=0.6)


@pytest.mark.parametrize("score", [-0.1, 1.5, float("nan")])
def test_match_score_outside_0_to_1_is_rejected(db: psycopg.Connection[Any], score: float) -> None:
    with rejected(errors.CheckViolation, "artist_matches_score_range_check"):
        insert(db, "artist_matches", artist_id=make_artist(db), matched_artist_id=make_artist(db), score=score)


def test_history_rejects_update_and_delete(db: psycopg.Connection[Any]) -> None:
    collab = insert(db, "collaborations", title="Album")
    entry = insert(db, "collaboration_history", collaboration_id=collab, event_type="created")
    with rejected(errors.InsufficientPrivilege):
        db.execute("UPDATE collaboration_history SET event_type = 'comment' WHERE id = %s", [entry])
    with rejected(errors.InsufficientPrivilege):
        db.execute("DELETE FROM collaboration_history WHERE id = %s", [entry])
    assert db.execute("SELECT event_type FROM collaboration_history WHERE id = %s", [entry]).fetchone() == ("created",)


def test_history_follows_referential_actions_of_erasure(db: psycopg.Connection[Any]) -> None:
    user = make_user(db)
    kept = insert(db, "collaborations", title="Kept")
    gone = insert(db, "collaborations", title="Gone")
    entry = insert(db, "collaboration_history", collaboration_id=kept, actor_user_id=user, event_type="comment")
    insert(db, "collaboration_history", collaboration_id=gone, actor_user_id=user, event_type="created")

    db.execute("DELETE FROM users WHERE id = %s", [user])
    db.execute("DELETE FROM collaborations WHERE id = %s", [gone])

    assert db.execute("SELECT actor_user_id FROM collaboration_history WHERE id = %s", [entry]).fetchone() == (None,)
    row = db.execute("SELECT count(*) FROM collaboration_history WHERE collaboration_id = %s", [gone]).fetchone()
    assert row == (0,)


def test_erasing_a_user_ends_their_memberships_and_keeps_their_collaborations(db: psycopg.Connection[Any]) -> None:
    user = make_user(db)
    collab = insert(db, "collaborations", title="Remix", created_by_user_id=user)
    insert(db, "collaboration_members", collaboration_id=collab, user_id=user, role_id=_role(db, "owner"))
    db.execute("DELETE FROM users WHERE id = %s", [user])
    assert db.execute("SELECT created_by_user_id FROM collaborations WHERE id = %s", [collab]).fetchone() == (None,)
    assert db.execute("SELECT count(*) FROM collaboration_members").fetchone() == (0,)
