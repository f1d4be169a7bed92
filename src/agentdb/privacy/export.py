"""Access and portability (GDPR art. 15 and 20): everything held about a person, as one JSON document.

The rows are found the way erasure finds them (:mod:`agentdb.privacy.plan`):
the person's own rows and what hangs from them, the rows that only link to
them (their events, their entries in someone else's playlist), their audit
rows, and the same in archive copies.  Every column comes with its category
and erasure rule from the registry.

Other people's personal data is not included: in each row, a link to
*another* user (who added a track to the person's playlist, who edited their
content) is withheld, as are secrets (``api_keys.key_hash``, which the audit
trigger never copies either) and the audit trail's ``actor`` (it may name an
operator).  What was withheld is listed per table, with the reason.

The document (``format`` ``agentdb-export/1``)::

    {"format": "agentdb-export/1", "user_id": 42, "request_id": 17,
     "exported_at": "2026-11-21T12:00:00+00:00",
     "tables": {
       "public.users": {"table": "users",
                        "columns": {"email": {"category": "contact", "erasure": "delete_row"}, ...},
                        "rows": [{"id": 42, "email": "...", ...}],
                        "withheld": {}},
       "public.playlist_tracks": {..., "withheld": {"added_by_user_id": "another person's id (3 rows)"}},
       ...}}

The file is written next to its final name, flushed, made readable by its
owner only (0600) and renamed into place: a reader never sees half of it.  The
export is recorded in the ledger (rows per table, never the file name, which
often names the person).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from psycopg import sql

from agentdb.connection import connect, create_engine, resolve
from agentdb.errors import ExportFailed, UnknownUser
from agentdb.migrate._common import settings_from
from agentdb.privacy import ledger
from agentdb.privacy._sql import execute
from agentdb.privacy.erase import _collect, _erased_before, _lock_user, _params, _session
from agentdb.privacy.plan import ErasurePlan, Relation, build_plan
from agentdb.privacy.rules import AUDIT_TABLE, declaration, table_rules
from agentdb.schema import metadata
from agentdb.schema._pii import Category
from agentdb.schema.analytics import AUDITED_TABLES
from agentdb.schema.entities import GUARDED_TABLES

__all__ = ["FORMAT", "UserExportReport", "export_user"]

FORMAT = "agentdb-export/1"
#: Columns never exported, with why: secrets the audit trigger excludes too, and the audit actor.
_SECRET = "a secret verifier: never exported"
_ACTOR = "may name another person (the operator who made the change)"
_OTHER = "another person's id"


@dataclass
class UserExportReport:
    """What an export wrote: rows per table, size and digest of the file; never a value or the file name."""

    user_id: int
    request_id: int
    rows: dict[str, int] = field(default_factory=dict)
    withheld: dict[str, dict[str, str]] = field(default_factory=dict)
    bytes: int = 0
    sha256: str = ""
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "request_id": self.request_id, "rows": self.rows,
                "total_rows": self.total_rows, "withheld": self.withheld, "bytes": self.bytes,
                "sha256": self.sha256, "seconds": round(self.seconds, 3)}


def _json(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _user_links(table: str) -> list[str]:
    declared = metadata.tables.get(table)
    if declared is None:
        return []
    return [c.name for c in declared.columns if any(fk.column.table.name == "users" for fk in c.foreign_keys)]


def _secrets(table: str) -> set[str]:
    found: set[str] = set()
    for audited in AUDITED_TABLES:
        if audited.table == table:
            found |= {c for c in audited.excluded if (d := declaration(table, c)) and d.category is Category.CREDENTIAL}
    return found


def _columns(relation: Relation) -> dict[str, dict[str, Any]]:
    described: dict[str, dict[str, Any]] = {}
    for column in relation.columns:
        found = declaration(relation.table, column)
        described[column] = ({"category": found.category.value,
                              "erasure": found.erasure.value if found.erasure else None}
                             if found else {"category": "undeclared", "erasure": None})
    return described


def _rows(connection: sa.Connection, plan: ErasurePlan, relation: Relation, params: dict[str, Any]
          ) -> list[dict[str, Any]]:
    if relation.table == AUDIT_TABLE:
        subject = GUARDED_TABLES[AUDIT_TABLE]
        if not relation.has(subject):
            return []
        where: sql.Composable | None = sql.SQL("{} = %(user)s").format(sql.Identifier(subject))
    else:
        where = plan.person_filter(relation, table_rules()[relation.table])
    if where is None:
        return []
    names = list(relation.columns)
    order = sql.SQL(" ORDER BY id") if "id" in relation.columns else sql.SQL("")
    rows = execute(connection, sql.SQL("SELECT {} FROM {} WHERE {}{}").format(
        sql.SQL(", ").join(map(sql.Identifier, names)), relation.ident, where, order), params)
    return [dict(zip(names, row, strict=True)) for row in rows]


def _withhold(relation: Relation, rows: list[dict[str, Any]], user_id: int) -> dict[str, str]:
    """Remove other people's data and secrets from the rows; what was removed, per column, with why."""
    withheld: dict[str, str] = {}
    counts: dict[str, int] = {}
    links = _user_links(relation.table)
    secrets = _secrets(relation.table)
    audited = {a.entity_type: a.table for a in AUDITED_TABLES}
    for row in rows:
        for column in list(row):
            if column in secrets:
                row.pop(column)
                withheld[column] = _SECRET
            elif column in links and row[column] is not None and row[column] != user_id:
                row[column] = None
                counts[column] = counts.get(column, 0) + 1
        if relation.table == AUDIT_TABLE:
            if "actor" in row:
                row.pop("actor")
                withheld["actor"] = _ACTOR
            table = audited.get(str(row.get("entity_type")), "")
            image_links = _user_links(table)
            for image in ("old_values", "new_values"):
                values = row.get(image)
                if not isinstance(values, dict):
                    continue
                for key in list(values):
                    if key in image_links and values[key] is not None and values[key] != user_id:
                        values[key] = None
                        counts[f"{image}.{key}"] = counts.get(f"{image}.{key}", 0) + 1
    for column, count in counts.items():
        withheld[column] = f"{_OTHER} ({count} row{'s' if count > 1 else ''})"
    return withheld


