"""agentdb seed-demo: every table filled, consistent, deterministic, atomic, and refusing what it must."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import psycopg
import pytest
from conftest import create_database, drop_database, run_cli, server_dsn, with_database
from psycopg import sql

import agentdb
from agentdb import demo, errors
from agentdb.demo import _loaders, _vocabulary
from agentdb.demo import seed as demo_seed

#: Base tables of ``public`` that seed-demo does not load itself, and why they still have rows (or may not).
NOT_LOADED = {
    "collaboration_roles": "seeded by migration 004; members use its rows",
    "audit_log": "written by the audit triggers of the tables seed-demo fills",
}


def _rows(url: str, query: str, params: Sequence[object] | None = None) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def _public_tables(url: str) -> list[str]:
    return [str(r[0]) for r in _rows(
        url, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1")]


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table))).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def seeded_url(migrated_url: str) -> str:
    demo.seed_demo("small", database_url=migrated_url)
    return migrated_url


def test_small_scale_puts_rows_in_every_public_table(seeded_url: str) -> None:
    empty = [t for t in _public_tables(seeded_url) if _count(seeded_url, t) == 0]
    assert empty == []


def test_report_counts_match_the_tables(migrated_url: str) -> None:
    report = demo.seed_demo("small", database_url=migrated_url)
    for table, rows in report.rows.items():
        assert _count(migrated_url, table) == rows, table
    assert set(report.rows) >= set(demo.TABLES) | set(NOT_LOADED)
    assert report.rows["analytics"] == demo.SCALES["small"].analytics_rows
    assert report.rows["users"] == demo.SCALES["small"].users


def test_the_seed_documents_queries_return_rows(seeded_url: str) -> None:
    assert _rows(seeded_url, "SELECT * FROM consent WHERE granted = false;")
    months = _rows(seeded_url, "SELECT date_trunc('month', created_at) AS month, COUNT(*) FROM analytics "
                               "GROUP BY month;")
    assert len(months) >= 6
    user_id = _rows(seeded_url, "SELECT min(entity_id) FROM audit_log WHERE entity_type = 'user'")[0][0]
    assert _rows(seeded_url, "SELECT * FROM audit_log WHERE entity_type = 'user' AND entity_id = %s", (user_id,))


def test_audit_rows_name_the_seeding_as_actor(seeded_url: str) -> None:
    actors = _rows(seeded_url, "SELECT DISTINCT actor FROM audit_log")
    assert actors == [(demo.ACTOR,)]
    audited = {r[0] for r in _rows(seeded_url, "SELECT DISTINCT entity_type FROM audit_log")}
    assert {"user", "artist", "consent", "collaboration_member", "api_key"} <= audited


def test_playlist_positions_are_contiguous_from_zero(seeded_url: str) -> None:
    bad = _rows(seeded_url, "SELECT playlist_id FROM playlist_tracks GROUP BY playlist_id "
                            "HAVING min(position) <> 0 OR max(position) <> count(*) - 1")
    assert bad == []


def test_artist_matches_are_unique_unordered_pairs_without_self_pairs(seeded_url: str) -> None:
    assert _rows(seeded_url, "SELECT count(*) FROM artist_matches WHERE artist_id = matched_artist_id") == [(0,)]
    assert _rows(seeded_url, "SELECT least(artist_id, matched_artist_id), greatest(artist_id, matched_artist_id) "
                             "FROM artist_matches GROUP BY 1, 2 HAVING count(*) > 1") == []
    both_orders = _rows(seeded_url, "SELECT bool_or(artist_id < matched_artist_id), "
                                    "bool_or(artist_id > matched_artist_id) FROM artist_matches")
    assert both_orders == [(True, True)]


def test_data_is_consistent_across_tables(seeded_url: str) -> None:
    checks = {
        "album total_tracks = its tracks": "SELECT a.id FROM albums a LEFT JOIN tracks t ON t.album_id = a.id "
                                           "GROUP BY a.id HAVING a.total_tracks <> count(t.id)",
        "ISRC year = release year": "SELECT t.id FROM tracks t JOIN albums a ON a.id = t.album_id "
                                    "WHERE substr(t.isrc, 6, 2) <> to_char(a.release_date, 'YY')",
        "event after signup": "SELECT a.id FROM analytics a JOIN users u ON u.id = a.user_id "
                              "WHERE a.created_at < u.created_at",
        "event country = user country": "SELECT a.id FROM analytics a JOIN users u ON u.id = a.user_id "
                                        "WHERE a.country IS DISTINCT FROM u.country",
        "click after serve": "SELECT id FROM recommendations WHERE clicked_at < served_at",
        "recommendation by a recommender": "SELECT r.id FROM recommendations r JOIN model_versions m "
                                           "ON m.id = r.model_version_id WHERE m.name <> 'track-recommender' "
                                           "OR r.created_at < m.created_at",
        "content versions 1..n": "SELECT content_id FROM ai_content_versions GROUP BY content_id "
                                 "HAVING min(version) <> 1 OR max(version) <> count(*)",
        "UPC check digit": "SELECT id FROM albums WHERE (SELECT sum(substr(reverse(upc), i, 1)::int "
                           "* CASE WHEN i % 2 = 0 THEN 3 ELSE 1 END) FROM generate_series(1, length(upc)) i) % 10 <> 0",
        "translation differs from title": "SELECT x.id FROM track_translations x JOIN tracks t ON t.id = x.track_id "
                                          "WHERE x.locale = 'ja' AND x.title = t.title",
        "collaboration has its matched artists": "SELECT c.id FROM collaborations c WHERE (SELECT count(*) FROM "
                                                 "collaboration_members m WHERE m.collaboration_id = c.id "
                                                 "AND m.artist_id IS NOT NULL) < 2",
        "one owner per collaboration": "SELECT m.collaboration_id FROM collaboration_members m JOIN "
                                       "collaboration_roles r ON r.id = m.role_id WHERE r.name = 'owner' "
                                       "GROUP BY 1 HAVING count(*) <> 1",
        "api key prefix is the key's start": "SELECT id FROM api_keys WHERE key_prefix NOT LIKE 'sk\\_live\\_%'",
    }
    failures = {name: rows for name, q in checks.items() if (rows := _rows(seeded_url, q))}
    assert failures == {}


def test_consent_has_granted_declined_and_revoked_rows(seeded_url: str) -> None:
    kinds = dict(_rows(seeded_url, """
        SELECT CASE WHEN granted THEN 'granted' WHEN revoked_at IS NOT NULL THEN 'revoked' ELSE 'declined' END,
               count(*) FROM consent GROUP BY 1"""))
    assert set(kinds) == {"granted", "declined", "revoked"}


def _checksums(url: str, tables: Iterable[str]) -> dict[str, str]:
    result = {}
    with psycopg.connect(url) as conn:
        for table in tables:
            row = conn.execute(sql.SQL("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} AS t").format(
                sql.Identifier("public", table))).fetchone()
            assert row is not None
            result[table] = str(row[0])
    return result


def test_same_seed_gives_the_same_data_and_another_seed_does_not(migrated_url: str, head_template: str) -> None:
    demo.seed_demo("small", database_url=migrated_url, seed=7)
    tables = ("users", "tracks", "playlist_tracks", "consent", "analytics", "event_logs")
    other = create_database(head_template)
    third = create_database(head_template)
    try:
        demo.seed_demo("small", database_url=with_database(server_dsn(), other), seed=7)
        demo.seed_demo("small", database_url=with_database(server_dsn(), third), seed=8)
        first = _checksums(migrated_url, tables)
        assert first == _checksums(with_database(server_dsn(), other), tables)
        different = _checksums(with_database(server_dsn(), third), tables)
        assert all(first[t] != different[t] for t in tables)
    finally:
        drop_database(other)
        drop_database(third)


def test_refuses_a_database_not_at_head(database_url: str) -> None:
    agentdb.upgrade("002", database_url=database_url)
    with pytest.raises(errors.NotAtHead) as caught:
        demo.seed_demo("small", database_url=database_url)
    assert "002" in str(caught.value) and "agentdb upgrade" in str(caught.value)
    assert caught.value.revisions == ("002",)


def test_refuses_an_empty_database_with_no_migrations(database_url: str) -> None:
    with pytest.raises(errors.NotAtHead, match="base"):
        demo.seed_demo("small", database_url=database_url)


def test_refuses_a_non_empty_database_naming_the_table(migrated_url: str) -> None:
    with psycopg.connect(migrated_url) as conn:
        conn.execute("INSERT INTO tracks (title, duration_ms) VALUES ('Existing', 1000)")
    with pytest.raises(errors.DatabaseNotEmpty, match=r"public\.tracks") as caught:
        demo.seed_demo("small", database_url=migrated_url)
    assert caught.value.table == "tracks"
    assert "already has 1 row:" in str(caught.value)
    assert _count(migrated_url, "users") == 0


@pytest.mark.parametrize(("limit", "said"), [(1000, "200 rows"), (200, "200 rows"), (199, "more than 199 rows")])
def test_refusal_of_a_non_empty_table_says_the_exact_count_up_to_the_limit(
    seeded_url: str, monkeypatch: pytest.MonkeyPatch, limit: int, said: str
) -> None:
    """The count stops at a limit (a refusal should not scan a big table); at or below it, it is exact."""
    assert _count(seeded_url, "users") == 200 and demo.TABLES[0] == "users"
    monkeypatch.setattr(demo_seed, "EMPTY_CHECK_LIMIT", limit)
    with pytest.raises(errors.DatabaseNotEmpty) as caught:
        demo.seed_demo("small", database_url=seeded_url)
    assert f"table public.users already has {said}:" in str(caught.value)
    assert "or more" not in str(caught.value)


def test_append_adds_a_second_batch_without_collisions(seeded_url: str) -> None:
    report = demo.seed_demo("small", database_url=seeded_url, append=True)
    assert _count(seeded_url, "users") == 2 * demo.SCALES["small"].users
    assert report.rows["model_versions"] == 0  # the registry's versions are reused
    assert _count(seeded_url, "model_versions") == len(_vocabulary._MODELS)


def test_failure_in_a_late_table_leaves_every_table_as_it_was(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {t: _count(migrated_url, t) for t in _public_tables(migrated_url)}

    def bad_event_logs(ctx: _loaders._Context) -> int:  # violates event_logs_level_valid_check
        return ctx.copy("event_logs", ("level", "source", "event_type"), [("info", "api", "ok"),
                                                                          ("fatal", "api", "boom")])

    assert demo.TABLES[-1] == "event_logs" and demo.TABLES.index("analytics") < demo.TABLES.index("event_logs")
    monkeypatch.setitem(_loaders._LOADERS, "event_logs", bad_event_logs)
    with pytest.raises(errors.SeedFailed) as caught:
        demo.seed_demo("small", database_url=migrated_url)
    assert caught.value.table == "event_logs" and caught.value.sqlstate == "23514"
    assert {t: _count(migrated_url, t) for t in _public_tables(migrated_url)} == before


def test_bulk_analytics_path_restores_indexes_and_constraints(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    definitions = """
        SELECT 'c:' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid = 'public.analytics'::regclass
        UNION ALL SELECT 'i:' || indexrelid::regclass::text || ' ' || pg_get_indexdef(indexrelid) FROM pg_index
        WHERE indrelid = 'public.analytics'::regclass ORDER BY 1"""
    before = _rows(migrated_url, definitions)
    monkeypatch.setattr(demo, "BULK_INDEX_THRESHOLD", 1000)
    demo.seed_demo("small", database_url=migrated_url)
    assert _rows(migrated_url, definitions) == before
    with psycopg.connect(migrated_url) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("INSERT INTO analytics (user_id, event_type) VALUES (-1, 'play')")


def test_cli_seeds_through_the_installed_entry_point(migrated_url: str) -> None:
    result = run_cli("--database-url", migrated_url, "seed-demo", "--scale", "small", "--users", "30",
                     "--analytics-rows", "500", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tables"][0] == {**report["tables"][0], "table": "users", "rows": 30}
    assert _count(migrated_url, "analytics") == 500

    again = run_cli("--database-url", migrated_url, "seed-demo", "--scale", "small")
    assert again.returncode == 1, again.stderr  # a refusal (README: 1 refused or not confirmed)
    assert again.stderr.strip().startswith("error: table public.users already has 30 rows:")
    assert "--append" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_cli_refuses_a_database_not_at_head_with_exit_1(database_url: str) -> None:
    result = run_cli("--database-url", database_url, "seed-demo", "--scale", "small")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().startswith("error: the database is at revision base")
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_rejects_an_unknown_scale(migrated_url: str) -> None:
    result = run_cli("--database-url", migrated_url, "seed-demo", "--scale", "huge")
    assert result.returncode != 0
    assert "unknown demo scale 'huge'" in result.stderr
