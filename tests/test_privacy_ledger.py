"""The request ledger: what the health check reads, owner only, and migration 010's copy of its DDL."""

from __future__ import annotations

import importlib.util
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from agentdb import check_health
from agentdb.connection import connect, create_engine, resolve
from agentdb.health import Status
from agentdb.privacy import ledger, privacy_requests
from agentdb.privacy.ledger import DDL, ensure_ledger, migration_body, open_request, update_request

VERSIONS = Path(__file__).resolve().parents[1] / "src" / "agentdb" / "migrations" / "versions"


def _with(url: str, action):  # type: ignore[no-untyped-def]
    target = resolve(url)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            result = action(connection)
            connection.commit()
            return result
    finally:
        engine.dispose()


def _rows(url: str, query: str, params: object = None) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def test_the_ledger_has_what_the_health_check_reads_and_is_owner_only(migrated_url: str) -> None:
    _with(migrated_url, ensure_ledger)
    _with(migrated_url, ensure_ledger)  # idempotent
    columns = dict(_rows(migrated_url, "SELECT column_name, data_type FROM information_schema.columns "
                                       "WHERE table_schema = 'agentdb' AND table_name = 'privacy_requests'"))
    assert {name: columns[name] for name in ("id", "kind", "user_id", "received_at", "deadline", "status",
                                              "completed_at", "rows_affected", "proof_hits", "db_user", "os_user",
                                              "host")} == {
        "id": "bigint", "kind": "text", "user_id": "bigint", "received_at": "timestamp with time zone",
        "deadline": "timestamp with time zone", "status": "text", "completed_at": "timestamp with time zone",
        "rows_affected": "jsonb", "proof_hits": "bigint", "db_user": "text", "os_user": "text", "host": "text"}
    for role in ("agentdb_app", "agentdb_readonly", "agentdb_analyst"):
        assert _rows(migrated_url, "SELECT has_table_privilege(%s, 'agentdb.privacy_requests', 'SELECT') OR "
                                   "has_table_privilege(%s, 'agentdb.privacy_settings', 'SELECT')",
                     (role, role)) == [(False,)]
    (key,) = _rows(migrated_url, "SELECT pseudonym_key FROM agentdb.privacy_settings")[0]
    assert len(key) >= 16


def test_deadlines_are_thirty_days_and_open_requests_past_them_are_overdue(migrated_url: str) -> None:
    old = datetime.now(UTC) - timedelta(days=40)

    def fill(connection) -> list[int]:  # type: ignore[no-untyped-def]
        ensure_ledger(connection)
        late = open_request(connection, "erasure", 7, received_at=old)
        answered = open_request(connection, "export", 8, received_at=old)
        update_request(connection, answered, status="done", completed_at=True)
        recent = open_request(connection, "erasure", 9)
        hold = open_request(connection, "hold", 9, status="active", reason="case 1")
        return [late, answered, recent, hold]

    late, _answered, recent, hold = _with(migrated_url, fill)
    overdue = privacy_requests(database_url=migrated_url, overdue=True)
    assert [r.id for r in overdue] == [late]
    assert overdue[0].deadline == overdue[0].received_at + timedelta(days=30)
    by_id = {r.id: r for r in privacy_requests(database_url=migrated_url)}
    assert by_id[hold].deadline is None and by_id[recent].deadline is not None
    assert set(ledger.OPEN_STATUSES) == {"pending", "erased", "unproven", "failed"}
    # The health check (issue 009) reads this ledger and reports the late request, and only it.
    (check,) = check_health(database_url=migrated_url, only=["ops.erasure_deadlines"]).results
    assert (check.status, check.value, [e["request"] for e in check.evidence]) == (Status.CRITICAL, 1.0, [late])
    with pytest.raises(psycopg.errors.UniqueViolation):  # one active hold per user
        _rows(migrated_url, "INSERT INTO agentdb.privacy_requests (kind, user_id, status, agentdb_version) "
                            "VALUES ('hold', 9, 'active', 'x')")


def _statements(body: str) -> list[str]:
    namespace: dict[str, object] = {}
    exec(body, namespace)  # only assignments and function definitions
    return list(namespace["_DDL"])  # type: ignore[call-overload]


def test_migration_010_writes_out_the_ledger_ddl_as_it_is_now() -> None:
    current = [textwrap.dedent(s).strip() for s in DDL]
    assert _statements(migration_body()) == current
    spec = importlib.util.spec_from_file_location("m010", VERSIONS / "010_gdpr_erasure.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert [textwrap.dedent(s).strip() for s in module._DDL] == current
