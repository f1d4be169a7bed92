"""Erasure: one person gone everywhere (partitions, archive, audit images), proven, idempotent, index only."""

from __future__ import annotations

import json

import _privacy_db
import psycopg
import pytest
from _privacy_db import (
    analytics_partitions,
    archive_partition,
    busy_user,
    detach_partition,
    dump,
    found_in,
    person,
    rows,
    scalar,
)
from psycopg import sql

import agentdb
from agentdb.errors import ErasureFailed, UnknownUser
from agentdb.privacy import erase_user, erase_users, request_erasure
from agentdb.privacy.erase import _collect, _params, _session
from agentdb.privacy.plan import build_plan
from agentdb.privacy.proof import capture
from agentdb.runtime.settings import RunSettings

#: Fixtures: a fresh copy of a database seeded once per session (see _privacy_db).
seeded_template = _privacy_db.seeded_template
seeded_url = _privacy_db.seeded_url

DISTINCT_NAME = "Quintessa Vandermolen-Oyelaran"


def test_erasure_leaves_no_trace_and_keeps_what_the_registry_keeps(seeded_url: str) -> None:
    user = busy_user(seeded_url)
    who = person(seeded_url, user, rename=DISTINCT_NAME)  # the audit log now holds both names
    with psycopg.connect(seeded_url) as conn:  # an application that names the actor by e-mail, as some do
        conn.execute("SELECT set_config('agentdb.actor', %s, true)", (who.email,))
        conn.execute("UPDATE consent SET policy_version = '2026-11' WHERE user_id = %s", (user,))
    assert found_in(dump(seeded_url), who) == ["e-mail", "name", "external id"]
    events = scalar(seeded_url, "SELECT count(*) FROM analytics WHERE user_id = %s", (user,))
    audit = scalar(seeded_url, "SELECT count(*) FROM audit_log WHERE subject_user_id = %s", (user,))
    added = rows(seeded_url, "SELECT t.id FROM playlist_tracks t JOIN playlists p ON p.id = t.playlist_id "
                             "WHERE t.added_by_user_id = %s AND p.owner_user_id <> %s", (user, user))

    report = erase_user(user, database_url=seeded_url)

    assert report.status == "done" and report.proof is not None and report.proof.hits == 0, report.as_dict()
    assert report.proof.values >= 4 and report.proof.relations > 20
    assert found_in(dump(seeded_url), who) == []  # pg_dump of every schema, the ledger included
    assert scalar(seeded_url, "SELECT count(*) FROM users WHERE id = %s", (user,)) == 0
    for table, column in (("consent", "user_id"), ("api_keys", "user_id"), ("playlists", "owner_user_id"),
                          ("recommendations", "user_id")):
        assert scalar(seeded_url, sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
            sql.Identifier(table), sql.Identifier(column)), (user,)) == 0, table
    # Kept, anonymised: the events, the audit trail, the entries added to other people's playlists.
    assert report.changes["public.analytics"] == {"nullified": events}
    assert scalar(seeded_url, "SELECT count(*) FROM analytics WHERE user_id IS NULL") >= events
    assert scalar(seeded_url, "SELECT count(*) FROM audit_log WHERE subject_user_id = %s", (user,)) > audit
    for (entry,) in added:
        assert scalar(seeded_url, "SELECT added_by_user_id FROM playlist_tracks WHERE id = %s", (entry,)) is None
    actors = {r[0] for r in rows(seeded_url, "SELECT DISTINCT actor FROM audit_log WHERE subject_user_id = %s "
                                             "AND action = 'delete'", (user,))}
    assert actors == {f"agentdb privacy: erasure request {report.request_id}"}
    pseudonyms = {r[0] for r in rows(seeded_url, "SELECT DISTINCT actor FROM audit_log WHERE subject_user_id = %s "
                                                 "AND action = 'update' AND entity_type = 'consent'", (user,))}
    assert len(pseudonyms) == 1 and pseudonyms.pop().startswith("erased:")  # the e-mail as actor, replaced
    (request,) = agentdb.privacy.privacy_requests(database_url=seeded_url)
    assert (request.kind, request.user_id, request.status, request.proof_hits) == ("erasure", user, "done", 0)
    assert request.deadline is not None and (request.deadline - request.received_at).days == 30
    assert request.rows_affected == report.changes and request.db_user and request.host
    event = rows(seeded_url, "SELECT details, user_id FROM event_logs WHERE event_type = 'privacy.erasure'")
    assert event == [({"request": report.request_id, "tables": len(report.changes), "rows": report.rows}, None)]


