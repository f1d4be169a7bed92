"""``agentdb.bulk_import``: the clean path, and the bad-input corpus -- every case named by line, column and reason.

Each bad file holds good lines around the bad one(s).  In the default mode
nothing is loaded and the report lists every bad line; with ``max_rejects``
the good lines are loaded and the bad ones are in the rejects file, byte for
byte.  Rows read = loaded + rejected + skipped, always.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from _bulk_helpers import HEADER, analytics_line, count, rows, users, write

from agentdb.bulk import ImportProgress, bulk_import
from agentdb.errors import BulkInputInvalid, BulkRowsRejected, BulkTableInvalid


@pytest.fixture
def ids(migrated_url: str) -> list[int]:
    return users(migrated_url)


def _file(tmp_path: Path, ids: list[int], bad: list[str], name: str = "in.csv", every: int = 2) -> Path:
    """HEADER, then good lines with the ``bad`` lines after every ``every`` good ones."""
    lines = [HEADER]
    for i, line in enumerate(bad):
        lines += [analytics_line(ids[i % 3]) for _ in range(every)] + [line]
    lines += [analytics_line(ids[0]), analytics_line(ids[1])]
    return write(tmp_path / name, "\n".join(lines) + "\n")


def _refused(url: str, path: Path, **options: object) -> list[tuple[int, str | None, str | None]]:
    with pytest.raises(BulkRowsRejected) as caught:
        bulk_import("analytics", path, database_url=url, **options)  # type: ignore[arg-type]
    report = caught.value.report
    assert report is not None and report.adds_up and report.rows_loaded == 0  # type: ignore[attr-defined]
    assert count(url) == 0, "the default mode loads nothing when a row is bad"
    return [(r.line, r.column, r.sqlstate) for r in report.rejects]  # type: ignore[attr-defined]


def test_a_clean_file_loads_through_copy_and_adds_up(migrated_url: str, ids: list[int], tmp_path: Path) -> None:
    path = _file(tmp_path, ids, [], every=0)
    write(path, "\n".join([HEADER] + [analytics_line(ids[i % 3]) for i in range(50)]) + "\n")
    report = bulk_import("analytics", path, database_url=migrated_url)
    assert (report.status, report.method, report.rows_read, report.rows_loaded) == ("done", "copy", 50, 50)
    assert report.adds_up and count(migrated_url) == 50
    # analytics is partitioned at head: May 2026 had no partition; it got one, and the DEFAULT partition no row.
    assert report.partitions_created == ["public.analytics_p202605"]
    assert count(migrated_url, "analytics_default") == 0 and count(migrated_url, "analytics_p202605") == 50
    assert report.rejects_path is None and not (tmp_path / "in.rejects.csv").exists()


def test_progress_reports_bytes_and_rows_up_to_the_whole_file(migrated_url: str, ids: list[int],
                                                              tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", "\n".join([HEADER] + [analytics_line(ids[i % 3], when="2026-11-02 10:00:00+00")
                                                           for i in range(40)]) + "\n")
    seen: list[ImportProgress] = []
    bulk_import("analytics", path, database_url=migrated_url, progress=seen.append)
    assert seen, "the progress bar is fed"
    size = path.stat().st_size
    assert all(p.bytes_total == size for p in seen) and seen[-1].bytes_done == size
    assert [p.bytes_done for p in seen] == sorted(p.bytes_done for p in seen) and seen[-1].rows >= 40


CASES = [
    # (bad line, expected (column, sqlstate))
    (analytics_line(1, when="2026-13-45 10:00:00+00"), ("created_at", "22008")),
    (analytics_line(1, when="2026-05-01 10:00:00 Mars/Olympus"), ("created_at", "22023")),
    (analytics_line(1, when="not a time"), ("created_at", "22007")),
    (analytics_line("99999999999999999999"), ("user_id", "22003")),
    (analytics_line("12abc"), ("user_id", "22P02")),
    (analytics_line(1, event="Not Valid!"), ("event_type", "23514")),
    (analytics_line(1, country="Germany"), ("country", "23514")),
    (analytics_line(1, props='"{not json"'), ("properties", "22P02")),
    (analytics_line(1, props='"[1, 2]"'), ("properties", "23514")),
    ("1,play,,,DE", ("device", "22P04")),  # too few fields
    (analytics_line(1) + ",extra", (None, "22P04")),  # too many fields
    (analytics_line(1, event=""), ("event_type", "23502")),  # an unquoted empty field is NULL
    (",play,,,DE,mobile,,", ("properties", "23502")),  # NULL in a NOT NULL column
]


@pytest.mark.parametrize(("bad", "expected"), CASES, ids=[c[1][1] + "-" + (c[1][0] or "row") for c in CASES])
def test_each_bad_value_is_named_by_line_column_and_sqlstate(migrated_url: str, ids: list[int], tmp_path: Path,
                                                             bad: str, expected: tuple[str | None, str]) -> None:
    bad = bad.replace("1,", f"{ids[0]},", 1) if bad.startswith("1,") else bad
    path = _file(tmp_path, ids, [bad, bad])
    assert _refused(migrated_url, path) == [(4, *expected), (7, *expected)]


def test_a_user_that_does_not_exist_is_a_foreign_key_reject(migrated_url: str, ids: list[int],
                                                             tmp_path: Path) -> None:
    path = _file(tmp_path, ids, [analytics_line(max(ids) + 1000)])
    assert _refused(migrated_url, path) == [(4, "user_id", "23503")]


def test_keys_repeated_in_the_file_are_rejected_after_the_first(migrated_url: str, ids: list[int],
                                                                tmp_path: Path) -> None:
    line = f"77,{analytics_line(ids[0])}"
    text = "id," + HEADER + "\n" + f"76,{analytics_line(ids[1])}\n" + line + "\n" + line + "\n" + line + "\n"
    with pytest.raises(BulkRowsRejected) as caught:
        bulk_import("analytics", write(tmp_path / "dup.csv", text), database_url=migrated_url)
    rejects = caught.value.report.rejects  # type: ignore[attr-defined]
    assert [(r.line, r.sqlstate) for r in rejects] == [(4, "23505"), (5, "23505")]
    assert all("first on line 3" in r.reason for r in rejects)
    report = bulk_import("analytics", tmp_path / "dup.csv", database_url=migrated_url, max_rejects=2)
    assert (report.rows_loaded, report.rows_rejected) == (2, 2)
    nextval = rows(migrated_url, "SELECT nextval(pg_get_serial_sequence('analytics', 'id'))")[0][0]
    assert nextval > 77, "imported identity values move the sequence past them"


def test_structural_faults_unterminated_quote_nul_invalid_utf8(migrated_url: str, ids: list[int],
                                                               tmp_path: Path) -> None:
    good = analytics_line(ids[0])
    body = (f"{HEADER}\n{good}\n"
            f"{ids[0]},play,,\"{{}}\",D\x00E,mobile,,2026-05-01 10:00:00+00\n"
            f"{good}\n"
            f"{ids[0]},play,,\"{{}}\",D\xe9,mobile,,2026-05-01 10:00:00+00\n").encode("latin-1")
    body += (f"{good}\n{ids[0]},play,,\"{{unterminated,DE,mobile,,2026-05-01\n{good}\n").encode()
    path = write(tmp_path / "faults.csv", body)
    with pytest.raises(BulkRowsRejected) as caught:
        bulk_import("analytics", path, database_url=migrated_url)
    report = caught.value.report
    assert [(r.line, r.column, r.sqlstate) for r in report.rejects] == [  # type: ignore[attr-defined]
        (3, "country", "22021"), (5, "country", "22021"), (7, None, "22P04")]
    assert report.adds_up and report.rows_read == 6  # type: ignore[attr-defined]
    loaded = bulk_import("analytics", path, database_url=migrated_url, max_rejects=3)
    assert (loaded.rows_loaded, loaded.rows_rejected) == (3, 3)
    kept = Path(loaded.rejects_path or "").read_bytes()
    parts = body.split(b"\n")  # the unterminated quote runs to the end of the file, as in PostgreSQL
    assert kept == b"\n".join([HEADER.encode(), parts[2], parts[4], parts[6], parts[7], b""]), \
        "the rejected lines byte for byte, after the header"
    assert stat.S_IMODE(os.stat(loaded.rejects_path or "").st_mode) == 0o600


def test_embedded_newlines_bom_and_crlf_keep_line_numbers_right(migrated_url: str, ids: list[int],
                                                                tmp_path: Path) -> None:
    lines = [HEADER, analytics_line(ids[0], props='"{""note"": 1,\r\n""b"": 2}"'),
             analytics_line(ids[1]), analytics_line(ids[2], country="nope"), analytics_line(ids[0])]
    path = write(tmp_path / "crlf.csv", b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    assert _refused(migrated_url, path) == [(5, "country", "23514")]
    report = bulk_import("analytics", path, database_url=migrated_url, max_rejects=1)
    assert report.rows_loaded == 3
    assert rows(migrated_url, "SELECT properties FROM analytics WHERE properties ? 'note'") == [({"note": 1, "b": 2},)]


def test_latin1_needs_its_encoding(migrated_url: str, ids: list[int], tmp_path: Path) -> None:
    text = "id,email,display_name\n901,zoe@example.org,Zoë Ångström\n"
    path = write(tmp_path / "users.csv", text.encode("latin-1"))
    with pytest.raises(BulkRowsRejected) as caught:
        bulk_import("users", path, database_url=migrated_url)
    assert [(r.line, r.column, r.sqlstate) for r in caught.value.report.rejects] == [  # type: ignore[attr-defined]
        (2, "display_name", "22021")]
    bulk_import("users", path, database_url=migrated_url, encoding="latin1")
    assert rows(migrated_url, "SELECT display_name FROM users WHERE id = 901") == [("Zoë Ångström",)]


@pytest.mark.parametrize(("text", "what"), [
    ("", "is empty"),
    ("user_id;event_type;created_at\n1;play;2026-01-01\n", "delimiter"),
    ("user_id,event_type,nope\n", "not columns"),
    ("user_id,event_type,user_id,created_at\n", "duplicated column"),
    ("user_id,track_id\n", "event_type"),
])
def test_a_wrong_header_is_an_error_before_any_row(migrated_url: str, tmp_path: Path, text: str, what: str) -> None:
    with pytest.raises(BulkInputInvalid) as caught:
        bulk_import("analytics", write(tmp_path / "h.csv", text), database_url=migrated_url)
    assert what in str(caught.value)
    assert count(migrated_url) == 0


def test_header_only_is_an_empty_import(migrated_url: str, tmp_path: Path) -> None:
    report = bulk_import("analytics", write(tmp_path / "h.csv", HEADER + "\n"), database_url=migrated_url)
    assert (report.status, report.rows_read) == ("done", 0)


@pytest.mark.parametrize("name", ["analytics; drop table users", "pg_class", "agentdb.imports", "rollback_archive",
                                  "nope"])
def test_a_name_that_is_not_a_table_is_refused(migrated_url: str, tmp_path: Path, name: str) -> None:
    with pytest.raises(BulkTableInvalid):
        bulk_import(name, write(tmp_path / "x.csv", HEADER + "\n"), database_url=migrated_url)
    assert rows(migrated_url, "SELECT to_regclass('public.users') IS NOT NULL") == [(True,)]


def test_a_rejects_path_that_cannot_be_written_fails_before_any_row(migrated_url: str, ids: list[int],
                                                                     tmp_path: Path) -> None:
    path = _file(tmp_path, ids, [analytics_line(ids[0], country="x")])
    for rejects in (tmp_path / "missing-dir" / "r.csv", tmp_path):
        with pytest.raises(BulkInputInvalid):
            bulk_import("analytics", path, database_url=migrated_url, rejects=rejects, max_rejects=5)
        assert count(migrated_url) == 0


def test_max_rejects_percent_and_dry_run(migrated_url: str, ids: list[int], tmp_path: Path) -> None:
    path = _file(tmp_path, ids, [analytics_line(ids[0], country="x")], every=7)  # 1 bad of 10
    with pytest.raises(BulkRowsRejected):
        bulk_import("analytics", path, database_url=migrated_url, max_rejects="5%")
    dry = bulk_import("analytics", path, database_url=migrated_url, dry_run=True)
    assert (dry.status, dry.rows_rejected, dry.rows_loaded, dry.skipped) == (
        "dry run", 1, 0, {"dry run: would be loaded": 9})
    assert count(migrated_url) == 0
    report = bulk_import("analytics", path, database_url=migrated_url, max_rejects="10%")
    assert (report.rows_loaded, report.rows_rejected, count(migrated_url)) == (9, 1, 9)


def test_on_conflict_skip_and_update(migrated_url: str, ids: list[int], tmp_path: Path) -> None:
    first = write(tmp_path / "a.csv", "id,email,display_name\n501,a501@example.org,One\n502,a502@example.org,Two\n")
    bulk_import("users", first, database_url=migrated_url)
    again = write(tmp_path / "b.csv", "id,email,display_name\n501,a501@example.org,Uno\n503,a503@example.org,Three\n")
    with pytest.raises(BulkRowsRejected) as caught:
        bulk_import("users", again, database_url=migrated_url)
    assert [(r.line, r.sqlstate) for r in caught.value.report.rejects] == [(2, "23505")]  # type: ignore[attr-defined]
    skipped = bulk_import("users", again, database_url=migrated_url, on_conflict="skip")
    assert (skipped.rows_loaded, skipped.rows_skipped, skipped.adds_up) == (1, 1, True)
    third = write(tmp_path / "c.csv", "id,email,display_name\n501,a501@example.org,Uno\n504,a504@example.org,Four\n")
    updated = bulk_import("users", third, database_url=migrated_url, on_conflict="update")
    assert (updated.rows_loaded, updated.rows_updated) == (2, 1)
    assert rows(migrated_url, "SELECT display_name FROM users WHERE id = 501") == [("Uno",)]


def test_json_lines(migrated_url: str, ids: list[int], tmp_path: Path) -> None:
    lines = [
        f'{{"user_id": {ids[0]}, "event_type": "play", "properties": {{"ms": 5}}, '
        '"created_at": "2026-05-01T10:00:00Z"}',
        '{"user_id": "x", "event_type": "play", "created_at": "2026-05-01T10:00:00Z"}',
        "[1, 2]",
        "{broken",
        "",
        f'{{"user_id": {ids[1]}, "event_type": "skip", "country": "FR", "created_at": "2026-06-01T10:00:00Z"}}',
    ]
    path = write(tmp_path / "events.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(BulkRowsRejected) as caught:
        bulk_import("analytics", path, database_url=migrated_url)
    report = caught.value.report
    assert [(r.line, r.column, r.sqlstate) for r in report.rejects] == [  # type: ignore[attr-defined]
        (2, "user_id", "22P02"), (3, None, "22P02"), (4, None, "22P02")]
    assert report.skipped.get("blank line") == 1 and report.adds_up  # type: ignore[attr-defined]
    loaded = bulk_import("analytics", path, database_url=migrated_url, max_rejects=3)
    assert loaded.rows_loaded == 2
    assert rows(migrated_url, "SELECT properties FROM analytics ORDER BY created_at") == [({"ms": 5},), ({},)]
    with pytest.raises(BulkInputInvalid, match="not columns"):
        bulk_import("analytics", write(tmp_path / "k.jsonl", '{"nope": 1}\n'), database_url=migrated_url)


def test_compressed_and_stdin_like_inputs(migrated_url: str, ids: list[int], tmp_path: Path) -> None:
    import gzip

    import zstandard

    text = ("\n".join([HEADER] + [analytics_line(ids[i % 3]) for i in range(20)]) + "\n").encode()
    (tmp_path / "e.csv.gz").write_bytes(gzip.compress(text))
    (tmp_path / "e.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    assert bulk_import("analytics", tmp_path / "e.csv.gz", database_url=migrated_url).rows_loaded == 20
    assert bulk_import("analytics", tmp_path / "e.csv.zst", database_url=migrated_url).rows_loaded == 20
    (tmp_path / "bad.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(BulkInputInvalid, match="gzip"):
        bulk_import("analytics", tmp_path / "bad.csv.gz", database_url=migrated_url)
    assert count(migrated_url) == 40