def _write(path: Path, data: bytes, user_id: int) -> None:
    """Write ``data`` to ``path`` atomically, readable by its owner only."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(prefix=".agentdb-export-", dir=directory)
    except OSError as exc:
        raise ExportFailed(user_id, exc.strerror or "cannot create a file there") from None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ExportFailed(user_id, exc.strerror or "cannot write the file") from None


def export_user(
    user_id: int,
    path: str | Path,
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
) -> UserExportReport:
    """Write everything held about ``user_id`` to ``path`` as one JSON document, and record the export.

    Reads one consistent snapshot (``REPEATABLE READ``).  Raises
    :class:`~agentdb.errors.UnknownUser` when nothing is held about the user.
    """
    started = time.monotonic()
    settings = settings_from(database_url, data_dir)
    target = resolve(settings.database_url, settings.data_dir)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            ledger.ensure_ledger(connection)
            connection.commit()
            plan = build_plan(connection)
            key = ledger.pseudonym_key(connection)
            connection.rollback()
            execute(connection, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            _session(connection, settings)
            params = _params(key, user_id)
            _collect(connection, plan, params)
            exported = datetime.now(UTC)
            tables: dict[str, Any] = {}
            report = UserExportReport(user_id, 0)
            for relation in plan.relations:
                rows = _rows(connection, plan, relation, params)
                if not rows:
                    continue
                withheld = _withhold(relation, rows, user_id)
                tables[relation.qualified] = {"table": relation.table, "columns": _columns(relation), "rows": rows,
                                              "withheld": withheld}
                report.rows[relation.qualified] = len(rows)
                if withheld:
                    report.withheld[relation.qualified] = withheld
            erased_by = _erased_before(connection, user_id)
            connection.rollback()
            if "public.users" not in tables and erased_by is not None:
                raise UnknownUser(user_id, erased_by=erased_by)
            if not tables:
                raise UnknownUser(user_id)
            _lock_user(connection, user_id)
            report.request_id = ledger.open_request(connection, "export", user_id)
            document = {"format": FORMAT, "user_id": user_id, "request_id": report.request_id,
                        "exported_at": exported.isoformat(), "tables": tables}
            data = json.dumps(document, default=_json, ensure_ascii=False, indent=1).encode()
            _write(Path(path), data, user_id)
            report.bytes, report.sha256 = len(data), hashlib.sha256(data).hexdigest()
            ledger.update_request(connection, report.request_id, status="done", completed_at=True,
                                  rows_affected={name: {"exported": n} for name, n in report.rows.items()})
            ledger.record_event(connection, "privacy.export", f"export request {report.request_id} done",
                                {"request": report.request_id, "tables": len(report.rows),
                                 "rows": report.total_rows}, request_id=report.request_id)
            connection.commit()
    finally:
        engine.dispose()
    report.seconds = time.monotonic() - started
    return report