def test_a_second_erasure_changes_nothing_and_says_so(seeded_url: str) -> None:
    user = busy_user(seeded_url)
    first = erase_user(user, database_url=seeded_url)
    before = dump(seeded_url)

    again = erase_user(user, database_url=seeded_url)

    assert (again.status, again.erased_by, again.rows) == ("nothing", first.request_id, 0)
    assert dump(seeded_url) == before
    assert len(agentdb.privacy.privacy_requests(database_url=seeded_url)) == 1


def test_an_unknown_user_id_is_a_clear_error_and_leaves_no_trace(seeded_url: str) -> None:
    before = dump(seeded_url)
    with pytest.raises(UnknownUser, match="unknown user id 987654"):
        erase_user(987654, database_url=seeded_url)
    with pytest.raises(UnknownUser):
        erase_user(987654, database_url=seeded_url, dry_run=True)
    assert agentdb.privacy.privacy_requests(database_url=seeded_url) == []
    assert dump(seeded_url) == before


def test_the_dry_run_changes_nothing_and_counts_what_the_erasure_does(seeded_url: str) -> None:
    user = busy_user(seeded_url)
    who = person(seeded_url, user)
    before = dump(seeded_url)

    plan = erase_user(user, database_url=seeded_url, dry_run=True)

    assert dump(seeded_url) == before
    assert plan.status == "planned" and plan.request_id is None and plan.seq_scans == []
    done = erase_user(user, database_url=seeded_url)
    audit = "public.audit_log"
    assert {k: v for k, v in plan.changes.items() if k != audit} == {k: v for k, v in done.changes.items()
                                                                      if k != audit}
    # The audit rows the erasure writes itself (one per deleted audited row) are pseudonymised too.
    assert done.changes[audit]["pseudonymised"] == plan.changes[audit]["pseudonymised"] + plan.audit_rows_written
    assert found_in(dump(seeded_url), who) == []


def test_erasure_reaches_every_partition_a_detached_one_and_an_archived_one(seeded_url: str) -> None:
    user = busy_user(seeded_url)
    who = person(seeded_url, user)
    assert len(analytics_partitions(seeded_url)) > 10  # migration 007, then maintenance: one per month
    detached = detach_partition(seeded_url, user, skip=0)
    archived = archive_partition(seeded_url, user, skip=1)
    in_detached = scalar(seeded_url, sql.SQL("SELECT count(*) FROM {} WHERE user_id = %s").format(
        sql.Identifier(detached)), (user,))
    in_archive = scalar(seeded_url, sql.SQL("SELECT count(*) FROM agentdb_archive.{} WHERE user_id = %s").format(
        sql.Identifier(archived)), (user,))
    attached = scalar(seeded_url, "SELECT count(*) FROM analytics WHERE user_id = %s", (user,))
    assert in_detached and in_archive and attached

    report = erase_user(user, database_url=seeded_url)

    assert report.proof is not None and report.proof.hits == 0
    assert report.changes["public.analytics"] == {"nullified": attached}
    assert report.changes[f"public.{detached}"] == {"nullified": in_detached}
    assert report.changes[f"agentdb_archive.{archived}"] == {"nullified": in_archive}
    assert report.indexed == [f"agentdb_archive.{archived}.user_id"]  # the archive copy had no index
    for table in (sql.Identifier("analytics"), sql.Identifier(detached), sql.Identifier("agentdb_archive", archived)):
        assert scalar(seeded_url, sql.SQL("SELECT count(*) FROM {} WHERE user_id = %s").format(table), (user,)) == 0
        assert scalar(seeded_url, sql.SQL("SELECT count(*) FROM {} WHERE user_id IS NULL AND session_id IS NULL "
                                          "AND country IS NULL").format(table)) > 0
    assert found_in(dump(seeded_url), who) == []


def _seq_scanned(plan_json: object) -> set[str]:
    found: set[str] = set()
    if isinstance(plan_json, dict):
        if plan_json.get("Node Type") == "Seq Scan":
            found.add(str(plan_json["Relation Name"]))
        for value in plan_json.values():
            found |= _seq_scanned(value)
    elif isinstance(plan_json, list):
        for value in plan_json:
            found |= _seq_scanned(value)
    return found


