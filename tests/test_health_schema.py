"""Schema-integrity checks of agentdb health, against agentdb's own declaration, each made to fire for real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import fixture_migration

import agentdb
from agentdb.errors import MigrationFailed
from agentdb.health import CheckResult, Status, check_health


def run(url: str, check_id: str, **thresholds: Any) -> CheckResult:
    report = check_health(database_url=url, only=[check_id],
                          thresholds={f"{check_id}.{k}": v for k, v in thresholds.items()})
    return report.results[0]


def sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def user(url: str) -> int:
    """A user row (the guard and audit triggers run as in production)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO users (email, display_name) VALUES ('a@example.org', 'A') "
                           "RETURNING id").fetchone()
    assert row is not None
    return int(row[0])


def test_pending_migrations(database_url: str) -> None:
    agentdb.upgrade("004", database_url=database_url)
    result = run(database_url, "schema.migrations_pending")
    assert result.status == Status.WARNING
    assert [e["revision"] for e in result.evidence][:2] == ["005", "006"]
    agentdb.upgrade(database_url=database_url)
    assert run(database_url, "schema.migrations_pending").status == Status.OK


def test_failed_migration(database_url: str, script_location: Any) -> None:
    failing = fixture_migration("007", "006", 'op.execute("SELECT 1/0")')
    script_location({"007_fails.py": failing}, upto="006")
    with pytest.raises(MigrationFailed):
        agentdb.upgrade(database_url=database_url)
    result = run(database_url, "schema.migrations_failed")
    assert result.status == Status.WARNING
    assert result.evidence[0]["revision"] == "007" and result.evidence[0]["sqlstate"] == "22012"


def test_migration_changed_since_applied(database_url: str, script_location: Any) -> None:
    location: Path = script_location(upto="006")
    agentdb.upgrade(database_url=database_url)
    assert run(database_url, "schema.migrations_changed").status == Status.OK
    path = next((location / "versions").glob("004_*.py"))
    path.write_text(path.read_text() + "\n# edited after it was applied\n")
    result = run(database_url, "schema.migrations_changed")
    assert result.status == Status.CRITICAL and result.evidence[0]["revision"] == "004"


def test_table_drift(migrated_url: str) -> None:
    sql(migrated_url, "ALTER TABLE users ADD COLUMN nickname text", "CREATE TABLE t_extra (id int)")
    result = run(migrated_url, "schema.tables_drift")
    assert result.status == Status.WARNING
    assert {"change": "add_column", "table": "users", "column": "nickname"} not in result.evidence
    changes = {(e["change"], e.get("table"), e.get("column")) for e in result.evidence}
    assert ("remove_column", "users", "nickname") in changes
    assert ("remove_table", "t_extra", None) in changes


def test_partitions_and_online_copies_are_not_drift(migrated_url: str) -> None:
    sql(migrated_url,
        "CREATE TABLE t_series (id int, at timestamptz NOT NULL) PARTITION BY RANGE (at)",
        "CREATE TABLE t_series_p202601 PARTITION OF t_series FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')",
        "CREATE TABLE t_series_p202512 (id int, at timestamptz NOT NULL)",  # detached by retention
        "CREATE TABLE analytics__online_0123abcd (id int)")
    tables = {e.get("table") for e in run(migrated_url, "schema.tables_drift").evidence}
    assert tables == {"t_series"}  # the undeclared parent is drift; its partitions and the copies are not


def test_function_and_view_drift(migrated_url: str) -> None:
    sql(migrated_url, "CREATE OR REPLACE FUNCTION public.set_updated_at() RETURNS trigger "
                      "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        "CREATE FUNCTION public.t_helper() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "DROP VIEW public.rollback_archive")
    problems = {(e.get("function") or e.get("view"), e["problem"])
                for e in run(migrated_url, "schema.functions_drift").evidence}
    assert problems == {("public.set_updated_at()", "body differs from the declaration"),
                        ("public.t_helper()", "not declared"), ("public.rollback_archive", "missing")}


