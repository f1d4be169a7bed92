"""Access control: proven by connecting as LOGIN members of each group role; roles across two databases."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from conftest import create_database, drop_database, server_dsn, with_database
from psycopg import errors, sql

import agentdb
from agentdb import access
from agentdb.schema import metadata
from agentdb.schema.personal_data import analyst_columns

Login = Callable[[str], str]


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture
def login_as(migrated_url: str) -> Iterator[Login]:
    """``login_as("agentdb_app")``: the URL of a new LOGIN role that is a member of that group, dropped afterwards."""
    made: list[str] = []

    def make(group: str) -> str:
        name = f"t_login_{uuid.uuid4().hex[:8]}"
        with _admin(migrated_url) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'secret-for-tests'").format(sql.Identifier(name)))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name)))
        made.append(name)
        url = sa.make_url(migrated_url).set(username=name, password="secret-for-tests")
        return url.render_as_string(hide_password=False)

    yield make
    with _admin(server_dsn()) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def _make_user(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "INSERT INTO users (email, display_name) VALUES (%s, 'Member Test') RETURNING id",
        [f"m{uuid.uuid4().hex[:10]}@example.com"],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_analyst_member_is_denied_users_email_and_reads_analytics(login_as: Login, migrated_url: str) -> None:
    with _admin(migrated_url) as admin:
        user = _make_user(admin)
        admin.execute("INSERT INTO analytics (user_id, event_type, country) VALUES (%s, 'play', 'DE')", [user])

    with _connect(login_as("agentdb_analyst")) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT email FROM users")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT display_name FROM users")
        assert conn.execute("SELECT user_id, event_type, country FROM analytics").fetchall() == [(user, "play", "DE")]
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)  # count(*) needs no column
        assert conn.execute("SELECT id, created_at IS NOT NULL FROM users").fetchone() == (user, True)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("INSERT INTO analytics (event_type) VALUES ('play')")


def test_analyst_grants_match_the_registry_column_for_column(migrated_url: str) -> None:
    allowed = analyst_columns()
    with _admin(migrated_url) as conn:
        granted = {
            (table, column)
            for table, column in conn.execute(
                "SELECT table_name, column_name FROM information_schema.column_privileges "
                "WHERE grantee = 'agentdb_analyst' AND privilege_type = 'SELECT' AND table_schema = 'public'"
            )
        }
        table_level = conn.execute(
            "SELECT count(*) FROM information_schema.table_privileges WHERE grantee = 'agentdb_analyst'"
        ).fetchone()
    expected = {(table, column) for table in metadata.tables for column in allowed.get(table, [])}
    assert granted == expected
    assert ("users", "email") not in granted and ("analytics", "session_id") in granted
    assert table_level == (0,)  # column grants only


def test_app_member_reads_and_writes_data_but_cannot_run_ddl(login_as: Login) -> None:
    with _connect(login_as("agentdb_app")) as conn:
        user = _make_user(conn)  # an identity column needs no sequence grant
        conn.execute("UPDATE users SET display_name = 'Renamed' WHERE id = %s", [user])
        conn.execute("INSERT INTO consent (user_id, purpose, granted, policy_version, source) "
                     "VALUES (%s, 'analytics', true, '1.0', 'signup')", [user])
        assert conn.execute("SELECT display_name FROM users WHERE id = %s", [user]).fetchone() == ("Renamed",)
        conn.execute("DELETE FROM users WHERE id = %s", [user])
        assert conn.execute("SELECT count(*) FROM audit_log WHERE subject_user_id = %s", [user]).fetchone() == (5,)

        for ddl in ("CREATE TABLE public.app_made (id int)", "ALTER TABLE users ADD COLUMN nickname text",
                    "DROP TABLE analytics", "CREATE INDEX ON users (locale)", "TRUNCATE analytics"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(ddl)


def test_readonly_member_reads_everything_and_writes_nothing(login_as: Login, migrated_url: str) -> None:
    with _admin(migrated_url) as admin:
        user = _make_user(admin)

    with _connect(login_as("agentdb_readonly")) as conn:
        assert conn.execute("SELECT email IS NOT NULL FROM users WHERE id = %s", [user]).fetchone() == (True,)
        conn.execute("SELECT * FROM audit_log").fetchall()
        for write in ("INSERT INTO users (email, display_name) VALUES ('r@example.com', 'R')",
                      "UPDATE users SET locale = 'de'", "DELETE FROM analytics",
                      "CREATE TABLE public.ro_made (id int)"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(write)


@pytest.mark.parametrize("group", ["agentdb_app", "agentdb_readonly", "agentdb_analyst"])
def test_audit_log_update_delete_and_truncate_are_denied_to_every_group(
    login_as: Login, migrated_url: str, group: str
) -> None:
    with _admin(migrated_url) as admin:
        _make_user(admin)

    with _connect(login_as(group)) as conn:
        for statement in ("UPDATE audit_log SET actor = 'forged'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)

    with _admin(migrated_url) as admin:  # the owner keeps them (erasure runs as owner)
        admin.execute("UPDATE audit_log SET actor = 'erased'")
        assert admin.execute("SELECT DISTINCT actor FROM audit_log").fetchall() == [("erased",)]


def test_every_application_table_is_granted_to_app_and_readonly(migrated_url: str) -> None:
    # Partitions (analytics_p202611...) are reached through their parent, whose privileges PostgreSQL checks.
    with _admin(migrated_url) as conn:
        missing = conn.execute(
            "SELECT c.relname, r.rolname FROM pg_class c CROSS JOIN pg_roles r "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND r.rolname IN ('agentdb_app', 'agentdb_readonly') AND NOT has_table_privilege(r.oid, c.oid, 'SELECT')"
        ).fetchall()
    assert missing == []


# --- roles are cluster-wide: two databases on one server -------------------------------------------------------


@pytest.fixture
def prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Role names of their own (``AGENTDB_ROLE_PREFIX``), so no other test database uses these roles."""
    value = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("AGENTDB_ROLE_PREFIX", value)
    yield value
    with _admin(server_dsn()) as conn:
        for name in access.role_names(value).values():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def two_databases() -> Iterator[tuple[str, str]]:
    names = [create_database(), create_database()]
    try:
        yield with_database(server_dsn(), names[0]), with_database(server_dsn(), names[1])
    finally:
        for name in names:
            drop_database(name)


