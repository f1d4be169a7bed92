"""The bulk-change guard on users, consent and audit_log: refusal, its record in event_logs, opt-in, erasure."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from agentdb import guarded
from agentdb.errors import BulkChangeRefused
from agentdb.guards import DEFAULT_LIMIT, EVENT_TYPE, SQLSTATE

Conn = psycopg.Connection[Any]


@pytest.fixture
def db(migrated_url: str) -> Iterator[Conn]:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        yield conn


def _users(db: Conn, count: int) -> list[int]:
    rows = db.execute(
        "INSERT INTO users (email, display_name) "
        "SELECT 'g' || g || %s || '@example.com', 'Guard Test' FROM generate_series(1, %s) AS g RETURNING id",
        [uuid.uuid4().hex[:6], count],
    ).fetchall()
    return [int(r[0]) for r in rows]


def _refusals(db: Conn) -> list[dict[str, Any]]:
    return [r[0] for r in db.execute("SELECT details FROM event_logs WHERE event_type = %s ORDER BY id", [EVENT_TYPE])]


def _count(db: Conn, table: str) -> int:
    row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def test_mass_delete_of_users_is_refused_and_recorded_in_event_logs(db: Conn) -> None:
    _users(db, DEFAULT_LIMIT + 1)

    with pytest.raises(BulkChangeRefused) as caught, guarded(db, source="api", request_id="req-1") as conn:
        with conn.transaction():
            conn.execute("DELETE FROM users")

    assert _count(db, "users") == DEFAULT_LIMIT + 1
    refusal = caught.value
    assert (refusal.table, refusal.operation, refusal.users, refusal.limit) == (
        "public.users", "DELETE", DEFAULT_LIMIT + 1, DEFAULT_LIMIT)
    row = db.execute("SELECT level, source, message, details, request_id FROM event_logs WHERE id = %s",
                     [refusal.event_log_id]).fetchone()
    assert row is not None
    level, source, message, details, request_id = row
    assert (level, source, request_id) == ("warning", "api", "req-1")
    assert details == {"table": "public.users", "operation": "DELETE", "users": DEFAULT_LIMIT + 1,
                       "rows": DEFAULT_LIMIT + 1, "limit": DEFAULT_LIMIT, "sqlstate": SQLSTATE}
    assert "refused: DELETE on public.users" in message


def test_mass_update_of_consent_is_refused_and_recorded_through_a_sqlalchemy_connection(
    db: Conn, migrated_url: str
) -> None:
    for user in _users(db, 4):
        db.execute("INSERT INTO consent (user_id, purpose, granted, policy_version, source) "
                   "VALUES (%s, 'marketing', true, '1.0', 'signup')", [user])
    engine = sa.create_engine(sa.make_url(migrated_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn, pytest.raises(BulkChangeRefused) as caught, guarded(conn) as guarded_conn:
            guarded_conn.execute(sa.text("SET agentdb.bulk_change_limit = 3"))
            guarded_conn.execute(sa.text("UPDATE consent SET granted = false"))
    finally:
        engine.dispose()

    assert caught.value.operation == "UPDATE" and caught.value.users == 4 and caught.value.limit == 3
    assert _refusals(db) == [{"table": "public.consent", "operation": "UPDATE", "users": 4, "rows": 4, "limit": 3,
                              "sqlstate": SQLSTATE}]
    assert db.execute("SELECT bool_and(granted) FROM consent").fetchone() == (True,)


def test_bulk_change_is_allowed_after_set_local_opt_in_and_only_in_that_transaction(db: Conn) -> None:
    _users(db, 5)
    db.execute("SET agentdb.bulk_change_limit = 2")

    with db.transaction():
        db.execute("SET LOCAL agentdb.allow_bulk_change = on")
        db.execute("UPDATE users SET locale = 'de'")
    assert db.execute("SELECT count(*) FROM users WHERE locale = 'de'").fetchone() == (5,)

    with pytest.raises(psycopg.Error) as caught:
        db.execute("UPDATE users SET locale = 'fr'")
    assert caught.value.sqlstate == SQLSTATE


def test_plain_sql_refusal_raises_its_sqlstate_and_leaves_no_event_logs_row(db: Conn) -> None:
    """Outside guarded() nothing can write event_logs: the refused transaction rolls back every row it wrote."""
    _users(db, 3)
    db.execute("SET agentdb.bulk_change_limit = 2")

    with pytest.raises(psycopg.Error) as caught:
        db.execute("DELETE FROM users")

    assert caught.value.sqlstate == SQLSTATE
    assert caught.value.diag.table_name == "users"
    assert "SET LOCAL agentdb.allow_bulk_change = on" in (caught.value.diag.message_hint or "")
    assert _refusals(db) == []
    assert _count(db, "users") == 3


def test_truncate_of_a_guarded_table_is_refused_without_opt_in(db: Conn) -> None:
    _users(db, 1)
    with pytest.raises(psycopg.Error) as caught:
        db.execute("TRUNCATE consent")
    assert caught.value.sqlstate == SQLSTATE


def test_deleting_one_user_with_all_its_data_is_not_refused_at_the_default_limit(db: Conn) -> None:
    (user,) = _users(db, 1)
    _users(db, DEFAULT_LIMIT + 5)  # others, untouched
    for purpose in ("analytics", "personalization", "marketing", "ai_training", "collaboration_matching",
                    "third_party_sharing"):
        db.execute("INSERT INTO consent (user_id, purpose, granted, policy_version, source) "
                   "VALUES (%s, %s, true, '1.0', 'signup')", [user, purpose])
    db.execute("INSERT INTO playlists (owner_user_id, name) VALUES (%s, 'Mine')", [user])
    db.execute("INSERT INTO analytics (user_id, event_type) SELECT %s, 'play' FROM generate_series(1, 300)", [user])
    for n in range(DEFAULT_LIMIT + 20):  # more audit rows about this user than the limit
        db.execute("UPDATE users SET display_name = %s WHERE id = %s", [f"Name {n}", user])
    audit_rows = db.execute("SELECT count(*) FROM audit_log WHERE subject_user_id = %s", [user]).fetchone()
    assert audit_rows is not None and audit_rows[0] > DEFAULT_LIMIT

    with db.transaction():  # what erasure does, as the owner: scrub the audit trail, then delete the user
        db.execute("UPDATE audit_log SET actor = 'erased' WHERE subject_user_id = %s", [user])
        db.execute("DELETE FROM users WHERE id = %s", [user])

    assert db.execute("SELECT count(*) FROM consent WHERE user_id = %s", [user]).fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM analytics WHERE user_id IS NULL").fetchone() == (300,)
    assert _refusals(db) == []


@pytest.mark.parametrize("statement", ["UPDATE {} SET created_at = created_at", "DELETE FROM {}"])
@pytest.mark.parametrize("table", ["users", "consent", "audit_log"])
def test_each_guarded_table_refuses_a_statement_touching_more_users_than_the_limit(
    db: Conn, table: str, statement: str
) -> None:
    for user in _users(db, 3):  # each insert also writes an audit_log row about that user
        db.execute("INSERT INTO consent (user_id, purpose, granted, policy_version, source) "
                   "VALUES (%s, 'marketing', true, '1.0', 'signup')", [user])
    db.execute("SET agentdb.bulk_change_limit = 2")
    before = _count(db, table)

    with pytest.raises(psycopg.Error) as caught:
        db.execute(sql.SQL(statement).format(sql.Identifier(table)))

    assert caught.value.sqlstate == SQLSTATE and caught.value.diag.table_name == table
    assert _count(db, table) == before
