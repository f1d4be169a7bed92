"""``bulk_import``: a file into a table at the speed of COPY, every bad row accounted for, no half-loads.

The clean path is PostgreSQL's COPY of the file's own bytes (``FROM STDIN``,
1 MB blocks, no parsing in Python): a clean file loads at ``\\copy``'s speed.
If COPY refuses anything -- a bad value, a constraint, a missing partition, a
row landing in the DEFAULT partition -- that transaction is rolled back and
the segment takes the slow path (:mod:`agentdb.bulk.stage`), which finds every
bad row, not only the first.  See the package docstring for the whole story.

Each segment (the whole file, or ``batch_rows`` records) is one transaction
with its ledger checkpoint.  Without batches the import is all or nothing.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from queue import Empty, Queue
from typing import Any, TypeVar

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.exc import DBAPIError

from agentdb.bulk import events, ledger
from agentdb.bulk._sql import copy_in, execute, one, safe_reason, sqlstate_of
from agentdb.bulk.catalog import TableInfo, find_table, personal_columns
from agentdb.bulk.formats import BLOCK, BOM, Input, encoding_of, open_input, parse_header
from agentdb.bulk.ledger import Counts
from agentdb.bulk.partitions import ensure_month_partitions, missing_months
from agentdb.bulk.rejects import RejectedRow, RejectsFile
from agentdb.bulk.scan import Classified, Dialect, Scanner, first_record, records
from agentdb.bulk.stage import ROW_ERROR_CLASSES, Bad, Stage, _shown
from agentdb.connection import connect, create_engine, resolve
from agentdb.errors import AgentdbError, BulkBusy, BulkFailed, BulkInputInvalid, BulkRowsRejected
from agentdb.partitions import naming
from agentdb.runtime.locks import RetryPolicy, retry_on_lock_timeout
from agentdb.runtime.settings import RunSettings

__all__ = ["ImportProgress", "ImportReport", "bulk_import"]

_log = logging.getLogger("agentdb.bulk")
T = TypeVar("T")
ON_CONFLICT = ("error", "skip", "update")
_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class ImportProgress:
    """Where an import is, for a progress bar: bytes of the file on disk read, rows so far (estimated)."""

    phase: str
    bytes_done: int
    bytes_total: int
    rows: int


@dataclass
class ImportReport:
    """What an import did.  ``rows_read == rows_loaded + rows_rejected + rows_skipped``, always."""

    table: str
    file: str
    format: str
    sha256: str
    bytes: int
    status: str = "done"  # done | already imported | dry run | refused
    import_id: int | None = None
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0
    #: Of the loaded rows, those that updated an existing row (``on_conflict="update"``).
    rows_updated: int = 0
    #: Why rows were skipped: reason -> count.
    skipped: dict[str, int] = field(default_factory=dict)
    rejects: list[RejectedRow] = field(default_factory=list)
    rejects_path: str | None = None
    seconds: float = 0.0
    #: ``copy`` (every segment went through COPY as it is), ``staged`` or ``copy+staged``.
    method: str = ""
    batches: int = 0
    partitions_created: list[str] = field(default_factory=list)
    #: A dry run's partitions that the import would create.
    partitions_needed: list[str] = field(default_factory=list)
    #: The line a resumed import started from (None: from the start).
    resumed_from_line: int | None = None
    #: The earlier import of the same file (``already imported``): id and when it finished.
    previous: dict[str, Any] | None = None
    event_log_id: int | None = None

    @property
    def adds_up(self) -> bool:
        return self.rows_read == self.rows_loaded + self.rows_rejected + self.rows_skipped

    def skip(self, reason: str, count: int) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count
            self.rows_skipped += count

    def summary(self) -> str:
        if self.status == "already imported":
            when = (self.previous or {}).get("finished_at")
            return (f"{self.file} was already imported into {self.table} (import #{(self.previous or {}).get('id')}"
                    f"{', ' + str(when)[:19] if when else ''}): nothing done (--force imports it again)")
        text = (f"{self.status}: {self.rows_read:,} rows read = {self.rows_loaded:,} loaded + "
                f"{self.rows_rejected:,} rejected + {self.rows_skipped:,} skipped")
        if self.rows_updated:
            text += f" ({self.rows_updated:,} of the loaded updated existing rows)"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table, "file": self.file, "format": self.format, "sha256": self.sha256,
            "bytes": self.bytes, "status": self.status, "import_id": self.import_id, "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded, "rows_rejected": self.rows_rejected, "rows_skipped": self.rows_skipped,
            "rows_updated": self.rows_updated, "adds_up": self.adds_up, "skipped": dict(self.skipped),
            "rejects": [r.as_dict() for r in self.rejects], "rejects_path": self.rejects_path,
            "seconds": round(self.seconds, 3), "method": self.method, "batches": self.batches,
            "partitions_created": list(self.partitions_created), "partitions_needed": list(self.partitions_needed),
            "resumed_from_line": self.resumed_from_line, "previous": self.previous,
            "event_log_id": self.event_log_id, "summary": self.summary(),
        }


def _limit(value: int | str, table: str) -> Callable[[int], int]:
    """``max_rejects`` as a function of the rows read: ``N`` or ``N%``."""
    match = _LIMIT.match(str(value))
    if match is None:
        raise BulkInputInvalid(table, "max_rejects", f"{str(value)[:20]!r} is not N or N%")
    number, percent = float(match.group(1)), bool(match.group(2))
    if percent:
        if number > 100:
            raise BulkInputInvalid(table, "max_rejects", "a percentage is at most 100%")
        return lambda read: int(read * number / 100)
    return lambda read: int(number)


@dataclass
class _Segment:
    """Part of the file loaded in one transaction: whole records, from ``offset`` (on ``line``) to ``end``."""

    offset: int
    line: int
    end: int | None  # None: to the end of the file
    end_line: int | None
    data: bytes | None  # the bytes of a batch (kept in memory: at most batch_rows records)
    last: bool


@dataclass
class _Outcome:
    read: int = 0
    loaded: int = 0
    rejected: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    updated: int = 0
    rejects: list[tuple[RejectedRow, bytes]] = field(default_factory=list)
    method: str = "copy"
    end: int = 0
    end_line: int = 0
    created: list[str] = field(default_factory=list)
    needed: list[str] = field(default_factory=list)
    refused: bool = False

    def add_skip(self, reason: str, count: int) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count


class _Importer:
    def __init__(self, connection: sa.Connection, info: TableInfo, inp: Input, *, columns: list[str],
                 dialect: Dialect, encoding: str, data_offset: int, header: bytes, options: dict[str, Any],
                 report: ImportReport, rejects: RejectsFile, progress: Callable[[ImportProgress], None] | None,
                 lock_timeout: float, database_url: str | None = None, data_dir: str | Path | None = None) -> None:
        self.connection = connection
        self.info = info
        self.inp = inp
        self.columns = columns
        self.dialect = dialect
        self.encoding = encoding
        self.data_offset = data_offset
        self.header = header
        self.options = options
        self.report = report
        self.rejects_file = rejects
        self.progress = progress
        self.lock_timeout = lock_timeout
        #: Where partition maintenance connects to create missing months (the import's own server and database).
        self.database_url = database_url
        self.data_dir = data_dir
        #: Months whose rows a refused COPY sent to the DEFAULT partition (see :meth:`try_copy`).
        self.default_months: list[datetime] = []
        self.version = int(one(connection, sql.SQL("SHOW server_version_num")))
        self.policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=5.0)
        self.rows_seen = 0

    # -- blocks and progress

    def _tick(self, phase: str) -> None:
        if self.progress is not None:
            self.progress(ImportProgress(phase, self.inp.raw_position, self.inp.size, self.rows_seen))

    def _blocks(self, segment: _Segment, phase: str) -> Iterator[bytes]:
        if segment.data is not None:
            for start in range(0, len(segment.data), BLOCK):
                block = segment.data[start:start + BLOCK]
                self.rows_seen += block.count(b"\n")
                self._tick(phase)
                yield block
            return
        for block in self.inp.blocks(segment.offset):
            self.rows_seen += block.count(b"\n")
            self._tick(phase)
            yield block

    def segments(self, offset: int, line: int, batch_rows: int | None) -> Iterator[_Segment]:
        if batch_rows is None:
            yield _Segment(offset, line, None, None, None, True)
            return
        pending: list[bytes] = []
        start, start_line, count = offset, line, 0
        quote = None if self.dialect.jsonl else self.dialect.quote
        for record_offset, record, record_line in records(self.inp.blocks(offset), offset, line, quote):
            if count == batch_rows:
                yield _Segment(start, start_line, record_offset, record_line, b"".join(pending), False)
                pending, start, start_line, count = [], record_offset, record_line, 0
            pending.append(record)
            count += 1
        if pending:
            data = b"".join(pending)
            yield _Segment(start, start_line, start + len(data), start_line + data.count(b"\n"), data, True)
        else:
            yield _Segment(start, start_line, start, start_line, b"", True)

    # -- the clean path

    def _copy_statement(self) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, DELIMITER {}, QUOTE {}, ENCODING {})").format(
            self.info.ident, sql.SQL(", ").join(sql.Identifier(c) for c in self.columns),
            sql.Literal(self.dialect.delimiter.decode()), sql.Literal(self.dialect.quote.decode()),
            sql.Literal(self.encoding))

    def try_copy(self, segment: _Segment) -> int | None:
        """COPY the segment's bytes as they are, in a savepoint; the rows copied, or None if COPY refused a row.

        Rows that landed in the DEFAULT partition (months without a partition)
        refuse the COPY too, and their months are kept in :attr:`default_months`
        so the caller can create those partitions and COPY again.
        """
        self.default_months = []
        savepoint = self.connection.begin_nested()
        try:
            landed = self._default_inserts()
            copied = copy_in(self.connection, self._copy_statement(), self._blocks(segment, "copy"))
            if self._default_inserts() > landed:
                with_ours = self._default_month_counts()
                savepoint.rollback()  # rows of a month without a partition: they must get theirs first
                before = self._default_month_counts()
                self.default_months = sorted(m for m, n in with_ours.items() if n > before.get(m, 0))
                return None
            savepoint.commit()
            return copied
        except DBAPIError as exc:
            savepoint.rollback()
            state = sqlstate_of(exc)
            if state == "55P03":
                raise
            if state and state[:2] in ROW_ERROR_CLASSES:
                _log.debug("COPY refused a row (%s): taking the staged path", state)
                return None
            raise BulkFailed(self.info.qualified, "COPY", state,
                             safe_reason(str(exc.orig), self.info.names())) from None

    # -- one segment

    def load(self, segment: _Segment, *, dry_run: bool, on_conflict: str, budget: Callable[[int, int], bool],
             ) -> _Outcome:
        """Load one segment in the connection's transaction (the caller commits); see the module docstring."""
        clean = not dry_run and not self.dialect.jsonl and on_conflict != "update"
        if clean:
            created: list[str] = []
            for _ in range(2):
                execute(self.connection, sql.SQL("SET CONSTRAINTS ALL IMMEDIATE"))
                copied = retry_on_lock_timeout(lambda: self.try_copy(segment), self.connection, self.policy,
                                               what=f"COPY into {self.info.qualified}")
                if copied is not None:
                    return _Outcome(read=copied, loaded=copied, method="copy", created=created,
                                    end=segment.end if segment.end is not None else -1,
                                    end_line=segment.end_line if segment.end_line is not None else -1)
                _log.debug("COPY: months %s went to the DEFAULT partition", self.default_months)
                if not self.default_months or created:
                    break
                # A clean file with rows of months that have no partition: make them, then COPY once more.
                self.connection.rollback()
                created = self._ensure_partitions(self.default_months)
                if not created:
                    break
            if created:
                self.report.partitions_created += created
        return self._staged(segment, dry_run=dry_run, on_conflict=on_conflict, budget=budget)

    def _staged(self, segment: _Segment, *, dry_run: bool, on_conflict: str,
                budget: Callable[[int, int], bool]) -> _Outcome:
        outcome = _Outcome(method="staged")
        stage = Stage(self.connection, self.info, self.columns, self.dialect, server_version=self.version,
                      on_conflict=on_conflict, encoding=self.encoding)
        if self.connection.in_transaction():
            self.connection.rollback()
        clock = time.monotonic()
        with self.connection.begin():
            stage.create()
            scanner = Scanner(self.dialect, segment.offset, segment.line)
            for chunk in _ahead(scanner.chunks(self._blocks(segment, "stage"))):
                stage.copy_chunk(chunk, scanner)
            set_aside = scanner.all_set_aside()
            clock = _lap("stage", clock)
            self._tick("check")
            if self.dialect.jsonl:
                self.columns = stage.finish_jsonl()
                _check_required(self.info, self.columns)
            stage.validate()
            clock = _lap("checks", clock)
        outcome.end, outcome.end_line = scanner.offset, scanner.line
        months = stage.months() if self.info.partitioned and self.info.partition_key else []
        self.connection.commit()
        if months:
            if dry_run:
                outcome.needed = [f"{self.info.schema}.{naming.partition_name(self.info.name, m)}"
                                  for m in missing_months(self.connection, self.info, months)]
                self.connection.commit()
            else:
                outcome.created = self._ensure_partitions(months)
        bad = stage.bad()
        counts = stage.counts()
        outcome.read = stage.staged + len(set_aside)
        rejected = counts.get("reject", 0) + sum(1 for c in set_aside if c.kind == "reject")
        walk = _Walk(self, segment, set_aside, bad)
        walk.start()
        inserted = 0
        if not dry_run and budget(rejected, outcome.read):
            execute(self.connection, sql.SQL("SET CONSTRAINTS ALL IMMEDIATE"))
            clock = _lap("partitions and bad rows", clock)
            inserted = retry_on_lock_timeout(stage.insert, self.connection, self.policy,
                                             what=f"insert into {self.info.qualified}")
            clock = _lap("insert", clock)
            new_bad = [b for b in stage.bad() if b.n not in walk.wanted and b.kind == "reject"]
            if new_bad:  # rows only the insert itself could find (a trigger, a concurrent insert...)
                walk.join()
                walk = _Walk(self, segment, [], new_bad, previous=walk)
                walk.start()
                counts = stage.counts()
                rejected = counts.get("reject", 0) + sum(1 for c in set_aside if c.kind == "reject")
        walk.join()
        _lap("second pass (after the insert)", clock)
        if walk.error is not None:
            raise walk.error
        outcome.rejects = walk.rejects()
        outcome.rejected = rejected
        outcome.updated = counts.get("update", 0)
        skips = [c for c in set_aside if c.kind == "skip"]
        outcome.add_skip("blank line", len(skips))
        outcome.add_skip("key already in the table (--on-conflict skip)", counts.get("skip", 0))
        good = outcome.read - outcome.rejected - sum(outcome.skipped.values())
        if dry_run:
            outcome.add_skip("dry run: would be loaded", good)
        elif not budget(rejected, outcome.read):
            outcome.refused = True
            outcome.add_skip("not loaded: too many rows rejected (all or nothing)", good)
        else:
            outcome.loaded = inserted
            outcome.add_skip("not inserted: the key exists and there is nothing to update", good - inserted)
        self._drop_quietly(stage)
        return outcome

    def _default_inserts(self) -> int:
        """Rows this backend has inserted into the DEFAULT partition so far (0 without one).

        ``pg_stat_xact_user_tables`` keeps counting across transactions until the
        backend flushes its statistics (at most once a second), so only the
        difference of two readings in one transaction means anything.
        """
        if self.info.default_partition is None:
            return 0
        return int(one(self.connection, sql.SQL(
            "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_xact_user_tables WHERE relid = {}").format(
            sql.Literal(self.info.default_partition[0]))))

    def _default_month_counts(self) -> dict[datetime, int]:
        """Rows in the DEFAULT partition per UTC month, as this transaction sees them (it is normally empty)."""
        assert self.info.default_partition is not None and self.info.partition_key is not None
        rows = execute(self.connection, sql.SQL(
            "SELECT date_trunc('month', {}, 'UTC'), count(*) FROM ONLY {} GROUP BY 1").format(
            sql.Identifier(self.info.partition_key),
            sql.Identifier(self.info.schema, self.info.default_partition[1])))
        return {naming.month_start(r[0]): int(r[1]) for r in rows}

    def _ensure_partitions(self, months: list[datetime]) -> list[str]:
        """The missing month partitions, made by partition maintenance on its own connection (this one idle)."""
        if self.connection.in_transaction():
            self.connection.rollback()
        return ensure_month_partitions(self.connection, self.info, months, database_url=self.database_url,
                                       data_dir=self.data_dir, lock_timeout=min(self.lock_timeout, 2.0))

    def _drop_quietly(self, stage: Stage) -> None:
        savepoint = self.connection.begin_nested() if self.connection.in_transaction() else self.connection.begin()
        try:
            stage.drop()
            savepoint.commit()
        except DBAPIError:
            savepoint.rollback()

    # -- after the rows

    def advance_sequences(self) -> None:
        """Move identity (and serial) sequences past the imported ids, never back."""
        for name in self.columns:
            sequence = one(self.connection, sql.SQL("SELECT pg_get_serial_sequence({}, {})").format(
                sql.Literal(f'"{self.info.schema}"."{self.info.name}"'), sql.Literal(name)))
            if not sequence:
                continue
            execute(self.connection, sql.SQL(
                "SELECT setval({seq}, m) FROM (SELECT max({col}) AS m FROM {table}) x "
                "WHERE m IS NOT NULL AND m > coalesce(pg_sequence_last_value({seq}), 0)"
            ).format(seq=sql.Literal(sequence), col=sql.Identifier(name), table=self.info.ident))


