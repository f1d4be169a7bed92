"""Personal data: imports and exports recorded in event_logs without values; no value in any output."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from _bulk_helpers import EMAILS, cli, rows, users, write

from agentdb.bulk import bulk_export, bulk_import
from agentdb.errors import BulkRowsRejected

PERSON = ("Dora Confidential", "dora.confidential@example.org", "ZZ9Q")


def test_no_personal_value_in_reports_errors_logs_ledger_or_cli_output(migrated_url: str, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    users(migrated_url)
    name, email, country = PERSON
    text = ("id,email,display_name,country\n"
            f"701,{email},{name},DE\n"
            f"702,{EMAILS[0]},{name} Twin,DE\n"  # the e-mail exists already: unique violation
            f"703,{email.upper()},{name},DE\n"  # CHECK email = lower(email)
            f"704,x{email},{name},{country}\n"  # CHECK country
            f"7o5,y{email},{name},DE\n")  # not a number
    path = write(tmp_path / "people.csv", text)
    outputs: list[str] = []
    with pytest.raises(BulkRowsRejected) as caught:
        bulk_import("users", path, database_url=migrated_url)
    outputs += [str(caught.value), json.dumps(caught.value.report.as_dict(), default=str)]  # type: ignore[attr-defined]
    result = cli("--database-url", migrated_url, "import", "users", str(path), "--max-rejects", "4")
    outputs += [result.stdout.decode(), result.stderr.decode()]
    assert result.returncode == 0, result.stderr
    result = cli("--database-url", migrated_url, "import", "users", str(path), "--json", "--force")
    outputs += [result.stdout.decode(), result.stderr.decode()]
    outputs += [caplog.text, str(rows(migrated_url, "SELECT * FROM agentdb.imports")),
                str(rows(migrated_url, "SELECT * FROM event_logs"))]
    exported = cli("--database-url", migrated_url, "export", "users", str(tmp_path / "out.csv"), "--json")
    outputs += [exported.stdout.decode(), exported.stderr.decode()]
    everything = "\n".join(outputs)
    assert "users" in everything and '"line": 3' in everything, "the outputs do name the bad lines"
    for value in (name, email, email.upper(), country, "7o5", *EMAILS, "Secretname"):
        assert value not in everything, f"a personal value was printed: {value!r}"
    rejects = tmp_path / "people.rejects.csv"
    assert stat.S_IMODE(os.stat(rejects).st_mode) == 0o600 and email.upper() in rejects.read_text()


def test_imports_and_exports_of_personal_columns_are_in_event_logs(migrated_url: str, tmp_path: Path) -> None:
    path = write(tmp_path / "u.csv", "email,display_name\nerin@example.org,Erin Example\n")
    report = bulk_import("users", path, database_url=migrated_url)
    export = bulk_export("users", tmp_path / "o.jsonl", database_url=migrated_url, columns=["id", "email"])
    events = rows(migrated_url, "SELECT event_type, source, details, message FROM event_logs ORDER BY id")
    assert [e[0] for e in events] == ["bulk.import", "bulk.export"]
    imported, exported = events[0][2], events[1][2]
    assert imported["import_id"] == report.import_id and imported["rows_loaded"] == 1
    assert imported["file_sha256"] == report.sha256 and imported["db_user"] and "host" in imported
    assert exported["columns"] == ["id", "email"] and exported["rows"] == 1 == export.rows
    assert "erin" not in json.dumps(events, default=str)
    nonpersonal = write(tmp_path / "r.csv", "name,description\nviewer,Reads\n")
    bulk_import("collaboration_roles", nonpersonal, database_url=migrated_url, on_conflict="skip")
    assert rows(migrated_url, "SELECT count(*) FROM event_logs")[0][0] == 2, "no personal column, no record"
