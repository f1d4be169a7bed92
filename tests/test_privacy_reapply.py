"""A restored backup brings erased people back; reapply erases them again, from this ledger or from outside it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import _privacy_db
import pytest
from _privacy_db import busy_user, dump, found_in, person, rows, scalar
from conftest import create_database, drop_database, server_dsn, server_version_num, with_database

from agentdb._pgtools import find_tool
from agentdb.cli import main
from agentdb.errors import InvalidLedger
from agentdb.privacy import erase_user, privacy_requests, reapply_erasures

#: Fixtures: a fresh copy of a database seeded once per session (see _privacy_db).
seeded_template = _privacy_db.seeded_template
seeded_url = _privacy_db.seeded_url

DISTINCT_NAME = "Ottoline Brackenbury-Ndiaye"


@pytest.fixture
def restored(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """(backup file, databases made): ``restore(url)`` turns the backup into a new database."""
    made: list[str] = []
    yield tmp_path / "backup.dump", made
    for name in made:
        drop_database(name)


def _backup(url: str, path: Path) -> None:
    tool = find_tool("pg_dump", server_version_num() // 10000)
    subprocess.run([str(tool), "-Fc", "-f", str(path), "--dbname", url], check=True, capture_output=True)


def _restore(path: Path, made: list[str]) -> str:
    name = create_database()
    made.append(name)
    url = with_database(server_dsn(), name)
    tool = find_tool("pg_restore", server_version_num() // 10000)
    subprocess.run([str(tool), "--no-owner", "--exit-on-error", "-d", url, str(path)], check=True,
                   capture_output=True)
    return url


def test_reapply_from_the_live_ledger_erases_the_restored_people_again(
        seeded_url: str, restored: tuple[Path, list[str]]) -> None:
    backup, made = restored
    first = busy_user(seeded_url)
    second = scalar(seeded_url, "SELECT id FROM users u WHERE id <> %s AND NOT EXISTS (SELECT FROM users o "
                                "WHERE o.display_name = u.display_name AND o.id <> u.id) ORDER BY id LIMIT 1",
                    (first,))
    people = [person(seeded_url, first, rename=DISTINCT_NAME), person(seeded_url, second)]
    _backup(seeded_url, backup)  # before the erasures
    requests = [erase_user(p.user_id, database_url=seeded_url).request_id for p in people]
    copy = _restore(backup, made)
    back = "SELECT count(*) FROM users WHERE id = ANY(%s)"
    assert scalar(copy, back, ([p.user_id for p in people],)) == 2  # the restore brought them back

    report = reapply_erasures(database_url=copy, from_database=seeded_url)

    assert [r.request_id for r in report.erased_again] == requests and report.merged == 2
    assert all(r.proof is not None and r.proof.hits == 0 for r in report.requests)
    text = dump(copy)
    assert [found_in(text, p) for p in people] == [[], []]
    ledger = privacy_requests(database_url=copy)  # the restored database now knows, for the next restore
    assert sorted((r.id, r.user_id, r.status, r.reapply_count) for r in ledger) == [
        (requests[0], first, "done", 1), (requests[1], second, "done", 1)]
    again = reapply_erasures(database_url=copy)  # its own ledger now: nothing left to do
    assert [r.status for r in again.requests] == ["nothing", "nothing"] and again.erased_again == []


def test_reapply_from_a_ledger_file_kept_outside_the_backup(seeded_url: str, restored: tuple[Path, list[str]],
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backup, made = restored
    who = person(seeded_url, busy_user(seeded_url))
    _backup(seeded_url, backup)
    erase_user(who.user_id, database_url=seeded_url)
    main(["--database-url", seeded_url, "privacy", "requests", "--json"])  # `... --json > ledger.json`
    exported = capsys.readouterr().out
    ledger_file = tmp_path / "ledger.json"
    ledger_file.write_text(exported)
    assert found_in(exported, who) == []  # the ledger holds no personal data
    copy = _restore(backup, made)

    planned = reapply_erasures(database_url=copy, ledger_file=ledger_file, dry_run=True)
    assert [r.status for r in planned.requests] == ["planned"] and planned.merged == 0
    assert scalar(copy, "SELECT count(*) FROM users WHERE id = %s", (who.user_id,)) == 1  # the dry run kept them
    done = reapply_erasures(database_url=copy, ledger_file=ledger_file)

    assert done.hits == 0 and len(done.erased_again) == 1 and done.merged == 1
    assert found_in(dump(copy), who) == []
    ledger_file.write_text('{"requests": [{"id": "x"}]}')
    with pytest.raises(InvalidLedger):
        reapply_erasures(database_url=copy, ledger_file=ledger_file)
    assert rows(copy, "SELECT count(*) FROM agentdb.privacy_requests") == [(1,)]
