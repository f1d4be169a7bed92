"""``agentdb import`` / ``agentdb export``: ``-`` for stdin and stdout, ``--json``, exit codes, 100 columns."""

from __future__ import annotations

import json
from pathlib import Path

from _bulk_helpers import HEADER, analytics_line, cli, count, users


def _fits(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 100, line


def test_import_from_stdin_and_export_to_stdout(migrated_url: str, tmp_path: Path) -> None:
    ids = users(migrated_url)
    body = ("\n".join([HEADER] + [analytics_line(ids[i % 3]) for i in range(30)]) + "\n").encode()
    result = cli("--database-url", migrated_url, "import", "analytics", "-", "--json", stdin=body, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["file"], report["rows_loaded"], report["adds_up"]) == ("-", 30, True)
    again = cli("--database-url", migrated_url, "import", "analytics", "-", stdin=body, cwd=tmp_path)
    assert again.returncode == 0 and "already imported" in again.stdout.decode()
    exported = cli("--database-url", migrated_url, "export", "analytics", "-", "--columns", "user_id,event_type")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.decode().splitlines()[0] == "user_id,event_type"
    assert len(exported.stdout.decode().splitlines()) == 31 and "exported 30 rows" in exported.stderr.decode()
    assert count(migrated_url) == 30


def test_rejected_rows_exit_6_with_every_line_listed_within_100_columns(migrated_url: str, tmp_path: Path) -> None:
    ids = users(migrated_url)
    lines = [HEADER] + [analytics_line(ids[0], country="bad" if i % 2 else "DE") for i in range(50)]
    path = tmp_path / "in.csv"
    path.write_text("\n".join(lines) + "\n")
    # Run where the file is, as a user would: the rejects file is then named as short as the input was.
    result = cli("--database-url", migrated_url, "import", "analytics", path.name, cwd=tmp_path)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 6 and "refused: 25 of 50 rows rejected" in err
    assert "and 5 more" in out and "country" in out
    _fits(out)  # the error itself is one line on stderr, like every agentdb error
    as_json = cli("--database-url", migrated_url, "import", "analytics", str(path), "--json")
    assert as_json.returncode == 6 and len(json.loads(as_json.stdout)["rejects"]) == 25
    bad_table = cli("--database-url", migrated_url, "import", "analytics; drop table users", str(path))
    assert bad_table.returncode == 2 and "no such table" in bad_table.stderr.decode()
    helped = cli("export", "--help")
    assert helped.returncode == 0 and "--pseudonymize" in helped.stdout.decode()
    _fits(helped.stdout.decode())
