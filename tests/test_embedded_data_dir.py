"""``--data-dir`` naming a file: one line naming the path and that it is a file, exit 3, for start and status."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-directory"
    path.write_text("notes\n")
    return path


@pytest.mark.parametrize("command", [("current",), ("embedded", "status"), ("embedded", "stop")])
def test_a_data_dir_that_is_a_file_is_refused_in_one_line(a_file: Path, command: tuple[str, ...]) -> None:
    result = run_cli("--data-dir", str(a_file), *command)

    assert result.returncode == 3, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert str(a_file) in lines[0] and "is a file, not a directory" in lines[0]
    assert "File exists" not in lines[0]
    assert "created on first use" not in result.stdout
    assert a_file.read_text() == "notes\n"


def test_a_data_dir_whose_pgdata_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pgdata").write_text("")

    result = run_cli("--data-dir", str(tmp_path), "embedded", "status")

    assert result.returncode == 3
    assert "pgdata is a file, not a directory" in result.stderr