def test_disabled_audit_trigger_is_critical(migrated_url: str) -> None:
    assert run(migrated_url, "schema.audit_triggers").status == Status.OK
    sql(migrated_url, "ALTER TABLE users DISABLE TRIGGER users_audit")
    result = run(migrated_url, "schema.audit_triggers")
    assert result.status == Status.CRITICAL
    assert result.evidence == [{"trigger": "users_audit on public.users", "problem": "disabled"}]


def test_missing_guard_and_changed_updated_at_triggers(migrated_url: str) -> None:
    sql(migrated_url, "DROP TRIGGER consent_guard_truncate ON consent",
        "DROP TRIGGER users_set_updated_at ON users",
        "CREATE TRIGGER users_set_updated_at AFTER UPDATE ON users FOR EACH ROW "
        "EXECUTE FUNCTION set_updated_at()")
    guard = run(migrated_url, "schema.guard_triggers")
    assert guard.status == Status.CRITICAL
    assert guard.evidence == [{"trigger": "consent_guard_truncate on public.consent", "problem": "missing"}]
    updated = run(migrated_url, "schema.updated_at_triggers")
    assert updated.evidence == [{"trigger": "users_set_updated_at on public.users",
                                 "problem": "differs from the declaration"}]


def test_undeclared_trigger_and_policy(migrated_url: str) -> None:
    sql(migrated_url, "CREATE TRIGGER users_extra BEFORE UPDATE ON users FOR EACH ROW "
                      "EXECUTE FUNCTION set_updated_at()",
        "ALTER TABLE collaboration_history DISABLE TRIGGER collaboration_history_append_only",
        "CREATE POLICY users_own ON users USING (true)")
    problems = {(e["trigger"], e["problem"]) for e in run(migrated_url, "schema.triggers_drift").evidence}
    assert problems == {("users_extra on public.users", "not declared"),
                        ("collaboration_history_append_only on public.collaboration_history", "disabled")}
    assert run(migrated_url, "schema.policies_drift").evidence == [{"table": "public.users", "policy": "users_own"}]


def test_grant_drift(migrated_url: str) -> None:
    sql(migrated_url, "GRANT DELETE ON public.audit_log TO agentdb_app",
        "REVOKE INSERT ON public.playlists FROM agentdb_app")
    found = {(e["table"], e["role"], e["privilege"], e["problem"])
             for e in run(migrated_url, "schema.grants_drift").evidence}
    assert found == {("audit_log", "agentdb_app", "DELETE", "held, not declared"),
                     ("playlists", "agentdb_app", "INSERT", "declared, not held")}


def test_foreign_key_without_index_composite_and_primary_key_aware(migrated_url: str) -> None:
    sql(migrated_url,
        "CREATE TABLE t_pair (a int, b int, PRIMARY KEY (a, b))",
        # covered by its primary key, columns in another order
        "CREATE TABLE t_ref (b int, a int, note text, PRIMARY KEY (b, a), FOREIGN KEY (a, b) REFERENCES t_pair)",
        # covered by a longer composite index
        "CREATE TABLE t_ref2 (id int, a int, b int, FOREIGN KEY (a, b) REFERENCES t_pair)",
        "CREATE INDEX ON t_ref2 (b, a, id)",
        # not covered: the index starts with another column
        "CREATE TABLE t_ref3 (id int, user_id bigint REFERENCES users)",
        "CREATE INDEX ON t_ref3 (id, user_id)")
    result = run(migrated_url, "schema.fk_index_coverage")
    assert result.status == Status.WARNING
    assert [(e["table"], e["columns"]) for e in result.evidence] == [("public.t_ref3", ["user_id"])]
    assert "CONCURRENTLY" in result.remediation and "SHARE UPDATE EXCLUSIVE" in result.lock


