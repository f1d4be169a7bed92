"""Scratch databases for the benchmarks: created on the server under test, dropped after."""

from __future__ import annotations

import uuid

import psycopg
import sqlalchemy as sa
from psycopg import sql


def scratch(server: str) -> tuple[str, str]:
    """Create an empty database on ``server``; return its name and URL."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, sa.make_url(server).set(database=name).render_as_string(hide_password=False)


def drop(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
