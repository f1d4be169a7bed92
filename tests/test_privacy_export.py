"""Access and portability: one JSON document, every table, each column's category, nobody else's data."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import _privacy_db
import pytest
from _privacy_db import busy_user, person, rows, scalar

from agentdb.errors import UnknownUser
from agentdb.privacy import erase_user, export_user, privacy_requests
from agentdb.privacy.rules import declaration

#: Fixtures: a fresh copy of a database seeded once per session (see _privacy_db).
seeded_template = _privacy_db.seeded_template
seeded_url = _privacy_db.seeded_url


def _shared_playlist(url: str) -> tuple[int, int]:
    """(owner, other): a playlist of ``owner`` holds tracks that ``other`` added."""
    owner, other = rows(url, "SELECT p.owner_user_id, t.added_by_user_id FROM playlist_tracks t "
                             "JOIN playlists p ON p.id = t.playlist_id WHERE t.added_by_user_id <> p.owner_user_id "
                             "ORDER BY t.id LIMIT 1")[0]
    return int(owner), int(other)


def test_the_export_holds_every_table_about_the_person_with_categories_and_nobody_elses_data(
        seeded_url: str, tmp_path: Path) -> None:
    owner, other = _shared_playlist(seeded_url)
    them = person(seeded_url, other)
    target = tmp_path / "export.json"

    report = export_user(owner, target, database_url=seeded_url)

    document = json.loads(target.read_text())
    assert (document["format"], document["user_id"], document["request_id"]) == (
        "agentdb-export/1", owner, report.request_id)
    tables = document["tables"]
    assert {"public.users", "public.playlists", "public.playlist_tracks", "public.consent",
            "public.audit_log"} <= set(tables)
    for name, table in tables.items():
        assert table["rows"] and report.rows[name] == len(table["rows"])
        for column, described in table["columns"].items():
            found = declaration(table["table"], column)
            assert found is not None and described == {"category": found.category.value,
                                                       "erasure": found.erasure.value if found.erasure else None}
    assert tables["public.users"]["rows"][0]["id"] == owner
    assert tables["public.users"]["columns"]["email"]["category"] == "contact"
    entries = tables["public.playlist_tracks"]["rows"]
    assert len(entries) == scalar(seeded_url, "SELECT count(*) FROM playlist_tracks t JOIN playlists p "
                                              "ON p.id = t.playlist_id WHERE p.owner_user_id = %s "
                                              "OR t.added_by_user_id = %s", (owner, owner))
    assert {e["added_by_user_id"] for e in entries} <= {owner, None}
    assert "added_by_user_id" in tables["public.playlist_tracks"]["withheld"]
    text = target.read_text().casefold()
    assert not any(v.casefold() in text for v in (them.email, *them.external)), "another person's data"
    assert str(other) not in {str(e["added_by_user_id"]) for e in entries}
    assert "actor" not in tables["public.audit_log"]["rows"][0]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    (request,) = privacy_requests(database_url=seeded_url, kind="export")
    assert (request.status, request.user_id) == ("done", owner)
    assert request.rows_affected == {name: {"exported": n} for name, n in report.rows.items()}
    assert str(tmp_path) not in json.dumps(request.as_dict(), default=str)  # the file name is not recorded


def test_secrets_are_withheld(seeded_url: str, tmp_path: Path) -> None:
    user = busy_user(seeded_url)
    export_user(user, tmp_path / "e.json", database_url=seeded_url)
    keys = json.loads((tmp_path / "e.json").read_text())["tables"]["public.api_keys"]
    assert "key_hash" not in keys["rows"][0] and "key_prefix" in keys["rows"][0]
    assert keys["withheld"] == {"key_hash": "a secret verifier: never exported"}


def test_nothing_to_export_is_a_clear_error(seeded_url: str, tmp_path: Path) -> None:
    with pytest.raises(UnknownUser, match="unknown user id 987654"):
        export_user(987654, tmp_path / "x.json", database_url=seeded_url)
    user = busy_user(seeded_url)
    erased = erase_user(user, database_url=seeded_url)
    with pytest.raises(UnknownUser, match=f"erased \\(request {erased.request_id}\\)"):
        export_user(user, tmp_path / "x.json", database_url=seeded_url)
    assert not (tmp_path / "x.json").exists() and list(tmp_path.iterdir()) == []
