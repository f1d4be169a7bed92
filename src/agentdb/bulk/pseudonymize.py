"""Keyed pseudonyms for exports: HMAC-SHA256 of a value, stable across exports, not reversible without the key.

``pseudonym(key, value) = hex(HMAC-SHA256(key, value as text in UTF-8))[:32]``.
The same value gives the same pseudonym in every export made with the same
key, in every table, so joins still work (``analytics.user_id`` and
``users.id`` pseudonymise alike); without the key nobody can compute one, so
none can be reversed by trying candidate values.

PostgreSQL has no HMAC without pgcrypto (absent from the embedded server), but
it has ``sha256()``; HMAC is two hashes with the key XOR-ed into two pads
(RFC 2104), computed here from the key.  The pads travel as bind parameters
into a temporary table of the export's session -- never into the SQL text, so
the key shows neither in ``pg_stat_activity`` nor in a statement log.

The key comes from ``pseudonym_key=`` (Python), else the file named by
``--key-file``, else the environment variable :data:`KEY_ENV`; at least 16
bytes.  Which columns: those the personal-data registry declares personal, and
the keys their pseudonymous foreign keys point at (``users.id``).
"""

from __future__ import annotations

import hashlib
import hmac
import os

import sqlalchemy as sa
from psycopg import sql

from agentdb.bulk._sql import dbapi
from agentdb.bulk.catalog import TableInfo, personal_columns
from agentdb.errors import BulkInputInvalid

__all__ = ["KEY_ENV", "MIN_KEY_BYTES", "load_key", "pseudonym", "pseudonymized_columns"]

KEY_ENV = "AGENTDB_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16
_KEY_TABLE = sql.Identifier("pg_temp", "agentdb_bulk_key")
HEX_CHARS = 32


def load_key(table: str, key: str | bytes | None = None) -> bytes:
    """The pseudonymisation key: given, else ``$AGENTDB_PSEUDONYM_KEY``; refused when missing or short."""
    if key is None:
        key = os.environ.get(KEY_ENV)
    if key is None or key == "" or key == b"":
        raise BulkInputInvalid(table, "pseudonymize", f"no key: set {KEY_ENV} or give --key-file",
                               hint="the same key gives the same pseudonyms in every export")
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if len(raw) < MIN_KEY_BYTES:
        raise BulkInputInvalid(table, "pseudonymize", f"the key is shorter than {MIN_KEY_BYTES} bytes")
    return raw


def pseudonym(key: bytes, value: str) -> str:
    """The pseudonym of one value (what the export writes), for checks and for joining with other data."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:HEX_CHARS]


def _pads(key: bytes) -> tuple[bytes, bytes]:
    block = hashlib.sha256(key).digest() if len(key) > 64 else key
    block = block.ljust(64, b"\x00")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def install_key(connection: sa.Connection, key: bytes) -> None:
    """The key's pads in a temporary table of this session (bind parameters: not in any SQL text)."""
    inner, outer = _pads(key)
    raw = dbapi(connection)
    raw.execute(sql.SQL("CREATE TEMPORARY TABLE IF NOT EXISTS {} (ipad bytea NOT NULL, opad bytea NOT NULL)").format(
        sql.Identifier("agentdb_bulk_key")))
    raw.execute(sql.SQL("TRUNCATE {}").format(_KEY_TABLE))
    raw.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(_KEY_TABLE), (inner, outer))


def expression(column: sql.Composable) -> sql.Composed:
    """The pseudonym of ``column`` computed in SQL (NULL stays NULL), from the pads of :func:`install_key`."""
    return sql.SQL(
        "CASE WHEN {c} IS NULL THEN NULL ELSE left(encode(sha256((SELECT k.opad FROM {t} k) || "
        "sha256((SELECT k.ipad FROM {t} k) || convert_to({c}::text, 'UTF8'))), 'hex'), {n}) END"
    ).format(c=column, t=_KEY_TABLE, n=sql.Literal(HEX_CHARS))


def pseudonymized_columns(info: TableInfo) -> set[str]:
    """Personal columns of the table, and the keys that personal foreign keys of other tables point at."""
    found = set(personal_columns(info))
    if info.schema == "public":
        from agentdb.schema import metadata
        from agentdb.schema.personal_data import registry

        personal = {(d.table, d.column) for d in registry() if d.pii.personal}
        for table in metadata.tables.values():
            for column in table.columns:
                if (table.name, column.name) not in personal:
                    continue
                for fk in column.foreign_keys:
                    if fk.column.table.name == info.name:
                        found.add(fk.column.name)
    return found & set(info.columns)
