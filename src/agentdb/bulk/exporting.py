"""``bulk_export``: a table (or some of its columns, or a time range of it) to a file, from one snapshot.

One ``COPY (SELECT ...) TO STDOUT`` inside a ``REPEATABLE READ READ ONLY``
transaction: every row comes from the same snapshot, whatever commits
meanwhile, and PostgreSQL writes the CSV itself (JSON Lines: ``row_to_json``).
Columns and the time column are checked against the catalogue; the time range
is two values (``>= since``, ``< until``) passed as literals, never SQL from the
user.  The file is written next to its final name and renamed when complete,
mode 0600 when it holds personal columns; an export of personal columns is
recorded in ``event_logs`` (table, columns, rows; no values).
"""

from __future__ import annotations

import gzip
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from psycopg import sql
from sqlalchemy.exc import DBAPIError

from agentdb.bulk import events, pseudonymize
from agentdb.bulk._sql import copy_out, execute, safe_reason, sqlstate_of
from agentdb.bulk.catalog import TableInfo, find_table, personal_columns
from agentdb.bulk.formats import FileSpec, output_spec
from agentdb.connection import connect, create_engine, resolve
from agentdb.errors import BulkFailed, BulkInputInvalid, BulkTableInvalid
from agentdb.runtime.settings import RunSettings

__all__ = ["ExportProgress", "ExportReport", "bulk_export"]


@dataclass(frozen=True)
class ExportProgress:
    rows: int
    bytes: int


@dataclass
class ExportReport:
    table: str
    file: str
    format: str
    columns: list[str]
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    pseudonymized: list[str] = field(default_factory=list)
    time_column: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    isolation: str = "repeatable read"
    event_log_id: int | None = None

    def summary(self) -> str:
        span = ""
        if self.time_column and (self.since or self.until):
            span = f", {self.time_column} in [{self.since or '-inf'}, {self.until or '+inf'})"
        pseudo = f", {len(self.pseudonymized)} column(s) pseudonymized" if self.pseudonymized else ""
        return (f"exported {self.rows:,} rows of {self.table} ({len(self.columns)} columns{span}{pseudo}) "
                f"to {self.file}: {self.bytes:,} bytes in {self.seconds:.2f} s")

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "file": self.file, "format": self.format, "columns": list(self.columns),
                "rows": self.rows, "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "pseudonymized": list(self.pseudonymized), "time_column": self.time_column,
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None, "isolation": self.isolation,
                "event_log_id": self.event_log_id, "summary": self.summary()}