class _Walk(threading.Thread):
    """The second pass over a segment: the line and bytes of every rejected record, in a thread.

    It runs while PostgreSQL inserts the good rows, so it costs no wall time
    when there are two cores.  Staged ordinals count the records not set aside.
    """

    def __init__(self, importer: _Importer, segment: _Segment, classified: list[Classified], bad: list[Bad],
                 previous: _Walk | None = None) -> None:
        threading.Thread.__init__(self, name="agentdb-bulk-walk", daemon=True)
        self.importer = importer
        self.segment = segment
        self.classified = {c.offset: c for c in classified}
        self.bad = {b.n: b for b in bad if b.kind in ("reject",)}
        self.wanted: set[int] = {b.n for b in bad} | (previous.wanted if previous else set())
        self.refs = {b.ref for b in bad if b.ref is not None}
        self.found: dict[int, tuple[int, int, int, bytes]] = {}
        self.set_aside: list[tuple[Classified, bytes]] = []
        self.lines: dict[int, int] = {}
        self.previous = previous
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._walk()
        except BaseException as exc:  # reported by the caller after join()
            self.error = exc

    def _walk(self) -> None:
        if not self.bad and not self.classified and not self.refs:
            return
        segment = self.segment
        blocks: Iterable[bytes]
        if segment.data is not None:
            blocks = [segment.data]
        else:
            blocks = self.importer.inp.blocks(segment.offset)
        quote = None if self.importer.dialect.jsonl else self.importer.dialect.quote
        needed = set(self.bad) | self.refs
        last = max(needed) if needed else 0
        last_offset = max(self.classified) if self.classified else -1
        ordinal = 0
        for offset, record, line in records(blocks, segment.offset, segment.line, quote):
            classified = self.classified.get(offset)
            if classified is not None:
                self.set_aside.append((classified, record))
            else:
                ordinal += 1
                if ordinal in needed:
                    self.found[ordinal] = (offset, len(record), line, record if ordinal in self.bad else b"")
                    self.lines[ordinal] = line
            if ordinal >= last and offset >= last_offset:
                break

    def rejects(self) -> list[tuple[RejectedRow, bytes]]:
        result: list[tuple[RejectedRow, bytes]] = []
        walks: list[_Walk] = []
        walk: _Walk | None = self
        while walk is not None:
            walks.append(walk)
            walk = walk.previous
        lines: dict[int, int] = {}
        for w in walks:
            lines.update(w.lines)
        seen: set[int] = set()
        for w in walks:
            for c, record in w.set_aside:
                if c.kind == "reject" and c.offset not in seen:
                    seen.add(c.offset)
                    result.append((RejectedRow(c.line, c.column, c.sqlstate, c.reason, c.offset, c.length), record))
            for n, b in w.bad.items():
                if n not in w.found:
                    continue
                offset, length, line, record = w.found[n]
                if offset in seen:
                    continue
                seen.add(offset)
                reason = safe_reason(b.reason, w.importer.info.names())
                if b.ref is not None and b.ref in lines:
                    reason += f"; first on line {lines[b.ref]}"
                result.append((RejectedRow(line, b.column, b.sqlstate, reason, offset, length), record))
        result.sort(key=lambda r: r[0].offset)
        return result


