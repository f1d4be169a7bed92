"""``agentdb privacy``: one line per error, exit codes, 100 columns, and never a personal value in the output.

The issue's test: after erasing, exporting, holding and listing through the
CLI, the person's e-mail and names are in none of the captured output, the
ledger, ``event_logs``, ``audit_log`` or ``migration_runs``.
"""

from __future__ import annotations

import json
from pathlib import Path

import _privacy_db
import pytest
from _privacy_db import busy_user, cli, found_in, person, rows

from agentdb.cli import main

#: Fixtures: a fresh copy of a database seeded once per session (see _privacy_db).
seeded_template = _privacy_db.seeded_template
seeded_url = _privacy_db.seeded_url

WIDTH = 100


def _run(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    try:
        main(["--database-url", url, "privacy", *args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_cli_fits_100_columns_and_prints_no_personal_value(seeded_url: str, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    who = person(seeded_url, busy_user(seeded_url))
    result = cli(seeded_url, "privacy", "erase", str(who.user_id))  # as a user runs it, in a 100-column terminal
    assert result.returncode == 0, result.stderr
    for line in (result.stdout + result.stderr).splitlines():
        assert len(line) <= WIDTH and "…" not in line, line
    assert found_in(result.stdout + result.stderr, who) == []
    assert "public.analytics" in result.stdout and "proof: 0 hit(s)" in result.stdout
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    for command in ((), ("erase",), ("export",), ("hold",), ("release",), ("requests",), ("reapply",)):
        _, out, _ = _run(capsys, seeded_url, *command, "--help")
        assert "Usage" in out and "<bool>" not in out, command
        assert max(len(line) for line in out.splitlines()) <= WIDTH, command


def test_every_command_says_what_it_did_in_one_line_and_exits_with_its_code(
        seeded_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    user = busy_user(seeded_url)
    who = person(seeded_url, user, rename="Isolde Quaritch-Mbeki")
    said: list[str] = []

    def run(*args: str, code: int = 0) -> str:
        got, out, err = _run(capsys, seeded_url, *args)
        said.append(out + err)
        assert got == code, (args, out, err)
        return out + err

    assert "unknown user id 999999" in run("erase", "999999", code=2)
    assert "rejected" in run("hold", str(user), "--reason", f"{who.names[-1]} sued", code=2)
    assert "legal hold (request" in run("hold", str(user), "--reason", "case 2026-114")
    refused = run("erase", str(user), code=1)
    assert refused.startswith("error: erasure of user") and len(refused.strip().splitlines()) == 1
    assert "released" in run("release", str(user))
    assert "no active legal hold" in run("release", str(user), code=2)
    exported = run("export", str(user), str(tmp_path / "someone.json"))
    assert "someone.json" not in exported and "sha256" in exported  # the file name is not echoed
    assert (tmp_path / "someone.json").exists()
    plan = run("erase", str(user), "--dry-run")
    assert "nothing was changed" in plan and "sequential scans: none" in plan
    assert "proof: 0 hit(s)" in run("erase", str(user))
    assert "nothing to erase" in run("erase", str(user))
    listing = json.loads(run("requests", "--json"))
    assert [(r["kind"], r["status"]) for r in listing["requests"]] == [
        ("erasure", "done"), ("export", "done"), ("erasure", "refused"), ("hold", "released")]
    assert "would erase again: 0" in run("reapply", "--dry-run")
    assert "give user ids or --pending" in run("erase", code=1)

    assert [found_in(text, who) for text in said if found_in(text, who)] == []
    assert [line for text in said for line in text.splitlines()  # an error is one line, however long
            if (len(line) > WIDTH or "…" in line) and not line.startswith("error: ")] == []
    for table in ("agentdb.privacy_requests", "public.event_logs", "public.audit_log", "agentdb.migration_runs"):
        (text,) = rows(seeded_url, f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")[0]
        assert found_in(text, who) == [], table
