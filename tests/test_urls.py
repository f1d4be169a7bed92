"""No piece of a password ever shows, however malformed the database URL (issue 7, §4), and one URL form (§6).

A corpus of hand-written URLs and hypothesis-generated passwords full of the
characters that break URLs (``@ : / # ? % & =``, brackets, quotes, spaces) goes
through :func:`agentdb.connection.parse_url` and :func:`redact_url`, and through
the installed ``agentdb`` with ``--database-url`` and with ``DATABASE_URL``.
The oracle: passwords carry marker letters (``QXZJ``) that nothing else in a
URL or a message contains, so any run of 3+ characters of a password that
includes a marker and shows up in the output is a leak.
"""

from __future__ import annotations

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import psycopg
import pytest
import sqlalchemy as sa
from conftest import create_database, drop_database, run_cli, server_dsn, with_database
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from agentdb.connection import Target, parse_url, redact_url
from agentdb.errors import InvalidDatabaseURL

MARKERS = "QXZJ"
#: The characters that break URLs, markers, a few ordinary ones; no lowercase letter that could spell a libpq keyword.
ALPHABET = MARKERS + "@:/#?%&=[]! $'\"\\+,;.-_~é0123456789ab"


def leaked(output: str, *secrets: str) -> list[str]:
    """The pieces of ``secrets`` found in ``output``: runs of 3+ characters that hold a marker, or a whole secret.

    A secret is checked as written and percent-encoded both ways.
    """
    found = []
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote_plus(secret, safe="")}:
            if len(form) >= 3 and form in output:
                found.append(form)
            for start in range(len(form)):
                for end in range(start + 3, len(form) + 1):
                    piece = form[start:end]
                    if any(m in piece for m in MARKERS) and piece in output:
                        found.append(piece)
            if len(form) < 3 and any(m in form for m in MARKERS) and form in output:
                found.append(form)
    return sorted(set(found), key=len, reverse=True)[:5]


def shown(url: str) -> str:
    """Everything agentdb could show for ``url`` without connecting: the refusal, or the redacted URL."""
    try:
        return redact_url(parse_url(url))
    except InvalidDatabaseURL as exc:
        return str(exc)


@dataclass(frozen=True)
class Case:
    url: str
    #: Every secret in the URL: as written, and decoded when that differs.
    secrets: tuple[str, ...]
    #: 2 = refused as invalid; 3 = accepted, then the connection to port 1 fails.
    code: int
    expected: str
    #: The password libpq will get, for accepted URLs (checked through the conninfo agentdb builds).
    password: str | None = None