def _moment(value: str | datetime | date | None, what: str, table: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise BulkInputInvalid(table, what, f"{value[:40]!r} is not an ISO 8601 date or time",
                                   hint="e.g. 2026-01-01 or 2026-01-01T12:00:00+00:00") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _columns(info: TableInfo, columns: list[str] | str | None) -> list[str]:
    if columns is None:
        return list(info.columns)
    names = [c.strip() for c in columns.split(",")] if isinstance(columns, str) else [c.strip() for c in columns]
    if not names or any(not n for n in names):
        raise BulkTableInvalid(info.qualified, "an empty column name in the column list")
    unknown = [n for n in names if n not in info.columns]
    if unknown:
        raise BulkTableInvalid(info.qualified, "no such column: " + ", ".join(repr(n[:63]) for n in unknown[:8]),
                               hint=f"its columns: {', '.join(list(info.columns)[:12])}")
    if len(set(names)) != len(names):
        raise BulkTableInvalid(info.qualified, "a column is named twice in the column list")
    return names


class _Writer:
    """The output: stdout, or a temporary file beside the target renamed into place when complete."""

    def __init__(self, path: str, spec: FileSpec, private: bool) -> None:
        self.path = path
        self.bytes = 0
        self._temp: Path | None = None
        raw: IO[bytes]
        if path == "-":
            raw = sys.stdout.buffer
        else:
            target = Path(path)
            if target.is_dir():
                raise BulkInputInvalid("", "output", f"{target.name!r} is a directory")
            if not target.parent.is_dir() or not os.access(target.parent, os.W_OK):
                raise BulkInputInvalid("", "output", f"the directory of {target.name!r} cannot be written")
            handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            os.fchmod(handle, 0o600 if private else 0o644 & ~_umask())
            self._temp = Path(temp)
            raw = os.fdopen(handle, "wb")
        self._raw = raw
        self._out: IO[bytes]
        if spec.compression == "gzip":
            self._out = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6)  # type: ignore[assignment]
        elif spec.compression == "zstd":
            import zstandard

            self._out = zstandard.ZstdCompressor().stream_writer(raw, closefd=False)
        else:
            self._out = raw

    def write(self, data: bytes) -> None:
        self._out.write(data)
        self.bytes += len(data)

    def commit(self) -> None:
        if self._out is not self._raw:
            self._out.close()
        if self._temp is not None:
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
            os.replace(self._temp, self.path)
            self._temp = None
        else:
            self._raw.flush()

    def abort(self) -> None:
        if self._temp is not None:
            try:
                self._raw.close()
            finally:
                self._temp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def bulk_export(
    table: str,
    path: str | Path,
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    columns: list[str] | str | None = None,
    since: str | datetime | date | None = None,
    until: str | datetime | date | None = None,
    time_column: str | None = None,
    format: str | None = None,
    delimiter: str | None = None,
    pseudonymize_personal: bool = False,
    pseudonym_key: str | bytes | None = None,
    progress: Callable[[ExportProgress], None] | None = None,
) -> ExportReport:
    """Export ``table`` to ``path`` (``-``: standard output) from one REPEATABLE READ snapshot.

    ``columns``: a list (or comma-separated text) of column names, default all.
    ``since``/``until``: a time range on ``time_column`` (default ``created_at``),
    ``since`` included, ``until`` excluded.  ``pseudonymize_personal``: the
    personal columns become keyed pseudonyms (:mod:`agentdb.bulk.pseudonymize`).
    """
    started = time.monotonic()
    text = str(path)
    spec = output_spec(text, format, delimiter, table)
    settings = RunSettings.from_sources({}, {}).merged(
        database_url=database_url, data_dir=str(data_dir) if data_dir else None)
    target = resolve(settings.database_url, settings.data_dir)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            execute(connection, sql.SQL("SET TimeZone = 'UTC'"))
            info = find_table(connection, table)
            chosen = _columns(info, columns)
            start, end = _moment(since, "since", info.qualified), _moment(until, "until", info.qualified)
            column = None
            if start is not None or end is not None or time_column is not None:
                column = time_column or "created_at"
                if column not in info.time_columns():
                    raise BulkTableInvalid(info.qualified, f"{column[:63]!r} is not a date or time column of it",
                                           hint="time columns: " + (", ".join(info.time_columns()) or "none"))
                if start is not None and end is not None and start >= end:
                    raise BulkInputInvalid(info.qualified, "time range", "since must be before until")
            personal = set(personal_columns(info))
            hashed: list[str] = []
            if pseudonymize_personal:
                key = pseudonymize.load_key(info.qualified, pseudonym_key)
                hashed = [c for c in chosen if c in pseudonymize.pseudonymized_columns(info)]
                pseudonymize.install_key(connection, key)
            connection.commit()
            report = ExportReport(info.qualified, "-" if text == "-" else Path(text).name, spec.format, chosen,
                                  pseudonymized=hashed, time_column=column, since=start, until=end)
            select = _select(info, chosen, hashed, column, start, end)
            writer = _Writer(text, spec, private=bool(personal & set(chosen)))
            try:
                rows = _copy(connection, select, spec, writer, progress)
                writer.commit()
            except BaseException:
                writer.abort()
                raise
            report.rows, report.bytes = rows, writer.bytes
            if personal & set(chosen):
                with connection.begin():
                    report.event_log_id = events.record(
                        connection, "bulk.export", f"bulk export of {info.qualified}",
                        {"table": info.qualified, "columns": chosen, "personal_columns": sorted(personal & set(chosen)),
                         "pseudonymized": hashed, "rows": rows, "format": spec.format,
                         "time_column": column, "since": start, "until": end})
            report.seconds = time.monotonic() - started
            return report
    except DBAPIError as exc:
        raise BulkFailed(table, "export", sqlstate_of(exc), safe_reason(str(exc.orig))) from None
    finally:
        engine.dispose()


def _select(info: TableInfo, chosen: list[str], hashed: list[str], column: str | None, start: datetime | None,
            end: datetime | None) -> sql.Composed:
    exprs = []
    for name in chosen:
        ident = sql.Identifier(name)
        value: sql.Composable = pseudonymize.expression(ident) if name in hashed else ident
        exprs.append(sql.SQL("{} AS {}").format(value, ident) if name in hashed else ident)
    where: list[sql.Composable] = []
    if column is not None and start is not None:
        where.append(sql.SQL("{} >= {}").format(sql.Identifier(column), sql.Literal(start)))
    if column is not None and end is not None:
        where.append(sql.SQL("{} < {}").format(sql.Identifier(column), sql.Literal(end)))
    condition = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
    return sql.SQL("SELECT {} FROM {}{}").format(sql.SQL(", ").join(exprs), info.ident, condition)


def _copy(connection: Any, select: sql.Composed, spec: FileSpec, writer: _Writer,
          progress: Callable[[ExportProgress], None] | None) -> int:
    jsonl = spec.format == "jsonl"
    if jsonl:
        statement = sql.SQL("COPY (SELECT row_to_json(x)::text FROM ({}) x) TO STDOUT").format(select)
    else:
        statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER, DELIMITER {})").format(
            select, sql.Literal(spec.delimiter.decode()))
    lines = 0

    def write(block: bytes) -> None:
        nonlocal lines
        # COPY's text format doubles every backslash; JSON text has no other character it escapes.
        writer.write(block.replace(b"\\\\", b"\\") if jsonl else block)
        if progress is not None:
            lines += block.count(b"\n")
            progress(ExportProgress(lines, writer.bytes))

    with connection.begin():
        execute(connection, sql.SQL("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        return copy_out(connection, statement, write)