def _ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """``items`` produced by a thread, ``depth`` ahead of the consumer.

    The scanner (Python, regular expressions) then prepares the next chunk while
    PostgreSQL parses the last one: the two run on two cores.
    """
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                queue.put((True, item))
            queue.put((False, None))
        except BaseException as exc:  # handed to the consumer
            queue.put((False, exc))

    thread = threading.Thread(target=produce, name="agentdb-bulk-scan", daemon=True)
    thread.start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                queue.get(timeout=0.1)
            except Empty:
                pass
        thread.join()


def _lap(what: str, since: float) -> float:
    now = time.monotonic()
    _log.debug("bulk import: %s %.2f s", what, now - since)
    return now


def _check_required(info: TableInfo, columns: list[str]) -> None:
    required = [c.name for c in info.columns.values()
                if c.notnull and not c.has_default and not c.identity and not c.generated and c.name not in columns]
    if required:
        raise BulkInputInvalid(info.qualified, "columns", "the file has no column "
                               + ", ".join(required) + " (NOT NULL, no default)")


def _match_header(info: TableInfo, names: list[str]) -> list[str]:
    """The header's names as columns of the table: every problem named before a row is written."""
    if not names or names == [""]:
        raise BulkInputInvalid(info.qualified, "header (line 1)", "it is empty")
    seen: set[str] = set()
    duplicated = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if duplicated:
        raise BulkInputInvalid(info.qualified, "header (line 1)", "duplicated column "
                               + ", ".join(_shown(n) for n in duplicated))
    unknown = [n for n in names if n not in info.columns]
    if unknown:
        hint = ("it has one field: is the delimiter right? (--delimiter)" if len(names) == 1 else
                "the first line must name the columns; "
                f"{info.qualified} has: {', '.join(list(info.columns)[:12])}")
        raise BulkInputInvalid(info.qualified, "header (line 1)", f"{len(unknown)} of {len(names)} names are not "
                               "columns of the table: " + ", ".join(_shown(n) for n in unknown[:8]), hint=hint)
    generated = [n for n in names if info.columns[n].generated]
    if generated:
        raise BulkInputInvalid(info.qualified, "header (line 1)", "generated column(s) cannot be imported: "
                               + ", ".join(generated))
    _check_required(info, names)
    return names