HOST = "127.0.0.1:1"
CORPUS = [
    # The example: an unencoded '@' in the password.
    Case(f"postgresql://app:Qs3cr@Xpw@{HOST}/appdb", ("Qs3cr@Xpw",), 2, "more than one '@'"),
    Case(f"postgresql://app:QXZ@@{HOST}/appdb", ("QXZ@",), 2, "more than one '@'"),
    Case(f"postgresql://app:Q:X:Z@{HOST}/appdb", ("Q:X:Z",), 3, f"postgresql://app:***@{HOST}/appdb", "Q:X:Z"),
    Case(f"postgresql://app:Q/X@{HOST}/appdb", ("Q/X",), 2, "percent-encode"),
    Case(f"postgresql://app:Q#X@{HOST}/appdb", ("Q#X",), 2, "'#'"),
    Case(f"postgresql://app:Q?X@{HOST}/appdb", ("Q?X",), 3, f"postgresql://app:***@{HOST}/appdb", "Q?X"),
    # Looks like a query string, but the '@' after it says it is the password.
    Case(f"postgresql://app:Q?sslmode=X@{HOST}/appdb", ("Q?sslmode=X",), 3, f"app:***@{HOST}", "Q?sslmode=X"),
    Case(f"postgresql://:QXpw@{HOST}/appdb", ("QXpw",), 3, f"postgresql://:***@{HOST}/appdb", "QXpw"),
    Case("postgresql://app:QXpw@[::1]:1/appdb", ("QXpw",), 3, "postgresql://app:***@[::1]:1/appdb", "QXpw"),
    Case("postgresql://app:QXpw@[::1/appdb", ("QXpw",), 2, "invalid host"),
    Case(f"postgresql://app:Q%40X%2FZ@{HOST}/appdb", ("Q%40X%2FZ", "Q@X/Z"), 3, f"app:***@{HOST}", "Q@X/Z"),
    Case(f"postgresql://app:%51%58%5A@{HOST}/appdb", ("%51%58%5A", "QXZ"), 3, f"app:***@{HOST}", "QXZ"),
    Case(f"postgresql://app:Q%zzX@{HOST}/appdb", ("Q%zzX",), 2, "'%'"),
    Case(f"postgresql://app@{HOST}/appdb?password=QXsecret", ("QXsecret",), 3, f"postgresql://app:***@{HOST}/appdb",
         "QXsecret"),
    Case(f"postgresql://app:ZJQ@{HOST}/appdb?password=QXZ", ("ZJQ", "QXZ"), 3, f"app:***@{HOST}", "QXZ"),
    Case(f"postgresql://app@{HOST}/appdb?password=Q&X", ("Q&X",), 2, "not key=value"),
    Case(f"postgresql://app@{HOST}/appdb?password=Q&X=1", ("Q&X=1",), 2, "unknown connection parameter in"),
    Case(f"postgresql://app@{HOST}/appdb?sslpassword=QXZ&sslmode=disable", ("QXZ",), 3, "sslpassword=***"),
    Case(f"postgresql://app:QXZ@{HOST.split(':')[0]}:notaport/appdb", ("QXZ",), 2, "invalid port"),
    Case(f"postgresql://app:QXZ@{HOST.split(':')[0]}:99999/appdb", ("QXZ",), 2, "invalid port"),
    # The '@' and host forgotten: libpq would read the password as the port.
    Case("postgresql://app:QXZsecret/appdb", ("QXZsecret",), 2, "invalid port"),
    Case(f"postgresql://app:QXZ@{HOST}/app?db", ("QXZ",), 2, "not key=value"),
    Case("host=127.0.0.1 port=1 password=QXZsecret dbname=appdb", ("QXZsecret",), 2, "no scheme"),
    Case("QXZsecret", ("QXZsecret",), 2, "no scheme"),
    Case(f"mysql://app:QXZ@{HOST}/appdb", ("QXZ",), 2, "is not PostgreSQL"),
    Case(f"postgresql://app:QX\nZ@{HOST}/appdb", ("QX\nZ",), 2, "control character"),
    Case(f"postgresql://app:Q X Z@{HOST}/appdb", ("Q X Z",), 3, f"app:***@{HOST}", "Q X Z"),
    Case(f"postgresql://app:QX'Z\"@{HOST}/appdb", ("QX'Z\"",), 3, f"app:***@{HOST}", "QX'Z\""),
    Case(f"postgresql://app:Q\\X@{HOST}/appdb", ("Q\\X",), 3, f"app:***@{HOST}", "Q\\X"),
    Case(f"postgresql+psycopg2://app:QX:Z@{HOST}/appdb", ("QX:Z",), 3, f"postgresql://app:***@{HOST}/appdb", "QX:Z"),
]
IDS = [re.sub(r"\W+", "_", c.url)[:60] for c in CORPUS]


@pytest.mark.parametrize("case", CORPUS, ids=IDS)
def test_corpus_parses_or_refuses_without_showing_the_password(case: Case) -> None:
    text = shown(case.url)
    assert not leaked(text, *case.secrets), text
    assert case.expected in text
    if case.code == 2:
        assert text.startswith("invalid database URL: ") and "\n" not in text
        assert "invalid literal" not in text
    else:
        target = Target(parse_url(case.url), "option")
        assert target.redacted() == text and "%2F" not in text
        assert conninfo_to_dict(target.conninfo()).get("password") == case.password