def _roles(prefix: str) -> set[str]:
    with _admin(server_dsn()) as conn:
        return {r for (r,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [prefix + "\\_%"])}


def _recorded(url: str) -> dict[str, bool]:
    with _admin(url) as conn:
        return dict(conn.execute("SELECT role_name, created_here FROM agentdb.access_roles").fetchall())


def test_migrations_apply_to_two_databases_and_the_last_downgrade_drops_the_roles(
    prefix: str, two_databases: tuple[str, str]
) -> None:
    a, b = two_databases
    names = set(access.role_names(prefix).values())

    agentdb.upgrade("head", database_url=a)
    agentdb.upgrade("head", database_url=b)  # the roles exist already: must not fail

    assert _roles(prefix) == names
    assert set(_recorded(a).values()) == {True} and set(_recorded(b).values()) == {False}

    agentdb.downgrade("004", database_url=a)
    assert _roles(prefix) == names  # b still grants them privileges

    agentdb.downgrade("004", database_url=b)
    assert _roles(prefix) == set()  # created by agentdb, used by no database any more

    agentdb.upgrade("head", database_url=b)
    assert _roles(prefix) == names and set(_recorded(b).values()) == {True}


def test_downgrade_keeps_a_role_an_administrator_created(prefix: str, two_databases: tuple[str, str]) -> None:
    a, _ = two_databases
    names = access.role_names(prefix)
    with _admin(server_dsn()) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(names["readonly"])))

    agentdb.upgrade("head", database_url=a)
    assert _recorded(a) == {names["app"]: True, names["readonly"]: False, names["analyst"]: True}

    agentdb.downgrade("004", database_url=a)
    assert _roles(prefix) == {names["readonly"]}


def test_downgrade_keeps_a_role_that_has_members(prefix: str, two_databases: tuple[str, str]) -> None:
    a, _ = two_databases
    names = access.role_names(prefix)
    member = f"{prefix}_member"
    agentdb.upgrade("head", database_url=a)
    with _admin(server_dsn()) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(member)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(names["app"]), sql.Identifier(member)))

    agentdb.downgrade("004", database_url=a)

    assert _roles(prefix) == {names["app"], member}
