"""Plain ``alembic`` from the repository root behaves like ``agentdb`` (issue 7, §3).

Real ``.venv/bin/alembic`` processes with the repository's ``alembic.ini``: one
line per migration on success, and for a bad URL, an unknown revision, a target
out of reach, a changed migration file or a lock timeout the very same one-line
``error: ...`` and exit code as ``.venv/bin/agentdb``, with no traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest
from conftest import BIN, ROOT, fixture_migration, make_script_dir, run_cli

from agentdb.runtime.config import script_directory

STEP_LINE = re.compile(r"^(upgrade|downgrade) (\d{3})_\w+ \((\d+ ms|\d+\.\d s)\)$")
#: What an online change a step drove adds under its step line (agentdb.runtime.environment.describe_online).
ONLINE_LINE = re.compile(r"^  \w+ of [\w.]+(: nothing to do, done already| \(online change \d+\): [\d,]+ rows.*)$")


def alembic(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``.venv/bin/alembic ARGS`` in the repository root; only the variables in ``env`` choose the database."""
    full = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "AGENTDB_SCRIPT_LOCATION"}}
    return subprocess.run([str(BIN / "alembic"), *args], cwd=ROOT, env={**full, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _version(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('agentdb.alembic_version')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT version_num FROM agentdb.alembic_version").fetchone()
        return row[0] if row else None


def test_upgrade_head_prints_one_line_per_migration_and_nothing_else(database_url: str) -> None:
    revisions = [s.revision for s in reversed(list(script_directory().walk_revisions()))]
    up = alembic("upgrade", "head", env={"DATABASE_URL": database_url})
    assert up.returncode == 0, up.stderr
    assert up.stderr == "", "Alembic's own INFO lines stay off"
    lines = up.stdout.splitlines()
    assert [STEP_LINE.match(line).group(2) for line in lines if STEP_LINE.match(line)] == revisions, lines
    steps = [line for line in lines if not line.startswith("  ")]
    assert len(steps) == len(revisions) and all(line.startswith("upgrade ") for line in steps)
    # A step that drove an online change (007) is followed by one line per change, indented.
    assert all(ONLINE_LINE.match(line) for line in lines if line.startswith("  ")), lines
    assert any(ONLINE_LINE.match(line) for line in lines), "007's conversion of analytics is reported"
    assert all(len(line) <= 100 for line in lines), [len(line) for line in lines]

    down = alembic("downgrade", "-1", env={"DATABASE_URL": database_url})
    assert down.returncode == 0, down.stderr
    down_lines = down.stdout.splitlines()
    assert down_lines[0].startswith(f"downgrade {revisions[-1]}_")
    assert all(ONLINE_LINE.match(line) for line in down_lines[1:]), down_lines
    assert _version(database_url) == revisions[-2]


def test_archived_rows_are_reported_after_their_step_and_never_by_a_dry_run(database_url: str) -> None:
    env = {"DATABASE_URL": database_url}
    assert alembic("upgrade", "head", env=env).returncode == 0
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO tracks (title, duration_ms) VALUES ('Kept', 1000)")
    head = _version(database_url)

    dry = alembic("-x", "dry_run=true", "downgrade", "001", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "archived" not in dry.stdout + dry.stderr, "a dry run rolls back: nothing was archived"
    assert _version(database_url) == head

    down = alembic("downgrade", "001", env=env)
    assert down.returncode == 0, down.stderr
    lines = down.stdout.splitlines()
    tracks = [i for i, line in enumerate(lines) if " of public.tracks in agentdb_archive.tracks_002_" in line]
    assert len(tracks) == 1 and lines[tracks[0]].startswith("  archived 1 row of public.tracks"), lines
    assert lines[tracks[0] - 1].startswith("downgrade 002_add_spotify_tables "), "the event follows its step"
    assert all(STEP_LINE.match(line) or line.startswith("  archived ") or ONLINE_LINE.match(line) for line in lines), \
        lines
    assert all(len(line) <= 100 for line in lines)


def _same_error(plain: subprocess.CompletedProcess[str], ours: subprocess.CompletedProcess[str], code: int,
                expected: str, *, warnings: int = 0, normalise: bool = False) -> None:
    """Both exit ``code`` with the same stderr: ``warnings`` lines (retries), then one ``error: ...`` line."""
    for result in (plain, ours):
        assert result.returncode == code, (result.returncode, result.stderr)
        lines = _lines(result.stderr)
        assert len(lines) == warnings + 1, result.stderr
        assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    plain_lines, ours_lines = _lines(plain.stderr), _lines(ours.stderr)
    if normalise:  # timings and pids differ between two runs, and whether a retry's warning saw the blocker yet
        plain_lines, ours_lines = ([re.sub(r", blocked by pid N;", ";", re.sub(r"\d+(\.\d+)?", "N", line))
                                    for line in lines] for lines in (plain_lines, ours_lines))
    assert plain_lines == ours_lines


@pytest.mark.parametrize(
    ("url", "code", "expected"),
    [
        ("postgresql://app:s3cret@pw@127.0.0.1:1/x", 2, "invalid database URL"),
        ("postgresql://app:s3cret@127.0.0.1:nope/x", 2, "invalid port"),
        ("postgresql://app:s3cret@127.0.0.1:1/x", 3, "cannot connect to postgresql://app:***@127.0.0.1:1/x"),
    ],
)
def test_a_bad_url_is_one_line_without_the_password_and_the_same_exit_code(url: str, code: int, expected: str) -> None:
    plain = alembic("upgrade", "head", env={"DATABASE_URL": url})
    ours = run_cli("upgrade", "head", env={"DATABASE_URL": url})
    _same_error(plain, ours, code, expected)
    assert "s3cret" not in plain.stderr + plain.stdout and "@pw" not in plain.stderr


def test_an_unknown_revision_or_one_out_of_reach_is_the_same_error(database_url: str) -> None:
    env = {"DATABASE_URL": database_url}
    _same_error(alembic("upgrade", "zzz", env=env), run_cli("upgrade", "zzz", env=env), 2, "unknown revision 'zzz'")
    assert _version(database_url) is None
    assert alembic("upgrade", "001", env=env).returncode == 0
    _same_error(alembic("downgrade", "-9", env=env), run_cli("downgrade", "-9", env=env), 2,
                "cannot downgrade to '-9'")
    assert _version(database_url) == "001"


def _ini_for(location: Path, directory: Path) -> Path:
    """The repository's alembic.ini with only ``script_location`` changed (plain alembic has no env override)."""
    text = (ROOT / "alembic.ini").read_text()
    ini = directory / "alembic.ini"
    ini.write_text(re.sub(r"(?m)^script_location = .*$", f"script_location = {location}", text))
    return ini


def test_a_changed_migration_file_is_the_same_one_line_refusal(database_url: str, tmp_path: Path) -> None:
    location = make_script_dir(tmp_path)
    ini = _ini_for(location, tmp_path)
    env = {"DATABASE_URL": database_url, "AGENTDB_SCRIPT_LOCATION": str(location)}
    first = alembic("-c", str(ini), "upgrade", "005", env=env)
    assert first.returncode == 0, first.stderr
    edited = next((location / "versions").glob("001_*.py"))
    edited.write_text(edited.read_text() + "\n# edited after it was applied\n")

    plain = alembic("-c", str(ini), "upgrade", "head", env=env)
    ours = run_cli("upgrade", "head", env=env)
    _same_error(plain, ours, 5, "001 changed since it was applied")
    assert _version(database_url) == "005"


def _hold(url: str, ready: threading.Event, release: threading.Event) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("SET application_name = 'blocker-test'")
        conn.execute("LOCK TABLE users IN SHARE MODE")
        ready.set()
        release.wait(120)
        conn.rollback()


def test_a_lock_timeout_is_the_same_one_line_error(database_url: str, tmp_path: Path) -> None:
    alter = fixture_migration("002", "001", "op.add_column('users', sa.Column('nick', sa.Text))",
                              "op.drop_column('users', 'nick')")
    location = make_script_dir(tmp_path, {"002_alter.py": alter}, upto="001")
    ini = _ini_for(location, tmp_path)
    env = {"DATABASE_URL": database_url, "AGENTDB_SCRIPT_LOCATION": str(location), "AGENTDB_RETRY_DELAY": "0.1"}
    assert alembic("-c", str(ini), "upgrade", "001", env=env).returncode == 0
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold, args=(database_url, ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        plain = alembic("-c", str(ini), "-x", "lock_timeout=200ms", "-x", "lock_retries=2", "upgrade", "head", env=env)
        ours = run_cli("upgrade", "head", "--lock-timeout", "200ms", "--lock-retries", "2", env=env)
    finally:
        release.set()
        holder.join()
    _same_error(plain, ours, 4, "could not take its locks after 2 attempts", warnings=1, normalise=True)
    assert "blocker-test" in plain.stderr
    assert _version(database_url) == "001"
