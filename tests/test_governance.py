"""Governance checks: each kind of violation is caught in a fixture migration; the project passes.

The SQL the checks read is parsed by PostgreSQL's own parser (pglast); the
cases a hand-written scanner gets wrong are run on the real server, and what
the check says a statement adds is compared with what PostgreSQL really made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from _fixture_migrations import migrations_copy, write_migration
from conftest import ROOT, create_database, drop_database, run_cli, server_dsn, with_database

import agentdb
from agentdb import governance
from agentdb.governance._sql import statements
from agentdb.governance.personal_data import new_columns
from agentdb.governance.squawk import NOT_INSTALLED, find_squawk, lint, strip_version_table

ALTER_OK = """op.execute("COMMENT ON TABLE users IS 'People'")"""
#: ``PATH`` without the virtualenv: how a user runs ``/path/to/venv/bin/agentdb`` without activating it.
BARE_PATH = "/usr/bin:/bin"


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
    sql = agentdb.sql("base:001")
    assert "prefer-text-field" in {f["rule_name"] for f in lint(sql, "001.sql", binary)}  # VARCHAR(32) version_num

    stripped = strip_version_table(sql)

    assert "alembic_version" not in stripped.replace("/* (alembic version table) */", "")
    assert len(stripped.splitlines()) == len(sql.splitlines())
    assert "prefer-text-field" not in {f["rule_name"] for f in lint(stripped, "001.sql", binary)}
    kept = [s.text for s in statements(sql) if "alembic_version" not in s.text]
    assert [s.text for s in statements(stripped)] == kept  # every other statement is untouched


def test_version_table_lookalikes_in_bodies_strings_and_comments_are_kept() -> None:
    sql = (
        "CREATE FUNCTION public.bump() RETURNS void LANGUAGE plpgsql AS $body$\n"
        "BEGIN\n"
        "UPDATE agentdb.alembic_version SET version_num='999';\n"
        "END;\n"
        "$body$;\n"
        "COMMENT ON TABLE users IS E'it\\'s;\n"
        "UPDATE agentdb.alembic_version SET version_num=''1'';';\n"
        "-- UPDATE agentdb.alembic_version SET version_num='2';\n"
        "UPDATE agentdb.alembic_version SET version_num='002' WHERE agentdb.alembic_version.version_num = '001';\n"
    )

    stripped = strip_version_table(sql)

    lines, kept = sql.splitlines(), stripped.splitlines()
    assert kept[:8] == lines[:8]  # a function body, an E'' string and a comment: no statement on the table
    assert kept[8:] == ["/* (alembic version table) */"]


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




def test_cli_check_passes_on_a_clean_history_without_the_venv_on_path(location: Path) -> None:
    result = run_cli("check", env={"AGENTDB_SCRIPT_LOCATION": str(location), "PATH": BARE_PATH})

    assert result.returncode == 0, result.stderr
    assert "may break squawk prefer-bigint-over-smallint" in result.stdout
    assert "not checked" not in result.stderr


def test_squawk_is_found_where_its_wheel_installed_it_whatever_path_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", BARE_PATH)

    found = find_squawk()

    assert found is not None
    assert Path(found).parent.resolve() == Path(sysconfig.get_path("scripts")).resolve()


# --- squawk missing: not a pass, not a violation ----------------------------------------------------------------


@pytest.fixture
def without_squawk(tmp_path: Path) -> Path:
    """The python of an environment with agentdb and every dependency but squawk-cli (a partial install).

    A virtualenv whose site-packages links every entry of this one except
    squawk-cli's; its bin/ has no squawk, and ``PATH`` will not have one either.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    for entry in Path(sysconfig.get_path("purelib")).iterdir():
        if not entry.name.lower().startswith("squawk"):
            (target / entry.name).symlink_to(entry)
    found = subprocess.run(
        [str(python), "-c", "from agentdb.governance.squawk import find_squawk; print(find_squawk() or '')"],
        capture_output=True, text=True, check=True, env={**os.environ, "PATH": BARE_PATH},
    ).stdout.strip()
    if found:
        pytest.skip(f"squawk is installed outside this venv ({found}): its absence cannot be simulated here")
    return python