def test_not_valid_constraint_and_its_orphan(migrated_url: str) -> None:
    sql(migrated_url, "CREATE TABLE t_orders (id int PRIMARY KEY, user_id bigint)",
        "INSERT INTO t_orders VALUES (1, 987654321)",
        "ALTER TABLE t_orders ADD CONSTRAINT t_orders_user_fk FOREIGN KEY (user_id) REFERENCES users NOT VALID",
        "CREATE INDEX ON t_orders (user_id)")
    result = run(migrated_url, "schema.not_valid_constraints")
    assert result.status == Status.WARNING
    assert result.evidence == [{"table": "public.t_orders", "constraint": "t_orders_user_fk", "kind": "foreign key"}]
    # Too large to scan by default, but a NOT VALID key is always scanned.
    orphans = run(migrated_url, "schema.orphan_rows", scan_max_rows=-1)
    assert orphans.status == Status.CRITICAL
    assert orphans.evidence[0]["table"] == "public.t_orders" and orphans.evidence[0]["orphan_rows"] == 1
    assert orphans.evidence[0]["why_possible"] == "NOT VALID"


def test_orphan_rows_written_with_triggers_off(migrated_url: str) -> None:
    uid = user(migrated_url)
    sql(migrated_url, f"INSERT INTO consent (user_id, purpose, granted, policy_version, source) "
                      f"VALUES ({uid}, 'analytics', true, '2026-05', 'signup')")
    assert run(migrated_url, "schema.orphan_rows").status == Status.OK
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no cascade, no check: a restore gone wrong
        conn.execute("DELETE FROM users WHERE id = %s", [uid])
    result = run(migrated_url, "schema.orphan_rows")
    assert result.status == Status.CRITICAL
    assert {(e["table"], e["orphan_rows"]) for e in result.evidence} == {("public.consent", 1)}
    assert "987" not in result.message


def test_analyst_able_to_read_a_personal_column(migrated_url: str) -> None:
    assert run(migrated_url, "schema.analyst_personal_columns").status == Status.OK
    sql(migrated_url, "GRANT SELECT (email) ON public.users TO agentdb_analyst")
    result = run(migrated_url, "schema.analyst_personal_columns")
    assert result.status == Status.CRITICAL
    assert result.evidence == [{"table": "public.users", "column": "email", "role": "agentdb_analyst"}]
    # agentdb's erasure ledger says who asked to be erased: the analyst may not read that either.
    sql(migrated_url, "GRANT USAGE ON SCHEMA agentdb TO agentdb_analyst",
        "GRANT SELECT ON agentdb.privacy_requests TO agentdb_analyst")
    assert {"table": "agentdb.privacy_requests", "column": "user_id", "role": "agentdb_analyst"} in run(
        migrated_url, "schema.analyst_personal_columns").evidence


def test_pseudonym_key_readable_by_another_role(migrated_url: str) -> None:
    assert run(migrated_url, "schema.pseudonym_key_private").status == Status.OK
    sql(migrated_url, "GRANT SELECT (pseudonym_key) ON agentdb.privacy_settings TO agentdb_readonly")
    result = run(migrated_url, "schema.pseudonym_key_private")
    assert result.status == Status.CRITICAL
    assert result.evidence == [{"role": "agentdb_readonly", "privilege": "SELECT (pseudonym_key)"}]


def test_audit_log_no_longer_append_only(migrated_url: str) -> None:
    assert run(migrated_url, "schema.audit_log_append_only").status == Status.OK
    sql(migrated_url, "GRANT DELETE ON public.audit_log TO agentdb_app",
        "GRANT UPDATE (actor) ON public.audit_log TO agentdb_readonly")
    result = run(migrated_url, "schema.audit_log_append_only")
    assert result.status == Status.CRITICAL
    assert {(e["role"], e["privilege"]) for e in result.evidence} == {
        ("agentdb_app", "DELETE"), ("agentdb_readonly", "UPDATE (actor)")}


def test_schema_checks_take_only_access_share_locks(migrated_url: str) -> None:
    report = check_health(database_url=migrated_url, only=["schema"])
    assert report.locks == ["AccessShareLock"]
    assert {r.status for r in report.results} == {Status.OK}, [r.message for r in report.results
                                                              if r.status != Status.OK]
