"""``agentdb.bulk_export``: round trip, column and time-range choice checked against the catalogue, pseudonyms."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import psycopg
import pytest
from _bulk_helpers import HEADER, analytics_line, rows, users, write

from agentdb.bulk import bulk_export, bulk_import, pseudonym
from agentdb.errors import BulkInputInvalid, BulkTableInvalid

KEY = "a-test-key-of-more-than-16-bytes"


def _checksum(url: str, table: str, columns: str) -> str:
    found = rows(url, f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM (SELECT {columns} FROM {table}) t")
    return str(found[0][0])


@pytest.fixture
def loaded(migrated_url: str, tmp_path: Path) -> str:
    ids = users(migrated_url)
    lines = [HEADER] + [analytics_line(ids[i % 3], when=f"2026-0{1 + i % 6}-0{1 + i % 9} 10:00:00+00",
                                       props=r'"{""i"": ' + str(i) + r', ""s"": ""a\\b \""x\"" é""}"')
                        for i in range(60)]
    bulk_import("analytics", write(tmp_path / "seed.csv", "\n".join(lines) + "\n"), database_url=migrated_url)
    return migrated_url


@pytest.mark.parametrize("name", ["round.csv", "round.tsv", "round.jsonl", "round.csv.gz", "round.jsonl.zst"])
def test_export_then_import_into_an_empty_table_gives_identical_rows(loaded: str, tmp_path: Path, name: str) -> None:
    columns = "id, user_id, event_type, track_id, properties, country, device, session_id, created_at"
    before = _checksum(loaded, "analytics", columns)
    report = bulk_export("analytics", tmp_path / name, database_url=loaded)
    assert report.rows == 60 and report.isolation == "repeatable read"
    with psycopg.connect(loaded, autocommit=True) as conn:
        conn.execute("TRUNCATE analytics")
    back = bulk_import("analytics", tmp_path / name, database_url=loaded)
    assert back.rows_loaded == 60
    assert _checksum(loaded, "analytics", columns) == before


def test_columns_and_time_range_are_checked_and_applied(loaded: str, tmp_path: Path) -> None:
    report = bulk_export("analytics", tmp_path / "part.csv", database_url=loaded, columns="id,created_at",
                         since="2026-02-01", until="2026-04-01T00:00:00+00:00")
    expected = rows(loaded, "SELECT count(*) FROM analytics WHERE created_at >= '2026-02-01' "
                    "AND created_at < '2026-04-01'")[0][0]
    assert report.rows == expected > 0
    assert (tmp_path / "part.csv").read_text().splitlines()[0] == "id,created_at"
    for bad in ({"columns": "id,nope"}, {"columns": "id; drop table users"}, {"time_column": "event_type",
                                                                              "since": "2026-01-01"}):
        with pytest.raises(BulkTableInvalid):
            bulk_export("analytics", tmp_path / "x.csv", database_url=loaded, **bad)  # type: ignore[arg-type]
    with pytest.raises(BulkInputInvalid):
        bulk_export("analytics", tmp_path / "x.csv", database_url=loaded, since="yesterday; drop table users")
    assert not (tmp_path / "x.csv").exists()


def test_pseudonyms_are_keyed_hashes_that_still_join(loaded: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTDB_PSEUDONYM_KEY", raising=False)
    with pytest.raises(BulkInputInvalid, match="no key"):
        bulk_export("users", tmp_path / "u.csv", database_url=loaded, pseudonymize_personal=True)
    monkeypatch.setenv("AGENTDB_PSEUDONYM_KEY", KEY)
    users_report = bulk_export("users", tmp_path / "u.csv", database_url=loaded, pseudonymize_personal=True)
    assert {"id", "email", "display_name"} <= set(users_report.pseudonymized)
    bulk_export("analytics", tmp_path / "a.csv", database_url=loaded, pseudonymize_personal=True,
                columns=["id", "user_id", "event_type"])
    text = (tmp_path / "u.csv").read_text()
    for email, user_id in rows(loaded, "SELECT email, id FROM users"):
        assert email not in text
        assert pseudonym(KEY.encode(), email) in text
        assert pseudonym(KEY.encode(), str(user_id)) in (tmp_path / "a.csv").read_text(), "joins still work"
    again = bulk_export("users", tmp_path / "u2.csv", database_url=loaded, pseudonymize_personal=True)
    assert again.rows == 3 and (tmp_path / "u2.csv").read_text() == text, "stable across exports"
    other = bulk_export("users", tmp_path / "u3.csv", database_url=loaded, pseudonymize_personal=True,
                        pseudonym_key=KEY + "-other")
    assert other.rows == 3 and (tmp_path / "u3.csv").read_text() != text, "another key, other pseudonyms"
    assert stat.S_IMODE(os.stat(tmp_path / "u.csv").st_mode) == 0o600
    assert hashlib.sha256(KEY.encode()).hexdigest() not in str(rows(loaded, "SELECT * FROM pg_stat_activity"))