def _explained(url: str, user: int) -> dict[str, set[str]]:
    """step -> relations its statement would read with a sequential scan (EXPLAIN, as the erasure runs it)."""
    from agentdb.connection import connect, create_engine, resolve
    from agentdb.privacy import ledger
    from agentdb.privacy._sql import execute

    target = resolve(url)
    engine = create_engine(target)
    scans: dict[str, set[str]] = {}
    try:
        with connect(engine, target) as connection:
            ledger.ensure_ledger(connection)
            connection.commit()
            plan = build_plan(connection)
            params = _params(ledger.pseudonym_key(connection), user)
            _session(connection, RunSettings())
            _collect(connection, plan, params)
            capture(connection, plan, params)
            for step in plan.steps:
                statement = plan.apply_statement(step) or plan.count_statement(step)
                (document,) = execute(connection, sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement), params)[0]
                scans[f"{step.relation.name}:{step.action}"] = _seq_scanned(document) - {"privacy_settings"}
            connection.rollback()
    finally:
        engine.dispose()
    return scans


def test_no_statement_reads_analytics_or_audit_log_with_a_sequential_scan(seeded_url: str) -> None:
    user = busy_user(seeded_url)
    big = {"analytics", "audit_log", *analytics_partitions(seeded_url)}

    scans = _explained(seeded_url, user)

    assert any(step.startswith("analytics:") for step in scans) and any(s.startswith("audit_log:") for s in scans)
    assert {step: found & big for step, found in scans.items() if found & big} == {}
    # The check sees a missing index: without the one on analytics.user_id, the partitions are scanned.
    index = scalar(seeded_url, "SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_attribute a ON "
                               "a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE i.indrelid = "
                               "'analytics'::regclass AND a.attname = 'user_id'")
    rows(seeded_url, sql.SQL("DROP INDEX {}").format(sql.SQL(index)))
    assert _explained(seeded_url, user)["analytics:nullify"] & big


def test_the_bulk_change_guard_stays_on_and_never_refuses_one_person(seeded_url: str) -> None:
    name = scalar(seeded_url, "SELECT current_database()")
    user = busy_user(seeded_url)
    assert scalar(seeded_url, "SELECT count(*) FROM audit_log WHERE subject_user_id = %s", (user,)) > 1
    limit = sql.SQL("ALTER DATABASE {} SET agentdb.bulk_change_limit = {}")
    # The guard is on during the erasure: with a limit of 0 people it refuses even one, and all rolls back.
    rows(seeded_url, limit.format(sql.Identifier(name), sql.Literal(0)))
    with pytest.raises(ErasureFailed, match="YB001"):
        erase_user(user, database_url=seeded_url)
    assert scalar(seeded_url, "SELECT count(*) FROM users WHERE id = %s", (user,)) == 1
    rows(seeded_url, limit.format(sql.Identifier(name), sql.Literal(1)))

    report = erase_user(user, database_url=seeded_url)  # one person, however many rows: never refused

    assert report.status == "done"
    assert rows(seeded_url, "SELECT DISTINCT tgenabled FROM pg_trigger WHERE tgname LIKE '%%guard%%'") == [("O",)]
    with pytest.raises(psycopg.Error) as refused:  # still guarding: two people at once is refused
        rows(seeded_url, "DELETE FROM consent WHERE user_id IN (SELECT user_id FROM consent LIMIT 20)")
    assert refused.value.sqlstate == "YB001"


def test_a_failed_erasure_rolls_back_everything_and_is_recorded_without_values(seeded_url: str) -> None:
    user = busy_user(seeded_url)
    who = person(seeded_url, user)
    rows(seeded_url, """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'consent rows are frozen'
               USING DETAIL = (SELECT email || ' ' || display_name FROM users WHERE id = OLD.user_id); END $$;
        CREATE TRIGGER frozen BEFORE DELETE ON consent FOR EACH ROW EXECUTE FUNCTION refuse();""")
    before = dump(seeded_url)

    with pytest.raises(ErasureFailed, match="consent rows are frozen") as failure:
        erase_user(user, database_url=seeded_url)

    assert found_in(str(failure.value), who) == []
    (request,) = agentdb.privacy.privacy_requests(database_url=seeded_url)
    assert (request.status, request.error) == ("failed", "[P0001] consent rows are frozen")
    assert dump(seeded_url).count(who.email) == before.count(who.email)  # nothing erased
    rows(seeded_url, "DROP TRIGGER frozen ON consent")
    retried = erase_user(user, database_url=seeded_url)  # the failed request is completed, not duplicated
    assert retried.request_id == request.id and retried.status == "done"