def _check_with(python: Path, *args: str, location: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTDB_SCRIPT_LOCATION": str(location), "PATH": BARE_PATH}
    return subprocess.run([str(python), "-c", "from agentdb.cli import main; main()", "check", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)


def test_squawk_not_installed_is_reported_as_not_checked_exit_9(location: Path, without_squawk: Path) -> None:
    result = _check_with(without_squawk, location=location)

    assert result.returncode == 9, result.stderr
    assert f"not checked: {NOT_INSTALLED}" in result.stderr
    assert "error:" not in result.stderr and "violation" not in result.stderr.replace("no violation", "")
    assert "no violation in 1 migrations, but 1 check(s) could not run" in result.stderr
    data = json.loads(_check_with(without_squawk, "--json", location=location).stdout)
    assert data["ok"] is False and data["violations"] == [] and data["unknown"] == [NOT_INSTALLED]
    skipped = _check_with(without_squawk, "--no-squawk", location=location)
    assert skipped.returncode == 0, skipped.stderr  # not run on request: nothing is unknown


def test_squawk_not_installed_and_a_violation_exits_7(location: Path, without_squawk: Path) -> None:
    write_migration(location, "003_gap.py", revision="003", down_revision="001", upgrade=ALTER_OK)

    result = _check_with(without_squawk, location=location)

    assert result.returncode == 7
    assert "not checked: squawk: not installed" in result.stderr
    assert "error: 003_gap.py: [sequence]" in result.stderr


# --- SQL read by PostgreSQL's parser, compared with what PostgreSQL really creates -------------------------------

#: Run before each case: the tables the cases refer to.
BASE = "CREATE TABLE users (id bigint PRIMARY KEY, email text); CREATE TABLE artists (id bigint PRIMARY KEY);"

PARSER_CASES: dict[str, tuple[str, set[tuple[str, str]]]] = {
    # A dollar-quoted body with semicolons, quotes and lines that look like DDL: the function is created, not run.
    "dollar-quoted-body": ("""
CREATE FUNCTION public.make_ghost() RETURNS void LANGUAGE plpgsql AS $body$
BEGIN
    RAISE NOTICE 'it''s; (not) "done"';
ALTER TABLE users ADD COLUMN ghost text;
CREATE TABLE phantoms (id bigint, user_id bigint REFERENCES users (id));
END;
$body$;
CREATE TABLE notes (
    id bigint PRIMARY KEY,
    body text DEFAULT $$it's (a "note"); ok$$,
    user_id bigint REFERENCES users (id)
);
""", {("notes", "id"), ("notes", "body"), ("notes", "user_id")}),
    # E'' strings: a backslash-escaped quote does not end the string.
    "e-string": ("""
CREATE TABLE quotes (
    id bigint PRIMARY KEY,
    said text DEFAULT E'it\\'s, (really) here',
    user_id bigint REFERENCES users (id)
);
""", {("quotes", "id"), ("quotes", "said"), ("quotes", "user_id")}),
    # Comments with quotes and parentheses in them are comments.
    "comments": ("""
CREATE TABLE remarks (
    id bigint PRIMARY KEY,  -- the user's remark; "quoted" (
    /* it's ) unbalanced ' */
    user_id bigint REFERENCES users (id),
    remark text
);
""", {("remarks", "id"), ("remarks", "user_id"), ("remarks", "remark")}),
    # Quoted identifiers keep case, spaces, commas, semicolons and doubled quotes; unquoted ones fold to lower case.
    "quoted-identifiers": ('''
CREATE TABLE "Odd;Table" ("Nick Name" text, "a,b" text, "say ""hi""" text, "User" bigint REFERENCES users (id));
ALTER TABLE Users ADD COLUMN NickName text;
''', {("Odd;Table", "Nick Name"), ("Odd;Table", "a,b"), ("Odd;Table", 'say "hi"'), ("Odd;Table", "User"),
      ("users", "nickname")}),
    # One ALTER TABLE over several lines adding several columns and a foreign key.
    "multi-command-alter": ("""
ALTER TABLE artists
    ADD COLUMN owner_id bigint,
    ADD COLUMN pronouns text,
    ADD CONSTRAINT artists_owner_fk FOREIGN KEY (owner_id) REFERENCES users (id);
""", {("artists", "owner_id"), ("artists", "pronouns")}),
    # A DO block runs its static statements, and EXECUTE of a constant string.
    "do-block": ("""
DO $do$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'mood') THEN
        ALTER TABLE users ADD COLUMN mood text;
    END IF;
    EXECUTE 'ALTER TABLE users ADD COLUMN tagline text';
END
$do$;
""", {("users", "mood"), ("users", "tagline")}),
    # A renamed column is a new name the registry must know.
    "rename-column": ("ALTER TABLE users RENAME COLUMN email TO email_address;", {("users", "email_address")}),
}

_COLUMNS = """
    SELECT c.relname, a.attname FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND a.attnum > 0 AND NOT a.attisdropped
"""
_FOREIGN_KEYS = """
    SELECT child.relname, parent.relname FROM pg_constraint AS k
    JOIN pg_class AS child ON child.oid = k.conrelid JOIN pg_class AS parent ON parent.oid = k.confrelid
    WHERE k.contype = 'f' AND k.connamespace = 'public'::regnamespace
"""


@pytest.fixture(scope="module")
def scratch() -> Iterator[psycopg.Connection[tuple[str, str]]]:
    """A connection to a new empty database; each case runs in a transaction that is rolled back."""
    name = create_database()
    try:
        with psycopg.connect(with_database(server_dsn(), name)) as conn:
            yield conn
    finally:
        drop_database(name)


def _catalog(conn: psycopg.Connection[tuple[str, str]], query: str) -> set[tuple[str, str]]:
    return {(str(a), str(b)) for a, b in conn.execute(query).fetchall()}


@pytest.mark.parametrize("case", list(PARSER_CASES))
def test_new_columns_are_what_postgresql_creates(scratch: psycopg.Connection[tuple[str, str]], case: str) -> None:
    sql, expected = PARSER_CASES[case]
    try:
        scratch.execute(BASE)
        columns_before, keys_before = _catalog(scratch, _COLUMNS), _catalog(scratch, _FOREIGN_KEYS)
        scratch.execute(sql)
        created = _catalog(scratch, _COLUMNS) - columns_before
        linked = _catalog(scratch, _FOREIGN_KEYS) - keys_before
    finally:
        scratch.rollback()

    found = new_columns(sql)

    assert created == expected  # the case says what PostgreSQL does ...
    assert set(found.columns) == created  # ... and the check reads the same
    assert set(found.edges) == linked
    assert not found.unreadable


def test_statement_postgresql_cannot_parse_is_reported_and_hides_nothing_else(location: Path) -> None:
    upgrade = "\n".join([
        """op.execute("COMMENT ON TABLE users IS 'a; b'")""",
        """op.execute("ALTER TABLE users ADD COLUMN nickname text NOT NUL")""",
        """op.execute("ALTER TABLE users ADD COLUMN mood text")""",
    ])
    write_migration(location, "002_broken_sql.py", revision="002", down_revision="001", upgrade=upgrade,
                    downgrade="""op.execute("ALTER TABLE users DROP COLUMN mood")""")

    report = governance.check(squawk=False)

    mood, broken = sorted((v for v in report.violations if v.rule == "personal-data"), key=lambda v: v.message)
    assert broken.message.startswith(f"offline SQL line {broken.line} does not parse (syntax error at or near")
    assert broken.message.endswith("its new columns cannot be checked")
    assert broken.line is not None and "NOT NUL" in agentdb.sql("001:002").splitlines()[broken.line - 1]
    assert mood.message.startswith("new column users.mood of user-linked table users")
