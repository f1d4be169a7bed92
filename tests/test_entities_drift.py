"""Drift: a database at head holds exactly the functions, triggers, views and grants agentdb.schema.entities declares.

Alembic's autogenerate, configured as ``agentdb new --autogenerate`` configures it, is the comparison: no
operation means no drift.  A change of the declaration (here: the personal-data registry, which generates the
analyst grants) is drift until a migration written by autogenerate carries it; migration 005 stays what its file
says.
"""

from __future__ import annotations

import ast
import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql

import agentdb
from agentdb.runtime.environment import configure_options
from agentdb.schema import entities, metadata
from agentdb.schema.personal_data import PII, analyst_columns


def drift(url: str) -> list[Any]:
    """What autogenerate would write for the database at ``url``: Alembic's diff tuples, empty when none."""
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts=configure_options())
            diffs: list[Any] = compare_metadata(context, metadata)
            conn.rollback()
            return diffs
    finally:
        engine.dispose()


def _analyst_may_read(url: str, table: str, column: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT has_column_privilege('agentdb_analyst', %s, %s, 'SELECT')",
                           [f"public.{table}", column]).fetchone()
    assert row is not None
    return bool(row[0])


def _reclassify(monkeypatch: pytest.MonkeyPatch, table: str, column: str, *, analyst: bool) -> None:
    """Change the registry the way a developer would: the column's own declaration, ``analyst=`` flipped."""
    info = metadata.tables[table].c[column].info
    monkeypatch.setitem(info, "pii", dataclasses.replace(info["pii"], analyst=analyst))


def _grant_ops(diffs: list[Any], table: str, role: str = "agentdb_analyst") -> list[tuple[str, str]]:
    identity = f"PGGrantTable: public.{table}.{role}.SELECT"
    return [(diff[0], diff[2] if len(diff) > 2 else "") for diff in diffs if diff[1] == identity]


def test_a_database_at_head_matches_the_declared_entities(migrated_url: str) -> None:
    assert drift(migrated_url) == []


def test_every_kind_of_entity_is_compared(migrated_url: str) -> None:
    """Each change below, made by hand in the database, is reported: nothing declared escapes the comparison."""
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("CREATE OR REPLACE FUNCTION public.set_updated_at() RETURNS trigger "
                     "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$")
        conn.execute("DROP TRIGGER consent_guard_bulk_delete ON public.consent")
        conn.execute("CREATE TRIGGER users_extra BEFORE UPDATE ON public.users "
                     "FOR EACH ROW EXECUTE FUNCTION public.set_updated_at()")
        conn.execute("DROP VIEW public.rollback_archive")
        conn.execute("CREATE POLICY users_own ON public.users USING (true)")
        conn.execute("GRANT SELECT (email) ON public.users TO agentdb_analyst")
        conn.execute("GRANT DELETE ON public.audit_log TO agentdb_app")
        conn.execute("REVOKE INSERT ON public.playlists FROM agentdb_app")

    found = {(diff[0], diff[1]) for diff in drift(migrated_url)}

    assert found == {
        ("replace_or_revert_entity", "PGFunction: public.set_updated_at()"),
        ("create_entity", "PGTrigger: public.consent_guard_bulk_delete False public.consent"),
        ("drop_entity", "PGTrigger: public.users_extra False public.users"),
        ("create_entity", "PGView: public.rollback_archive"),
        ("drop_entity", "PGPolicy: public.users_own public.users"),
        ("drop_entity", "PGGrantTable: public.users.agentdb_analyst.SELECT"),
        ("create_entity", "PGGrantTable: public.users.agentdb_analyst.SELECT"),
        ("drop_entity", "PGGrantTable: public.audit_log.agentdb_app.DELETE"),
        ("create_entity", "PGGrantTable: public.playlists.agentdb_app.INSERT"),
    }