def test_a_queue_of_requests_is_processed_with_one_proof_scan(seeded_url: str) -> None:
    # The fourth shares a display name with two other users: their names stay, and are not this person's trace.
    users = [int(r[0]) for r in rows(seeded_url, "SELECT id FROM users ORDER BY id LIMIT 4")]
    people = [person(seeded_url, u) for u in users]
    shared = {p.user_id for p in people if scalar(seeded_url, "SELECT count(*) FROM users WHERE display_name = %s",
                                                    (p.names[0],)) > 1}
    assert len(shared) == 1
    ids = [request_erasure(u, database_url=seeded_url) for u in users]
    assert [r.status for r in agentdb.privacy.privacy_requests(database_url=seeded_url)] == ["pending"] * 4

    reports = erase_users(database_url=seeded_url)

    assert [r.request_id for r in reports] == ids and {r.status for r in reports} == {"done"}
    assert len({r.proof.seconds for r in reports if r.proof}) == 1  # one scan for the queue
    text = dump(seeded_url)
    assert [found_in(text, p) for p in people] == [["name"] if p.user_id in shared else [] for p in people]
    for report in reports:
        assert report.proof is not None and report.proof.hits == 0
        assert (report.proof.shared_values, report.proof.shared_hits > 0) == (
            (1, True) if report.user_id in shared else (0, False))
    assert json.dumps([r.as_dict() for r in reports])  # reports are plain data


def test_erasure_reaches_the_rollback_archive_and_the_upgrade_restores_everyone_else(seeded_url: str) -> None:
    user = busy_user(seeded_url)
    who = person(seeded_url, user, rename=DISTINCT_NAME)
    consent = scalar(seeded_url, "SELECT count(*) FROM consent")
    mine = scalar(seeded_url, "SELECT count(*) FROM consent WHERE user_id = %s", (user,))
    agentdb.rollback("004", database_url=seeded_url)  # archives analytics, event_logs, audit_log and consent
    archived = dict(rows(seeded_url, "SELECT table_name, archive_table FROM agentdb.archived_tables "
                                     "WHERE restored_at IS NULL"))
    assert {"analytics", "audit_log", "consent", "event_logs"} <= set(archived)
    assert found_in(dump(seeded_url), who) == ["e-mail", "name", "external id"]

    report = erase_user(user, database_url=seeded_url)

    assert report.proof is not None and report.proof.hits == 0, report.as_dict()
    assert report.changes[f"agentdb_archive.{archived['consent']}"] == {"deleted": mine}
    assert report.changes[f"agentdb_archive.{archived['audit_log']}"]["pseudonymised"] > 0
    assert "nullified" in report.changes[f"agentdb_archive.{archived['analytics']}"]
    assert len(report.indexed) >= 4  # CREATE TABLE AS copies have no index: erasure gave them one
    assert found_in(dump(seeded_url), who) == []
    # Back up: the archive is restored, everyone's rows but the erased person's (whose consent rows,
    # left in the archive, would have stopped the restore: they point at a deleted user).
    agentdb.upgrade("005", database_url=seeded_url)  # 005 re-creates the archived tables: restored there
    assert scalar(seeded_url, "SELECT count(*) FROM consent") == consent - mine
    assert scalar(seeded_url, "SELECT count(*) FROM analytics WHERE user_id = %s", (user,)) == 0
    assert scalar(seeded_url, "SELECT count(*) FROM audit_log WHERE subject_user_id = %s", (user,)) > 0
    assert found_in(dump(seeded_url), who) == []


def test_the_proof_finds_a_copy_the_registry_does_not_know_and_records_where_not_what(seeded_url: str) -> None:
    user = busy_user(seeded_url)
    who = person(seeded_url, user, rename=DISTINCT_NAME)
    rows(seeded_url, "CREATE SCHEMA support; CREATE TABLE support.tickets (id int, body text, meta jsonb, tags text[])")
    rows(seeded_url, "INSERT INTO support.tickets VALUES (1, %s, %s, %s), (2, 'nothing here', '{}', '{}')",
         (f"Please call back {who.email.upper()} today", json.dumps({"from": who.names[-1]}), ["vip", who.email]))
    # A namesake: an artist called like the person (its public name, its bio, its audited row) is not a trace.
    rows(seeded_url, "INSERT INTO artists (name, bio) VALUES (%s, %s)", (DISTINCT_NAME, f"{DISTINCT_NAME} sings."))

    report = erase_user(user, database_url=seeded_url)

    assert report.status == "unproven" and report.proof is not None
    assert (report.proof.hits, report.proof.locations) == (3, {"support.tickets.body": 1, "support.tickets.meta": 1,
                                                               "support.tickets.tags": 1})
    assert report.proof.shared_hits == 3  # artists.name, artists.bio, the artist's audited row image
    (request,) = agentdb.privacy.privacy_requests(database_url=seeded_url)
    assert (request.status, request.proof_hits) == ("unproven", 3)
    assert found_in(json.dumps(request.as_dict(), default=str), who) == []
    assert found_in(dump(seeded_url, "--exclude-schema=support"), who) == ["name"]  # the namesake artist only
