"""Governance checks: each kind of violation is caught in a fixture migration; the project passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _fixture_migrations import migrations_copy, write_migration
from conftest import run_cli

from agentdb import commands, governance
from agentdb.governance.squawk import find_squawk, lint, strip_version_table

ALTER_OK = "op.execute('COMMENT ON TABLE users IS ''People'' ')"


@pytest.fixture
def location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = migrations_copy(tmp_path)
    monkeypatch.setenv("AGENTDB_SCRIPT_LOCATION", str(copy))
    return copy


def _rules(report: governance.CheckReport) -> set[tuple[str, str]]:
    return {(v.filename, v.rule) for v in report.violations}


def test_001_alone_passes_and_its_squawk_exception_is_reported(location: Path) -> None:
    report = governance.check()

    assert report.ok, [str(v) for v in report.violations]
    assert [(e.revision, e.rule) for e in report.exemptions] == [("001", "prefer-bigint-over-smallint")]
    assert report.exemptions[0].reason


def test_alembic_version_table_statements_are_not_linted() -> None:
    binary = find_squawk()
    assert binary is not None
    sql = commands.sql("base:001")
    assert "prefer-text-field" in {f["rule_name"] for f in lint(sql, "001.sql", binary)}  # VARCHAR(32) version_num

    stripped = strip_version_table(sql)

    assert "alembic_version" not in stripped.replace("-- (alembic version table)", "")
    assert len(stripped.splitlines()) == len(sql.splitlines())
    assert "prefer-text-field" not in {f["rule_name"] for f in lint(stripped, "001.sql", binary)}


def test_file_name_must_match_revision_id(location: Path) -> None:
    write_migration(location, "002_Add-Things.py", revision="002", down_revision="001", upgrade=ALTER_OK)
    write_migration(location, "004_more.py", revision="003", down_revision="002", upgrade=ALTER_OK)

    report = governance.check(squawk=False)

    assert ("002_Add-Things.py", "file-name") in _rules(report)
    assert ("004_more.py", "file-name") in _rules(report)


def test_ids_must_be_sequential_without_gaps(location: Path) -> None:
    write_migration(location, "003_skipped_one.py", revision="003", down_revision="001", upgrade=ALTER_OK)

    report = governance.check(squawk=False)

    messages = [v.message for v in report.violations if v.rule == "sequence"]
    assert any("002 missing before 003" in m for m in messages)
    assert any("down_revision is 001, must be 002" in m for m in messages)


def test_history_must_have_a_single_head(location: Path) -> None:
    write_migration(location, "002_branch_a.py", revision="002", down_revision="001", upgrade=ALTER_OK)
    write_migration(location, "003_branch_b.py", revision="003", down_revision="001", upgrade=ALTER_OK)

    report = governance.check(squawk=False)

    heads = [v for v in report.violations if v.rule == "single-head"]
    assert {v.revision for v in heads} == {"002", "003"}
    assert "it has 2: 002, 003" in heads[0].message


@pytest.mark.parametrize(
    "doc",
    ["", "Add things.", "Add things.\n\nWhy: <say why this change is needed>\n\nRevision ID: 002\nRevises: 001"],
    ids=["no-docstring", "first-line-only", "untouched-template"],
)
def test_docstring_must_say_what_and_why(location: Path, doc: str) -> None:
    path = write_migration(location, "002_add_things.py", revision="002", down_revision="001", upgrade=ALTER_OK,
                           doc=doc or "x")
    if not doc:
        path.write_text(path.read_text().replace('"""x"""\n', "", 1))

    report = governance.check(squawk=False)

    assert ("002_add_things.py", "docstring") in _rules(report)


def test_downgrade_must_not_be_empty(location: Path) -> None:
    write_migration(location, "002_add_things.py", revision="002", down_revision="001", upgrade=ALTER_OK,
                    downgrade='"""Nothing to undo."""\npass')

    report = governance.check(squawk=False)

    assert _rules(report) == {("002_add_things.py", "downgrade")}


def test_squawk_finding_is_a_violation_naming_rule_and_line(location: Path) -> None:
    write_migration(location, "002_index_country.py", revision="002", down_revision="001",
                    upgrade="op.create_index('users_country_idx', 'users', ['country'])",
                    downgrade="op.drop_index('users_country_idx', table_name='users')")

    report = governance.check()

    (violation,) = [v for v in report.violations if v.rule == "squawk"]
    assert violation.filename == "002_index_country.py"
    assert "require-concurrent-index-creation" in violation.message
    assert violation.line is not None and "CREATE INDEX users_country_idx" in violation.message


def test_squawk_exception_declared_with_reason_is_reported_not_a_violation(location: Path) -> None:
    write_migration(location, "002_index_country.py", revision="002", down_revision="001",
                    upgrade="op.create_index('users_country_idx', 'users', ['country'])",
                    downgrade="op.drop_index('users_country_idx', table_name='users')",
                    extra='squawk_exceptions = {"require-concurrent-index-creation": "users is tiny at this point"}\n')

    report = governance.check()

    assert report.ok, [str(v) for v in report.violations]
    assert ("002", "require-concurrent-index-creation", "users is tiny at this point") in {
        (e.revision, e.rule, e.reason) for e in report.exemptions
    }


@pytest.mark.parametrize(
    ("exceptions", "expected"),
    [('{"require-concurrent-index-creation": ""}', "gives no reason"),
     ('{"ban-drop-column": "we never drop here"}', "squawk does not raise it here")],
    ids=["no-reason", "stale"],
)
def test_squawk_exception_without_reason_or_not_needed_is_a_violation(
    location: Path, exceptions: str, expected: str
) -> None:
    write_migration(location, "002_index_country.py", revision="002", down_revision="001",
                    upgrade="op.create_index('users_country_idx', 'users', ['country'])",
                    downgrade="op.drop_index('users_country_idx', table_name='users')",
                    extra=f"squawk_exceptions = {exceptions}\n")

    report = governance.check()

    assert any(v.rule == "squawk-exception" and expected in v.message for v in report.violations)


def test_new_column_of_user_linked_table_must_be_in_personal_data_registry(location: Path) -> None:
    write_migration(location, "002_add_nickname.py", revision="002", down_revision="001",
                    upgrade="op.add_column('users', sa.Column('nickname', sa.Text(), nullable=True))\n"
                            "op.create_table('moods', sa.Column('id', sa.BigInteger(), primary_key=True),\n"
                            "    sa.Column('artist_id', sa.BigInteger(), sa.ForeignKey('artists.id')),\n"
                            "    sa.Column('mood', sa.Text()))",
                    downgrade="op.drop_table('moods')\nop.drop_column('users', 'nickname')")
    declared = {("users", c) for c in ("id", "email", "display_name", "spotify_user_id", "country", "locale",
                                       "status", "last_login_at", "created_at", "updated_at")}
    declared |= {("artists", c) for c in ("id", "user_id", "name", "spotify_artist_id", "genres", "country",
                                          "popularity", "followers", "verified", "bio", "created_at", "updated_at")}

    report = governance.check(squawk=False, personal_data=lambda: declared)

    missing = {v.message.split()[2] for v in report.violations if v.rule == "personal-data"}
    assert missing == {"users.nickname", "moods.id", "moods.artist_id", "moods.mood"}  # moods -> artists -> users

    declared |= {("users", "nickname"), ("moods", "id"), ("moods", "artist_id"), ("moods", "mood")}
    assert governance.check(squawk=False, personal_data=lambda: declared).ok


def test_personal_data_rule_runs_against_the_real_registry(location: Path) -> None:
    write_migration(location, "002_add_nickname.py", revision="002", down_revision="001",
                    upgrade="op.add_column('users', sa.Column('nickname', sa.Text(), nullable=True))",
                    downgrade="op.drop_column('users', 'nickname')")

    report = governance.check(squawk=False)

    assert not any(s.startswith("personal-data") for s in report.skipped)
    assert [(v.filename, v.message.split()[2]) for v in report.violations if v.rule == "personal-data"] == [
        ("002_add_nickname.py", "users.nickname"),
    ]
    result = run_cli("check", "--no-squawk", env={"AGENTDB_SCRIPT_LOCATION": str(location)})
    assert result.returncode == 7
    assert "[personal-data] new column users.nickname" in result.stderr


def test_cli_check_prints_one_line_per_violation_and_exits_non_zero(location: Path) -> None:
    write_migration(location, "003_gap.py", revision="003", down_revision="001", upgrade=ALTER_OK, downgrade="pass")
    env = {"AGENTDB_SCRIPT_LOCATION": str(location)}

    result = run_cli("check", "--no-squawk", env=env)

    assert result.returncode == 7
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3  # gap, wrong down_revision, empty downgrade
    assert all(line.startswith("error: 003_gap.py: [") for line in errors)

    as_json = run_cli("check", "--no-squawk", "--json", env=env)
    assert as_json.returncode == 7
    data = json.loads(as_json.stdout)
    assert data["ok"] is False and {v["rule"] for v in data["violations"]} == {"sequence", "downgrade"}


def test_cli_check_passes_on_a_clean_history(location: Path) -> None:
    result = run_cli("check", env={"AGENTDB_SCRIPT_LOCATION": str(location)})

    assert result.returncode == 0, result.stderr
    assert "allowed squawk prefer-bigint-over-smallint" in result.stdout