def _cli_problems(case: Case, how: str) -> str | None:
    """What is wrong with ``agentdb current`` on ``case.url`` given as ``how``; None when all is right."""
    if how == "option":
        result = run_cli("--database-url", case.url, "current", timeout=60)
    else:
        result = run_cli("current", env={"DATABASE_URL": case.url}, timeout=60)
    output = result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if leaked(output, *case.secrets):
        return f"leaked {leaked(output, *case.secrets)}: {output!r}"
    if result.returncode != case.code:
        return f"exit {result.returncode}, expected {case.code}: {output!r}"
    if len(lines) != 1 or not lines[0].startswith("error: ") or case.expected.split("\n")[0] not in lines[0]:
        return f"not one line naming {case.expected!r}: {output!r}"
    return None


@pytest.mark.parametrize("how", ["option", "environment"])
def test_cli_never_shows_the_password_of_any_url_in_the_corpus(how: str) -> None:
    """``agentdb --database-url URL current`` and ``DATABASE_URL=URL agentdb current``, for every URL of the corpus.

    The processes run a few at a time: each spends most of its time importing.
    """
    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = dict(zip(IDS, pool.map(lambda case: _cli_problems(case, how), CORPUS), strict=True))
    assert {key: problem for key, problem in problems.items() if problem} == {}


def test_a_bad_port_says_invalid_port_and_names_nothing() -> None:
    """The issue's report: ``invalid literal for int() with base 10: 'abc'``."""
    for url in ("postgresql://u:pw@h:abc/x", "postgresql://u:pw@h:0/x", "postgresql://u:pw@h:\uff11\uff12/x"):
        with pytest.raises(InvalidDatabaseURL) as caught:
            parse_url(url)
        assert "invalid port" in str(caught.value) and "abc" not in str(caught.value)
        assert "int()" not in str(caught.value) and caught.value.__cause__ is None


passwords = st.text(alphabet=ALPHABET, min_size=1, max_size=24).filter(lambda p: any(m in p for m in MARKERS))


@settings(max_examples=400, deadline=None)
@given(password=passwords)
@example(password="Qs3cr@Xpw")
@example(password="Q?host=X@/Z")
@example(password="5432?host=QX")
def test_any_password_written_unencoded_in_the_url_never_shows(password: str) -> None:
    forms = [
        f"postgresql://app:{password}@db.example:5432/appdb",
        f"postgresql://:{password}@db.example/appdb",
        f"postgresql://app:{password}@[2001:db8::1]:5432/appdb",
        f"postgresql://app:{password}@/appdb?host=/var/run/postgresql",
        f"postgresql://app@db.example/appdb?password={password}",
        f"postgresql://app@db.example/appdb?password={password}&sslmode=require",
        f"postgresql://app@db.example/appdb?sslmode=require&password={password}",
    ]
    for url in forms:
        text = shown(url)
        assert not leaked(text, password), (url, text)
        try:
            target = Target(parse_url(url), "option")
        except InvalidDatabaseURL as exc:
            assert exc.__cause__ is None and exc.__context__ is None
            continue
        assert not leaked(repr(target.url) + str(target.url) + target.scrub(target.conninfo()), password)


@settings(max_examples=300, deadline=None)
@given(password=passwords)
def test_any_password_percent_encoded_is_read_exactly_and_never_shows(password: str) -> None:
    for url in (
        f"postgresql://app:{quote(password, safe='')}@db.example:5432/appdb",
        f"postgresql://app@/appdb?host=/tmp/s&password={quote(password, safe='')}",
    ):
        target = Target(parse_url(url), "option")
        assert target.url.password == password
        assert conninfo_to_dict(target.conninfo())["password"] == password
        assert not leaked(target.redacted(), password)
        driver_message = f'connection to server failed: password "{password}" for {target.conninfo()} refused'
        assert not leaked(target.scrub(driver_message), password)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords)
