"""Helpers for the privacy tests: a seeded database per test, analytics partitions, searches for a person.

Not a test module (no ``test_`` prefix); imported by ``test_privacy_*.py``,
which bind its fixtures.  A database at head (where migration 007 has partitioned
``analytics``) is seeded with ``seed-demo`` once per session, its DEFAULT
partition drained into monthly partitions by partition maintenance, and
cloned per test (``CREATE DATABASE ... TEMPLATE``), so each test starts from
the same realistic rows in well under a second.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from conftest import create_database, drop_database, server_dsn, server_version_num, with_database
from psycopg import sql

import agentdb
from agentdb._pgtools import find_tool
from agentdb.partitions import maintain_partitions, naming

__all__ = [
    "Person",
    "analytics_partitions",
    "archive_partition",
    "busy_user",
    "cli",
    "detach_partition",
    "dump",
    "found_in",
    "person",
    "rows",
    "scalar",
    "seeded_template",
    "seeded_url",
]



#: The seeded template shared by every test module (name, modules using it).
_SEEDED: dict[str, Any] = {"name": None, "users": 0}


@pytest.fixture(scope="session")
def seeded_template(head_template: str) -> Iterator[str]:
    """A database at head with demo data (60 users, 3,000 analytics rows in monthly partitions), made once.

    Each test module binds this fixture under its own name, so pytest keeps one
    session instance per module: they share the one database (counted, dropped
    by the last to finish) rather than seeding it again.
    """
    if _SEEDED["name"] is None:
        name = create_database(head_template)
        try:
            url = with_database(server_dsn(), name)
            agentdb.seed_demo("small", database_url=url, users=60, analytics_rows=3000, seed=11)
            # seed-demo writes past months, which land in analytics' DEFAULT partition: maintenance drains them.
            maintain_partitions(database_url=url, table="analytics")
        except BaseException:
            drop_database(name)
            raise
        _SEEDED["name"] = name
    _SEEDED["users"] += 1
    try:
        yield _SEEDED["name"]
    finally:
        _SEEDED["users"] -= 1
        if not _SEEDED["users"]:
            drop_database(_SEEDED["name"])
            _SEEDED["name"] = None


@pytest.fixture
def seeded_url(seeded_template: str) -> Iterator[str]:
    """A fresh copy of the seeded database."""
    name = create_database(seeded_template)
    try:
        yield with_database(server_dsn(), name)
    finally:
        drop_database(name)


def rows(url: str, query: str | sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def scalar(url: str, query: str | sql.Composable, params: Any = None) -> Any:
    found = rows(url, query, params)
    return found[0][0] if found else None


@dataclass(frozen=True)
class Person:
    """A seeded user and the values that identify them (what must be gone after erasure)."""

    user_id: int
    email: str
    names: tuple[str, ...]
    external: tuple[str, ...]

    @property
    def values(self) -> tuple[str, ...]:
        return (self.email, *self.names, *self.external)


def person(url: str, user_id: int, *, rename: str | None = None) -> Person:
    """The identifying values of ``user_id``; ``rename`` gives them a distinctive display name first (audited)."""
    old = scalar(url, "SELECT display_name FROM users WHERE id = %s", (user_id,))
    if rename:
        rows(url, "UPDATE users SET display_name = %s WHERE id = %s", (rename, user_id))
    email, spotify = rows(url, "SELECT email, spotify_user_id FROM users WHERE id = %s", (user_id,))[0]
    keys = [r[0] for r in rows(url, "SELECT key_prefix FROM api_keys WHERE user_id = %s", (user_id,))]
    hashes = [r[0] for r in rows(url, "SELECT key_hash FROM api_keys WHERE user_id = %s", (user_id,))]
    playlists = [r[0] for r in rows(url, "SELECT spotify_playlist_id FROM playlists WHERE owner_user_id = %s "
                                         "AND spotify_playlist_id IS NOT NULL", (user_id,))]
    names = (old, rename) if rename else (old,)
    return Person(user_id, email, tuple(n for n in names if n), tuple(v for v in (spotify, *keys, *hashes,
                                                                                   *playlists) if v))


def busy_user(url: str) -> int:
    """A user with rows in many tables: playlists, entries in others' playlists, analytics in several months,
    consent, event logs, audit rows, and an API key (given one here when the demo data gave none)."""
    user = int(scalar(url, """
        SELECT u.id FROM users u
        WHERE EXISTS (SELECT FROM playlists p WHERE p.owner_user_id = u.id)
          AND EXISTS (SELECT FROM consent c WHERE c.user_id = u.id)
          AND EXISTS (SELECT FROM event_logs e WHERE e.user_id = u.id)
          AND EXISTS (SELECT FROM playlist_tracks t JOIN playlists p ON p.id = t.playlist_id
                      WHERE t.added_by_user_id = u.id AND p.owner_user_id <> u.id)
        ORDER BY (SELECT count(DISTINCT date_trunc('month', created_at)) FROM analytics a WHERE a.user_id = u.id) DESC,
                 u.id
        LIMIT 1"""))
    if not scalar(url, "SELECT EXISTS (SELECT FROM api_keys WHERE user_id = %s)", (user,)):
        token = uuid.uuid4().hex
        rows(url, "INSERT INTO api_keys (user_id, name, key_prefix, key_hash, scopes) "
                  "VALUES (%s, 'Studio laptop', %s, encode(sha256(%s::bytea), 'hex'), '{ai:read}')",
             (user, f"sk_test_{token[:8]}", token))
    return user


def dump(url: str, *extra: str) -> str:
    """``pg_dump --data-only`` of every schema (archive and agentdb's own included): the independent search."""
    pg_dump = find_tool("pg_dump", server_version_num() // 10000)
    result = subprocess.run([str(pg_dump), "--data-only", *extra, "--dbname", url], capture_output=True, text=True,
                            check=True)
    return "\n".join(line for line in result.stdout.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def found_in(text: str, who: Person) -> list[str]:
    """Which kinds of the person's values ``text`` contains (never the values themselves, for the test output)."""
    folded = text.casefold()
    kinds = {"e-mail": (who.email,), "name": who.names, "external id": who.external}
    return [kind for kind, values in kinds.items() if any(v.casefold() in folded for v in values)]


def analytics_partitions(url: str) -> list[str]:
    """The partitions of ``analytics`` (monthly and DEFAULT), as migration 007 and maintenance made them."""
    return [r[0] for r in rows(url, "SELECT inhrelid::regclass::text FROM pg_inherits "
                                    "WHERE inhparent = 'analytics'::regclass ORDER BY 1")]


def _month_of(url: str, user_id: int, skip: int) -> str:
    month = scalar(url, "SELECT date_trunc('month', created_at) FROM analytics WHERE user_id = %s "
                        "GROUP BY 1 ORDER BY 1 OFFSET %s LIMIT 1", (user_id, skip))
    return naming.partition_name("analytics", month)


def detach_partition(url: str, user_id: int, skip: int = 0) -> str:
    """Detach a partition holding rows of ``user_id`` and leave it in ``public`` (retention action ``detach``)."""
    name = _month_of(url, user_id, skip)
    rows(url, sql.SQL("ALTER TABLE analytics DETACH PARTITION {}").format(sql.Identifier(name)))
    return name


def archive_partition(url: str, user_id: int, skip: int = 1, *, drop_indexes: bool = True) -> str:
    """Move a partition holding rows of ``user_id`` into the rollback archive, as partition retention does.

    Registered in ``agentdb.archived_tables`` under the partition's own name;
    with ``drop_indexes`` it has no index (like a ``CREATE TABLE AS`` copy).
    Returns the archive table's name.
    """
    name = _month_of(url, user_id, skip)
    archive = f"{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("ALTER TABLE analytics DETACH PARTITION {}").format(sql.Identifier(name)))
        for (constraint,) in conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass "
                                          "AND contype = 'f'", (name,)).fetchall():
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(name),
                                                                              sql.Identifier(constraint)))
        if drop_indexes:
            for (index,) in conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = "
                                         "%s::regclass AND NOT indisprimary", (name,)).fetchall():
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(index)))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(archive)))
        conn.execute("CREATE SCHEMA IF NOT EXISTS agentdb_archive")
        conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA agentdb_archive").format(sql.Identifier(archive)))
        count = conn.execute(sql.SQL("SELECT count(*) FROM agentdb_archive.{}").format(
            sql.Identifier(archive))).fetchone()[0]  # type: ignore[index]
        conn.execute("INSERT INTO agentdb.archived_tables (table_schema, table_name, archive_table, revision, "
                     "run_id, row_count) VALUES ('public', %s, %s, NULL, gen_random_uuid(), %s)",
                     (name, archive, count))
    return archive


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``agentdb --database-url URL ARGS...`` as a user runs it (100 columns)."""
    return subprocess.run([sys.executable, "-m", "agentdb", "--database-url", url, *args], capture_output=True,
                          text=True, env={**_env(), "COLUMNS": "100", "TERM": "dumb"}, timeout=120)


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    return env
