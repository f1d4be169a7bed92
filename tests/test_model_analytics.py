"""Migration 005: analytics, event logs, the trigger-filled audit log and consent, with the seed queries."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from _model_db import connect, insert, make_artist, make_track, make_user, rejected
from psycopg import errors, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from agentdb.schema.analytics import AUDITED_TABLES

Conn = psycopg.Connection[Any]

SEED_AUDIT = "SELECT * FROM audit_log WHERE entity_type = 'user' AND entity_id = 123;"
SEED_CONSENT = "SELECT * FROM consent WHERE granted = false;"
SEED_MONTHLY = "SELECT date_trunc('month', created_at) AS month, COUNT(*) FROM analytics GROUP BY month;"


@pytest.fixture
def db(migrated_url: str) -> Iterator[Conn]:
    with connect(migrated_url) as conn:
        conn.row_factory = dict_row  # type: ignore[assignment]
        yield conn


def as_actor(db: Conn, actor: str) -> None:
    """``SET LOCAL agentdb.actor``: only valid inside the current transaction."""
    db.execute(sql.SQL("SET LOCAL agentdb.actor = {}").format(sql.Literal(actor)))


def audit_rows(db: Conn, entity_type: str, entity_id: int) -> list[dict[str, Any]]:
    return db.execute(
        "SELECT * FROM audit_log WHERE entity_type = %s AND entity_id = %s ORDER BY id", [entity_type, entity_id],
    ).fetchall()


# --- the seed queries, exactly as written -------------------------------------------------------------------


def test_seed_query_finds_the_audit_trail_of_user_123(db: Conn) -> None:
    with db.transaction():
        as_actor(db, "support:jane")
        make_user(db, id=123, email="u123@example.com")
        make_user(db, id=124, email="u124@example.com")
        db.execute("UPDATE users SET display_name = 'Renamed' WHERE id = 123")

    rows = db.execute(SEED_AUDIT).fetchall()

    assert [(r["entity_id"], r["action"], r["actor"]) for r in rows] == [
        (123, "insert", "support:jane"), (123, "update", "support:jane"),
    ]
    assert rows[1]["changed_columns"] == ["display_name"]
    assert rows[1]["old_values"]["display_name"] == "Test User"
    assert rows[1]["new_values"]["display_name"] == "Renamed"


def test_seed_query_finds_consent_not_granted(db: Conn) -> None:
    user = make_user(db)
    insert(db, "consent", user_id=user, purpose="analytics", granted=True, policy_version="2026-05", source="signup")
    refused = insert(db, "consent", user_id=user, purpose="marketing", granted=False, policy_version="2026-05",
                     source="banner")
    revoked = insert(db, "consent", user_id=user, purpose="ai_training", granted=True, policy_version="2026-05",
                     source="settings")
    db.execute("UPDATE consent SET granted = false WHERE id = %s", [revoked])

    rows = db.execute(SEED_CONSENT).fetchall()

    assert sorted(r["id"] for r in rows) == sorted([refused, revoked])


def test_seed_query_counts_analytics_events_per_month(db: Conn) -> None:
    user, track = make_user(db), make_track(db)
    times = ["2026-01-03T10:00:00Z", "2026-01-31T23:59:59Z", "2026-02-01T00:00:00Z", "2026-03-15T12:00:00Z",
             "2026-03-16T12:00:00Z", "2026-03-17T12:00:00Z"]
    for at in times:
        insert(db, "analytics", user_id=user, track_id=track, event_type="play", created_at=at, country="DE",
               device="mobile", properties=Jsonb({"ms_played": 30_000}))

    db.execute("SET TIME ZONE 'UTC'")
    rows = db.execute(SEED_MONTHLY).fetchall()

    counts = {r["month"].astimezone(UTC).strftime("%Y-%m"): r["count"] for r in rows}
    assert counts == {"2026-01": 2, "2026-02": 1, "2026-03": 3}


# --- audit triggers ------------------------------------------------------------------------------------------


def _users(db: Conn) -> int:
    return make_user(db)


def _artists(db: Conn) -> int:
    return make_artist(db, user_id=make_user(db))


def _consent(db: Conn) -> int:
    return insert(db, "consent", user_id=make_user(db), purpose="personalization", granted=True,
                  policy_version="1.0", source="signup")


def _role_id(db: Conn, name: str) -> int:
    row = db.execute("SELECT id FROM collaboration_roles WHERE name = %s", [name]).fetchone()
    assert row is not None
    return int(row["id"])


def _members(db: Conn) -> int:
    collab = insert(db, "collaborations", title="Split single")
    return insert(db, "collaboration_members", collaboration_id=collab, user_id=make_user(db),
                  role_id=_role_id(db, "vocalist"))


def _roles(db: Conn) -> int:
    return insert(db, "collaboration_roles", name="arranger", permissions=["view"])


# table, entity_type, how to create a row, an UPDATE ... SET clause, the columns it changes
AUDIT_CASES: list[tuple[str, str, Callable[[Conn], int], str, list[str]]] = [
    ("users", "user", _users, "display_name = 'New name', country = 'FR'", ["country", "display_name"]),
    ("artists", "artist", _artists, "name = 'New name'", ["name"]),
    ("consent", "consent", _consent, "granted = false", ["granted", "revoked_at"]),
    ("collaboration_members", "collaboration_member", _members, "left_at = now() + interval '1 day'", ["left_at"]),
    ("collaboration_roles", "collaboration_role", _roles, "permissions = ARRAY['view', 'edit']", ["permissions"]),
]


def test_audit_cases_cover_every_audited_table() -> None:
    cases = {(table, entity_type) for table, entity_type, *_ in AUDIT_CASES} | {("api_keys", "api_key")}
    assert cases == {(t.table, t.entity_type) for t in AUDITED_TABLES}


@pytest.mark.parametrize(("table", "entity_type", "create", "assignments", "changed"), AUDIT_CASES,
                         ids=[case[0] for case in AUDIT_CASES])
def test_insert_update_delete_are_audited_with_actor_and_changed_columns(
    db: Conn, table: str, entity_type: str, create: Callable[[Conn], int], assignments: str, changed: list[str],
) -> None:
    with db.transaction():
        as_actor(db, "api:alice")
        row_id = create(db)
    with db.transaction():
        as_actor(db, "api:bob")
        db.execute(sql.SQL("UPDATE {} SET " + assignments + " WHERE id = %s").format(sql.Identifier(table)), [row_id])
    with db.transaction():
        as_actor(db, "admin:carol")
        db.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(table)), [row_id])

    rows = audit_rows(db, entity_type, row_id)

    assert [(r["action"], r["actor"]) for r in rows] == [
        ("insert", "api:alice"), ("update", "api:bob"), ("delete", "admin:carol"),
    ]
    inserted, updated, deleted = rows
    assert inserted["old_values"] is None and inserted["new_values"]["id"] == row_id
    assert "id" in inserted["changed_columns"] and "updated_at" not in inserted["changed_columns"]
    assert updated["changed_columns"] == changed
    assert all(updated["old_values"][c] != updated["new_values"][c] for c in changed)
    assert deleted["new_values"] is None and deleted["old_values"]["id"] == row_id
    assert len({r["transaction_id"] for r in rows}) == 3


def test_actor_falls_back_to_the_database_role(db: Conn) -> None:
    user = make_user(db)
    role = db.execute("SELECT current_user AS role").fetchone()
    assert role is not None
    assert [r["actor"] for r in audit_rows(db, "user", user)] == [role["role"]]


def test_update_that_changes_nothing_writes_no_audit_row(db: Conn) -> None:
    user = make_user(db)
    db.execute("UPDATE users SET display_name = display_name WHERE id = %s", [user])
    assert [r["action"] for r in audit_rows(db, "user", user)] == ["insert"]


def test_changes_in_one_transaction_share_a_transaction_id(db: Conn) -> None:
    with db.transaction():
        user = make_user(db)
        artist = make_artist(db, user_id=user)
        txid = db.execute("SELECT txid_current() AS txid").fetchone()
    assert txid is not None
    assert {r["transaction_id"] for r in audit_rows(db, "user", user) + audit_rows(db, "artist", artist)} == {
        txid["txid"]
    }


def test_api_key_hash_never_reaches_the_audit_log(db: Conn) -> None:
    secret_hash = hashlib.sha256(b"ak_live_123.secret").hexdigest()
    key = insert(db, "api_keys", user_id=make_user(db), name="ci", key_prefix="ak_live_1", key_hash=secret_hash,
                 scopes=["ai:read"])
    db.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s", [key])
    db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", [key])

    rows = audit_rows(db, "api_key", key)

    assert [(r["action"], r["changed_columns"]) for r in rows][1:] == [("update", ["revoked_at"])]
    dump = db.execute("SELECT string_agg(audit_log::text, ' ') AS all FROM audit_log").fetchone()
    assert dump is not None and secret_hash not in dump["all"]


def test_audit_rows_about_a_user_survive_erasure_and_can_be_found_by_subject(db: Conn) -> None:
    user = make_user(db)
    artist = make_artist(db, user_id=user)
    consent = insert(db, "consent", user_id=user, purpose="marketing", granted=True, policy_version="1",
                     source="api")
    db.execute("DELETE FROM users WHERE id = %s", [user])

    rows = db.execute("SELECT entity_type, entity_id, action FROM audit_log WHERE subject_user_id = %s", [user])
    found = {(r["entity_type"], r["entity_id"], r["action"]) for r in rows.fetchall()}

    assert {("user", user, "insert"), ("user", user, "delete"), ("artist", artist, "insert"),
            ("consent", consent, "insert"), ("consent", consent, "delete")} <= found
    # the artist outlives its manager (SET NULL), and that change is audited too
    assert ("artist", artist, "update") in found


# --- consent ------------------------------------------------------------------------------------------------


def test_revoking_consent_sets_the_revoked_time(db: Conn) -> None:
    consent = insert(db, "consent", user_id=make_user(db), purpose="analytics", granted=True, policy_version="3.1",
                     source="signup")
    with db.transaction():
        before = db.execute("SELECT granted_at, revoked_at, now() AS now FROM consent WHERE id = %s", [consent])
        first = before.fetchone()
    assert first is not None and first["granted_at"] is not None and first["revoked_at"] is None

    with db.transaction():
        db.execute("UPDATE consent SET granted = false WHERE id = %s", [consent])
        now = db.execute("SELECT now() AS now").fetchone()
    row = db.execute("SELECT * FROM consent WHERE id = %s", [consent]).fetchone()

    assert row is not None and now is not None
    assert row["revoked_at"] == now["now"]
    assert row["granted_at"] == first["granted_at"]
    assert [r["id"] for r in db.execute(SEED_CONSENT).fetchall()] == [consent]


def test_granting_again_clears_the_revoked_time(db: Conn) -> None:
    consent = insert(db, "consent", user_id=make_user(db), purpose="analytics", granted=True, policy_version="1",
                     source="signup")
    db.execute("UPDATE consent SET granted = false WHERE id = %s", [consent])
    db.execute("UPDATE consent SET granted = true, policy_version = '2', source = 'settings' WHERE id = %s",
               [consent])
    row = db.execute("SELECT granted, granted_at, revoked_at, created_at FROM consent WHERE id = %s",
                     [consent]).fetchone()
    assert row is not None and row["granted"] and row["revoked_at"] is None and row["granted_at"] is not None


def test_consent_is_one_row_per_user_and_known_purpose(db: Conn) -> None:
    user = make_user(db)
    insert(db, "consent", user_id=user, purpose="marketing", granted=False, policy_version="1", source="banner")
    with rejected(errors.UniqueViolation, "consent_user_id_purpose_key"):
        insert(db, "consent", user_id=user, purpose="marketing", granted=True, policy_version="1", source="banner")
    with rejected(errors.CheckViolation, "consent_purpose_valid_check"):
        insert(db, "consent", user_id=user, purpose="everything", granted=True, policy_version="1", source="banner")
    with rejected(errors.CheckViolation, "consent_granted_times_check"):
        insert(db, "consent", user_id=user, purpose="analytics", granted=True, policy_version="1", source="banner",
               revoked_at=datetime(2026, 1, 1, tzinfo=UTC))


# --- analytics and event logs -------------------------------------------------------------------------------


@pytest.mark.parametrize("country", ["de", "DEU", "D", "1A"])
def test_analytics_event_with_bad_country_code_is_rejected(db: Conn, country: str) -> None:
    with rejected(errors.CheckViolation, "analytics_country_format_check"):
        insert(db, "analytics", event_type="play", country=country)


@pytest.mark.parametrize(("values", "constraint"), [
    ({"event_type": "Play Track"}, "analytics_event_type_format_check"),
    ({"event_type": "play", "device": "fridge"}, "analytics_device_valid_check"),
    ({"event_type": "play", "properties": Jsonb(["not", "an", "object"])}, "analytics_properties_object_check"),
])
def test_malformed_analytics_event_is_rejected(db: Conn, values: dict[str, Any], constraint: str) -> None:
    with rejected(errors.CheckViolation, constraint):
        insert(db, "analytics", **values)


def test_analytics_created_at_is_required_and_part_of_the_key(db: Conn) -> None:
    with rejected(errors.NotNullViolation):
        insert(db, "analytics", event_type="play", created_at=None)
    key = db.execute(
        "SELECT array_agg(a.attname::text ORDER BY k.ord) AS cols FROM pg_constraint c"
        " CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
        " WHERE c.conrelid = 'public.analytics'::regclass AND c.contype = 'p'"
    ).fetchone()
    assert key is not None and key["cols"] == ["id", "created_at"]


def test_erasing_a_user_keeps_their_events_without_the_link(db: Conn) -> None:
    user = make_user(db)
    event = insert(db, "analytics", user_id=user, event_type="skip")
    log = insert(db, "event_logs", user_id=user, source="api", event_type="request.failed", level="error")
    db.execute("DELETE FROM users WHERE id = %s", [user])
    assert db.execute("SELECT user_id FROM analytics WHERE id = %s", [event]).fetchone() == {"user_id": None}
    assert db.execute("SELECT user_id FROM event_logs WHERE id = %s", [log]).fetchone() == {"user_id": None}


def test_event_log_level_must_be_known(db: Conn) -> None:
    with rejected(errors.CheckViolation, "event_logs_level_valid_check"):
        insert(db, "event_logs", source="worker", event_type="job.done", level="verbose")
