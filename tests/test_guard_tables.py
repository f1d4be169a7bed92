"""The bulk-change guard covers exactly its documented tables: users, consent AND audit_log.

``tests/test_guards.py`` exercises the guard through ``users`` and ``consent``; here ``audit_log`` is refused
a bulk UPDATE, DELETE and TRUNCATE too, and the catalogue (``pg_trigger``) must show the guard on exactly the
documented tables, for each of the three operations, counting the documented column.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from agentdb.guards import SQLSTATE

Conn = psycopg.Connection[Any]

#: The guarded tables and the column naming the user a row is about, as the README and agentdb.guards document.
DOCUMENTED = {"users": "id", "consent": "user_id", "audit_log": "subject_user_id"}
#: ``pg_trigger.tgtype`` bits (PostgreSQL's ``TRIGGER_TYPE_*``).
_EVENTS = {"DELETE": 1 << 3, "UPDATE": 1 << 4, "TRUNCATE": 1 << 5}
LIMIT = 3


@pytest.fixture
def owner(migrated_url: str) -> Iterator[Conn]:
    """A connection as the tables' owner: ``audit_log`` is append-only for every other role."""
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        row = conn.execute("SELECT tableowner = current_user FROM pg_tables "
                           "WHERE schemaname = 'public' AND tablename = 'audit_log'").fetchone()
        assert row == (True,), "the test must run as audit_log's owner"
        yield conn


def _audited_users(conn: Conn, count: int) -> list[int]:
    """``count`` users, each with audit_log rows about them (written by the audit trigger on users)."""
    rows = conn.execute(
        "INSERT INTO users (email, display_name) SELECT 'audit' || g || '@example.com', 'Audit Test' "
        "FROM generate_series(1, %s) AS g RETURNING id", [count],
    ).fetchall()
    ids = [int(r[0]) for r in rows]
    conn.execute("UPDATE users SET display_name = 'Audit Test 2' WHERE id = ANY(%s)", [ids[:LIMIT]])
    per_user = dict(conn.execute(
        "SELECT subject_user_id, count(*) FROM audit_log WHERE subject_user_id = ANY(%s) GROUP BY 1", [ids],
    ).fetchall())
    assert set(per_user) == set(ids) and sum(per_user.values()) > count
    return ids


def _audit_log(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT a.* FROM audit_log AS a ORDER BY a::text").fetchall()


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET actor = 'bulk'",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
])
def test_a_bulk_change_of_audit_log_by_its_owner_is_refused(owner: Conn, statement: str) -> None:
    _audited_users(owner, LIMIT + 1)
    before = _audit_log(owner)
    owner.execute("SELECT set_config('agentdb.bulk_change_limit', %s, false)", [str(LIMIT)])

    with pytest.raises(psycopg.Error) as caught:
        owner.execute(statement)

    assert caught.value.sqlstate == SQLSTATE, caught.value
    assert caught.value.diag.table_name == "audit_log"
    assert _audit_log(owner) == before


def test_changing_audit_log_rows_of_users_within_the_limit_is_allowed(owner: Conn) -> None:
    """The refusal above is about the number of users: the same statement on LIMIT users' rows (more rows) runs."""
    ids = _audited_users(owner, LIMIT + 1)
    owner.execute("SELECT set_config('agentdb.bulk_change_limit', %s, false)", [str(LIMIT)])

    changed = owner.execute("UPDATE audit_log SET actor = 'within' WHERE subject_user_id = ANY(%s)", [ids[:LIMIT]])

    assert changed.rowcount > LIMIT
    row = owner.execute("SELECT count(DISTINCT subject_user_id) FROM audit_log WHERE actor = 'within'").fetchone()
    assert row == (LIMIT,)


def test_the_catalogue_guards_exactly_the_documented_tables(owner: Conn) -> None:
    rows = owner.execute(
        "SELECT c.relname, t.tgtype, t.tgenabled, t.tgargs FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE t.tgfoid = 'public.guard_bulk_change()'::regprocedure AND NOT t.tgisinternal AND n.nspname = 'public'"
    ).fetchall()
    guarded: dict[str, set[tuple[str, str]]] = {}
    for table, tgtype, enabled, args in rows:
        assert enabled != "D", f"a guard trigger on {table} is disabled"
        (subject,) = bytes(args).split(b"\0")[:-1]
        for event, bit in _EVENTS.items():
            if tgtype & bit:
                guarded.setdefault(table, set()).add((event, subject.decode()))

    assert guarded == {
        table: {(event, subject) for event in _EVENTS} for table, subject in DOCUMENTED.items()
    }