def test_cli_never_shows_a_generated_password(password: str) -> None:
    for url in (f"postgresql://app:{password}@127.0.0.1:1/appdb", f"postgresql://app@127.0.0.1:1/x?password={password}"):
        result = run_cli("current", env={"DATABASE_URL": url}, timeout=60)
        output = result.stdout + result.stderr
        assert result.returncode in (2, 3), output
        assert not leaked(output, password), (url, output)


# --- the success path: a real role with a password ---------------------------------------------------------

PASSWORD = "Q:X?Z@/#%& é'\"\\J;="


@pytest.fixture
def role_database() -> Any:
    """A database owned by a new LOGIN role whose password has every awkward character; its URL."""
    role = f"t_role_{uuid.uuid4().hex[:8]}"
    name = create_database()
    with psycopg.connect(server_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(PASSWORD)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(role)))
    base = sa.make_url(with_database(server_dsn(), name))
    try:
        yield base.set(username=role, password=PASSWORD).render_as_string(hide_password=False), name, role
    finally:
        drop_database(name)
        with psycopg.connect(server_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_successful_run_shows_the_password_nowhere_and_the_url_in_one_form(role_database: Any) -> None:
    url, name, role = role_database
    assert PASSWORD not in url  # percent-encoded, as it must be written
    up = run_cli("--database-url", url, "upgrade", "001", "--json")
    assert up.returncode == 0, up.stderr
    current = run_cli("current", "--json", env={"DATABASE_URL": url})
    history = run_cli("--database-url", url, "history", "--json")
    debug = run_cli("--debug", "--database-url", url, "current")
    outputs = [up, current, history, debug]
    for result in outputs:
        assert result.returncode == 0, result.stderr
        assert not leaked(result.stdout + result.stderr, PASSWORD), result.stdout + result.stderr

    # One URL form everywhere (§6): libpq scheme, the socket directory not percent-escaped, no password.
    upgrade_db, current_db = json.loads(up.stdout)["database"], json.loads(current.stdout)["database"]
    assert upgrade_db == current_db == Target(parse_url(url), "option").redacted()
    assert current_db.startswith(f"postgresql://{role}:***@") and "%2F" not in current_db

    # Durations rounded to 0.1 ms where they are produced: in the run's report and in the history.
    durations = [s["duration_ms"] for s in json.loads(up.stdout)["steps"]]
    durations += [row["duration_ms"] for row in json.loads(history.stdout)]
    assert durations and all(isinstance(d, float) and round(d, 1) == d for d in durations), durations

    with psycopg.connect(with_database(server_dsn(), name)) as conn:
        rows = [r[0] for r in conn.execute("SELECT row_to_json(r)::text FROM agentdb.migration_runs r")]
        stored = conn.execute("SELECT duration_ms FROM agentdb.migration_runs").fetchall()
    assert rows and all(not leaked(row, PASSWORD) for row in rows), rows
    assert all(round(d, 1) == d for (d,) in stored)
    assert all(f'"db_user":"{role}"' in row for row in rows), "the run really ran as the role with the password"


def test_an_unencoded_password_that_can_be_read_one_way_only_connects(role_database: Any) -> None:
    """``:`` and ``?`` need no escaping in a password (libpq reads them so); the run works and hides it."""
    _url, name, role = role_database
    simple = "QX:Z?J w"
    with psycopg.connect(server_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(simple)))
    raw = f"postgresql://{role}:{simple}@/{name}?host={sa.make_url(server_dsn()).query['host']}"
    result = run_cli("upgrade", "001", env={"DATABASE_URL": raw})
    assert result.returncode == 0, result.stderr
    assert not leaked(result.stdout + result.stderr, simple)
    with psycopg.connect(with_database(server_dsn(), name)) as conn:
        assert conn.execute("SELECT version_num FROM agentdb.alembic_version").fetchone() == ("001",)
        rows = [r[0] for r in conn.execute("SELECT row_to_json(r)::text FROM agentdb.migration_runs r")]
    assert rows and not any(leaked(row, simple) for row in rows)