def _default_rejects(inp: Input, sha256: str) -> Path:
    if inp.display == "-":
        return Path.cwd() / f"stdin-{sha256[:12]}.rejects.{inp.spec.format}"
    name = inp.path.name
    for suffix in (".gz", ".zst"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    stem, dot, ext = name.rpartition(".")
    return inp.path.with_name(f"{stem}.rejects.{ext}" if dot else f"{name}.rejects")


def bulk_import(
    table: str,
    path: str | Path,
    *,
    database_url: str | None = None,
    data_dir: str | Path | None = None,
    format: str | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    max_rejects: int | str = 0,
    on_conflict: str = "error",
    batch_rows: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    rejects: str | Path | None = None,
    lock_timeout: float = 5.0,
    progress: Callable[[ImportProgress], None] | None = None,
) -> ImportReport:
    """Import ``path`` (``-``: standard input) into ``table``; see :mod:`agentdb.bulk`.

    ``max_rejects`` (``0``, ``N`` or ``"N%"``): more rejected rows than that
    and nothing is loaded (:class:`~agentdb.errors.BulkRowsRejected`, its
    ``report`` lists every one).  ``on_conflict``: a row whose key exists is
    rejected (``error``), skipped, or updates it.  ``batch_rows``: commit every
    N records with a checkpoint; a later run resumes after the last one.
    ``force``: import a file that was already imported.  ``dry_run``: read and
    check everything, load nothing.
    """
    started = time.monotonic()
    if on_conflict not in ON_CONFLICT:
        raise BulkInputInvalid(table, "on_conflict", f"{on_conflict[:20]!r} is not one of {', '.join(ON_CONFLICT)}")
    if batch_rows is not None and batch_rows < 1:
        raise BulkInputInvalid(table, "batch_rows", "it must be at least 1")
    limit = _limit(max_rejects, table)
    pg_encoding, codec = encoding_of(encoding, table)
    inp = open_input(path, table, format=format, delimiter=delimiter)
    try:
        return _run(table, inp, database_url=database_url, data_dir=data_dir, pg_encoding=pg_encoding, codec=codec,
                    limit=limit, max_rejects=str(max_rejects), on_conflict=on_conflict, batch_rows=batch_rows,
                    force=force, dry_run=dry_run, rejects=rejects, lock_timeout=lock_timeout, progress=progress,
                    started=started)
    finally:
        inp.remove_spool()


def _run(table: str, inp: Input, *, database_url: str | None, data_dir: str | Path | None, pg_encoding: str,
         codec: str, limit: Callable[[int], int], max_rejects: str, on_conflict: str, batch_rows: int | None,
         force: bool, dry_run: bool, rejects: str | Path | None, lock_timeout: float,
         progress: Callable[[ImportProgress], None] | None, started: float) -> ImportReport:
    spec = inp.spec
    jsonl = spec.format == "jsonl"
    quote = None if jsonl else spec.quote
    probe = inp.blocks(size=len(BOM))
    head = next(probe, b"")
    probe.close()
    bom = len(BOM) if head.startswith(BOM) else 0
    blocks = inp.blocks(bom)
    header_record, after = first_record(blocks, quote) if not jsonl else (b"", b"")
    if not jsonl and not header_record:
        raise BulkInputInvalid(table, "input", f"{inp.display!r} is empty: no header line",
                               hint="a CSV or TSV file starts with a line naming its columns")
    data_offset = bom + len(header_record)
    eol = b"\r\n" if header_record.endswith(b"\r\n") else b"\n"
    rest = _chain(after, blocks) if not jsonl else inp.blocks(data_offset)
    first_data, _ = first_record(rest, quote)
    rest.close()
    blocks.close()
    if first_data.endswith(b"\r\n"):
        eol = b"\r\n"
    elif first_data.endswith(b"\n"):
        eol = b"\n"
    sha256 = inp.checksum()
    inp.sha256 = sha256
    report = ImportReport(table, inp.display, spec.format, sha256, inp.size)
    rejects_path = Path(rejects) if rejects is not None else _default_rejects(inp, sha256)
    rejects_file = RejectsFile(rejects_path, header_record if not jsonl else b"", table)

    settings = RunSettings.from_sources({}, {}).merged(
        database_url=database_url, data_dir=str(data_dir) if data_dir else None)
    target = resolve(settings.database_url, settings.data_dir)
    engine = create_engine(target)
    try:
        with connect(engine, target) as connection:
            try:
                return _import(connection, table, inp, report, header_record=header_record, data_offset=data_offset,
                               eol=eol, codec=codec, pg_encoding=pg_encoding, limit=limit, max_rejects=max_rejects,
                               on_conflict=on_conflict, batch_rows=batch_rows, force=force, dry_run=dry_run,
                               rejects_file=rejects_file, lock_timeout=lock_timeout, progress=progress,
                               started=started, database_url=settings.database_url, data_dir=settings.data_dir)
            except DBAPIError as exc:
                raise BulkFailed(table, "import", sqlstate_of(exc), safe_reason(str(exc.orig))) from None
    finally:
        rejects_file.close()
        engine.dispose()


def _chain(first: bytes, rest: Iterator[bytes]) -> Generator[bytes, None, None]:
    if first:
        yield first
    yield from rest


def _import(connection: sa.Connection, table: str, inp: Input, report: ImportReport, *, header_record: bytes,
            data_offset: int, eol: bytes, codec: str, pg_encoding: str, limit: Callable[[int], int],
            max_rejects: str, on_conflict: str, batch_rows: int | None, force: bool, dry_run: bool,
            rejects_file: RejectsFile, lock_timeout: float, progress: Callable[[ImportProgress], None] | None,
            started: float, database_url: str | None = None, data_dir: str | None = None) -> ImportReport:
    execute(connection, sql.SQL("SET TimeZone = 'UTC'"))
    execute(connection, sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{max(1, int(lock_timeout * 1000))}ms")))
    connection.commit()
    info = find_table(connection, table)
    report.table = info.qualified
    jsonl = inp.spec.format == "jsonl"
    if jsonl:
        columns: list[str] = []
    else:
        names = parse_header(header_record.rstrip(b"\n").rstrip(b"\r"), inp.spec, codec, info.qualified)
        columns = _match_header(info, names)
    connection.commit()
    dialect = Dialect("jsonl" if jsonl else "csv", inp.spec.delimiter, inp.spec.quote, eol, tuple(columns), codec)
    options = {"format": inp.spec.format, "on_conflict": on_conflict, "max_rejects": max_rejects,
               "batch_rows": batch_rows, "encoding": pg_encoding}
    personal = personal_columns(info)

    ledger.ensure_ledger(connection)
    connection.commit()
    key = ledger.lock_key(info.qualified, report.sha256)
    if not ledger.try_lock(connection, key):
        pid = ledger.holder(connection, key)
        connection.commit()
        raise BulkBusy(info.qualified, pid)
    connection.commit()
    try:
        done, unfinished = ledger.find(connection, info.qualified, report.sha256)
        connection.commit()
        if done is not None and not force and not dry_run and unfinished is None:
            report.status = "already imported"
            report.import_id = done.id
            report.previous = {"id": done.id, "finished_at": done.finished_at, "rows_loaded": done.rows_loaded}
            report.seconds = time.monotonic() - started
            return report
        counts = Counts(offset=data_offset, line=2 if not jsonl else 1)
        if dry_run:
            entry_id = None
        elif unfinished is not None:
            entry_id = unfinished.id
            ledger.resume(connection, entry_id, options)
            if unfinished.checkpoint_offset > 0:
                counts = Counts(unfinished.rows_read, unfinished.rows_loaded, unfinished.rows_rejected,
                                unfinished.rows_skipped, unfinished.checkpoint_offset, unfinished.checkpoint_line,
                                unfinished.rejects_bytes)
                report.resumed_from_line = counts.line
                if counts.rejects_bytes:
                    rejects_file.open(keep=counts.rejects_bytes)
            connection.commit()
        else:
            entry_id = ledger.start(connection, table=info.qualified, sha256=report.sha256, file_name=inp.display,
                                    file_bytes=inp.size, format=inp.spec.format, options=options,
                                    forced=done is not None)
            connection.commit()
        report.import_id = entry_id
        report.rows_read, report.rows_loaded, report.rows_rejected = counts.read, counts.loaded, counts.rejected
        report.rows_skipped = counts.skipped
        if counts.skipped:
            report.skipped["in earlier batches"] = counts.skipped
        importer = _Importer(connection, info, inp, columns=columns, dialect=dialect, encoding=pg_encoding,
                             data_offset=data_offset, header=header_record, options=options, report=report,
                             rejects=rejects_file, progress=progress, lock_timeout=lock_timeout,
                             database_url=database_url, data_dir=data_dir)
        try:
            _segments(importer, counts, entry_id, report, limit=limit, batch_rows=batch_rows, dry_run=dry_run,
                      on_conflict=on_conflict, personal=bool(personal))
        except BaseException as exc:
            if connection.in_transaction():
                connection.rollback()
            if entry_id is not None and not isinstance(exc, KeyboardInterrupt | SystemExit):
                _fail(connection, entry_id, counts, exc)
            raise
        report.seconds = time.monotonic() - started
        return report
    finally:
        if connection.in_transaction():
            connection.rollback()
        try:
            ledger.unlock(connection, key)
            connection.commit()
        except DBAPIError:
            pass


def _fail(connection: sa.Connection, entry_id: int, counts: Counts, exc: BaseException) -> None:
    """Mark the ledger row failed (its checkpoint stays: a later run resumes from there)."""
    if isinstance(exc, AgentdbError):
        state, message = getattr(exc, "sqlstate", None), str(exc)
    else:
        state, message = sqlstate_of(exc), f"{type(exc).__name__}"
    try:
        ledger.checkpoint(connection, entry_id, counts, status="failed", sqlstate=state, error=message[:1000])
        connection.commit()
    except DBAPIError:
        connection.rollback()


def _segments(importer: _Importer, counts: Counts, entry_id: int | None, report: ImportReport, *,
              limit: Callable[[int], int], batch_rows: int | None, dry_run: bool, on_conflict: str,
              personal: bool) -> None:
    connection = importer.connection
    info = importer.info
    methods: set[str] = set()
    rejects_file = importer.rejects_file
    for segment in importer.segments(counts.offset, counts.line, batch_rows):
        if segment.end is not None and segment.end == segment.offset and segment.last and batch_rows:
            break  # nothing left after the checkpoint

        def within(rejected: int, read: int) -> bool:
            return counts.rejected + rejected <= limit(counts.read + read)

        outcome = importer.load(segment, dry_run=dry_run, on_conflict=on_conflict, budget=within)
        methods.add(outcome.method)
        report.batches += 1
        report.partitions_created += outcome.created
        report.partitions_needed += outcome.needed
        for row, record in outcome.rejects:
            report.rejects.append(row)
            rejects_file.write(record, keep=counts.rejects_bytes or None)
        rejects_file.flush()
        report.rows_read += outcome.read
        report.rows_loaded += outcome.loaded
        report.rows_rejected += outcome.rejected
        report.rows_updated += outcome.updated
        for reason, count in outcome.skipped.items():
            report.skip(reason, count)
        if rejects_file.written:
            report.rejects_path = str(rejects_file.path)
        if outcome.refused:
            if connection.in_transaction():
                connection.rollback()
            report.status = "refused"
            report.method = "+".join(sorted(methods))
            error = BulkRowsRejected(info.qualified, report.rows_rejected, report.rows_read, _limit_text(
                limit, report.rows_read), report.rejects_path, committed=counts.loaded)
            error.report = report
            raise error
        if dry_run:
            if connection.in_transaction():
                connection.rollback()
            continue
        if outcome.loaded:
            importer.advance_sequences()
        counts.read += outcome.read
        counts.loaded += outcome.loaded
        counts.rejected += outcome.rejected
        counts.skipped += sum(outcome.skipped.values())
        if outcome.end >= 0:
            counts.offset, counts.line = outcome.end, outcome.end_line
        elif segment.end is not None:
            counts.offset, counts.line = segment.end, segment.end_line or counts.line
        counts.rejects_bytes = rejects_file.bytes
        final = segment.last and batch_rows is None
        if final:
            _finish(importer, counts, entry_id, report, personal=personal)
        elif entry_id is not None:
            ledger.checkpoint(connection, entry_id, counts)
        connection.commit()
    report.method = "+".join(sorted(methods)) or "copy"
    if dry_run:
        report.status = "dry run"
        return
    if batch_rows is not None:
        _finish(importer, counts, entry_id, report, personal=personal)
        connection.commit()


def _finish(importer: _Importer, counts: Counts, entry_id: int | None, report: ImportReport, *,
            personal: bool) -> None:
    """In the last transaction: the event_logs record (personal data) and the ledger row done."""
    connection = importer.connection
    if personal:
        report.event_log_id = events.record(connection, "bulk.import", f"bulk import into {report.table}", {
            "table": report.table, "import_id": entry_id, "file_sha256": report.sha256,
            "rows_read": counts.read, "rows_loaded": counts.loaded, "rows_rejected": counts.rejected,
            "rows_skipped": counts.skipped, "columns": list(importer.columns)})
    if entry_id is not None:
        if counts.offset <= 0 or counts.line <= 0:
            counts.offset, counts.line = max(counts.offset, 0), max(counts.line, 0)
        ledger.checkpoint(connection, entry_id, counts, status="done")
    report.status = "done"


def _limit_text(limit: Callable[[int], int], read: int) -> str:
    return f"{limit(read):,}"