def test_grants_agentdb_does_not_manage_are_not_drift(migrated_url: str) -> None:
    """An administrator's grants to another role, and sequence privileges (identity columns need none)."""
    role = f"t_reporting_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        try:
            conn.execute(sql.SQL("GRANT SELECT ON public.users, public.analytics TO {}").format(sql.Identifier(role)))
            conn.execute("GRANT USAGE ON SEQUENCE public.users_id_seq TO agentdb_app")
            assert drift(migrated_url) == []
        finally:
            conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_one_column_fewer_for_analysts_is_drift(migrated_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _reclassify(monkeypatch, "analytics", "session_id", analyst=False)

    ops = _grant_ops(drift(migrated_url), "analytics")

    assert [kind for kind, _ in ops] == ["drop_entity", "create_entity"]
    assert "session_id" not in ops[1][1] and "user_id" in ops[1][1]


@pytest.fixture
def offline_005() -> str:
    return agentdb.sql("004:005")


def _top_level_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_a_changed_analyst_grant_is_drift_until_the_autogenerated_migration_applies_it(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch, script_location: Any, offline_005: str,
) -> None:
    assert "locale" not in analyst_columns()["users"]
    _reclassify(monkeypatch, "users", "locale", analyst=True)
    assert "locale" in analyst_columns()["users"]

    ops = _grant_ops(drift(migrated_url), "users")
    assert [kind for kind, _ in ops] == ["drop_entity", "create_entity"]
    assert "locale" in ops[1][1] and "email" not in ops[1][1]
    assert agentdb.sql("004:005") == offline_005  # 005 is what its file says, whatever the package declares

    location = script_location()
    path = agentdb.new_migration("let analysts read users.locale", autogenerate=True, database_url=migrated_url)

    source = path.read_text()
    body = source.split("def upgrade() -> None:", 1)[1].split("def downgrade() -> None:", 1)[0]
    assert [line.strip() for line in body.splitlines() if line.strip().startswith("op.")] == [
        "op.drop_entity(public_users_agentdb_analyst_select)",
        "op.create_entity(public_users_agentdb_analyst_select)",
    ]
    assert "'locale'" in body and "'email'" not in body
    assert not {m for m in _top_level_imports(path) if m.split(".")[0] == "agentdb"}
    assert path.parent == location / "versions"

    agentdb.upgrade(database_url=migrated_url)

    assert _analyst_may_read(migrated_url, "users", "locale")
    assert not _analyst_may_read(migrated_url, "users", "email")
    assert drift(migrated_url) == []

    agentdb.downgrade("-1", database_url=migrated_url)
    monkeypatch.undo()
    assert not _analyst_may_read(migrated_url, "users", "locale")
    assert drift(migrated_url) == []


@pytest.fixture
def new_table() -> Iterator[sa.Table]:
    """A table added to the models, removed again afterwards."""
    table = sa.Table(
        "release_notes", metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True, comment="Surrogate key"),
        sa.Column("body", sa.Text, nullable=False, comment="The note"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
                  comment="When the row was created"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
                  comment="When the row last changed"),
        comment="Notes shown with a release",
    )
    try:
        yield table
    finally:
        if table.key in metadata.tables:
            metadata.remove(table)


def test_a_new_table_gets_its_trigger_and_grants_after_it_in_one_autogenerated_migration(
    migrated_url: str, script_location: Any, new_table: sa.Table,
) -> None:
    script_location()
    path = agentdb.new_migration("add release notes", autogenerate=True, database_url=migrated_url)

    body = path.read_text().split("def upgrade() -> None:", 1)[1].split("def downgrade() -> None:", 1)[0]
    ops = [line.strip().split("(", 1)[0] for line in body.splitlines() if line.strip().startswith("op.")]
    assert ops[0] == "op.create_table"
    assert set(ops[1:]) == {"op.create_entity"}
    assert "public_release_notes_release_notes_set_updated_at" in body
    assert len(ops) == 1 + 1 + len([g for g in entities.grants() if g.table == new_table.name])

    agentdb.upgrade(database_url=migrated_url)
    assert drift(migrated_url) == []
    assert _analyst_may_read(migrated_url, "release_notes", "body")

    agentdb.downgrade("-1", database_url=migrated_url)
    metadata.remove(new_table)
    assert drift(migrated_url) == []


def test_declared_grants_follow_the_registry_and_the_role_prefix() -> None:
    grants = {(g.table, g.role, str(g.grant)): g.columns for g in entities.grants("tpfx")}

    assert grants[("users", "tpfx_analyst", "SELECT")] == sorted(analyst_columns()["users"])
    assert ("audit_log", "tpfx_app", "UPDATE") not in grants  # append-only
    assert ("audit_log", "tpfx_app", "INSERT") in grants
    assert grants[("users", "tpfx_app", "DELETE")] == []
    assert {role for _, role, _ in grants} == {"tpfx_app", "tpfx_readonly", "tpfx_analyst"}
    assert isinstance(metadata.tables["users"].c.email.info["pii"], PII)
