"""Records of a bulk file: where each starts and ends, on which line, and whether COPY can read it.

PostgreSQL's CSV parser splits records at a line break outside quotes, a quote
toggling "inside quotes" (``""`` toggles twice, so it is a quote inside a
quoted field).  The same rule here -- the parity of the quotes seen since the
record began -- gives the same records, so a record number in PostgreSQL (a
staged row's ordinal) and a record found here are the same record, and a line
number and the original bytes can be given for it.

Two readers:

* :func:`records` walks every record (a Python step per line): batch
  boundaries, and the second pass that names the lines of rejected rows and
  copies their bytes to the rejects file;
* :class:`Scanner` prepares the staging copy of the slow path: long runs of
  well-formed records are recognised by one compiled regular expression and
  passed on untouched; only what it stops at is looked at record by record,
  and a record that COPY would refuse as a whole (wrong number of fields, an
  unterminated quote, a NUL byte, invalid UTF-8, a stray line break) is set
  aside with PostgreSQL's own SQLSTATE and wording, instead of failing the copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from agentdb.errors import BulkInputInvalid

__all__ = [
    "MAX_RECORD",
    "Classified",
    "Dialect",
    "Scanner",
    "first_record",
    "records",
]

#: The longest record accepted (PostgreSQL's own limit on a field is 1 GB); longer is an unterminated quote.
MAX_RECORD = 64 << 20


@dataclass(frozen=True)
class Dialect:
    """How records of one file are written."""

    format: str  # csv (TSV is CSV with a tab) or jsonl
    delimiter: bytes
    quote: bytes
    #: The line end of the first data record, which PostgreSQL then expects of every record: LF or CRLF.
    eol: bytes
    columns: tuple[str, ...]
    codec: str

    @property
    def jsonl(self) -> bool:
        return self.format == "jsonl"


@dataclass
class Classified:
    """A record set aside before staging: rejected (with why) or skipped (a blank line)."""

    offset: int
    length: int
    line: int
    kind: str  # reject | skip
    sqlstate: str | None = None
    reason: str = ""
    column: str | None = None


def records(blocks: Iterable[bytes], offset: int, line: int, quote: bytes | None) -> Iterator[tuple[int, bytes, int]]:
    """``(offset, bytes with line end, line)`` of each record from ``offset`` (which starts a record) on.

    ``quote=None`` splits at every line break (JSON Lines).  A last record
    without a line end is yielded as it is.
    """
    carry = b""
    parity = 0
    pieces: list[bytes] = []
    start_line = line
    for block in blocks:
        data = carry + block if carry else block
        lines = data.split(b"\n")
        carry = lines.pop()
        for piece in lines:
            if quote is not None and piece.count(quote) & 1:
                parity ^= 1
            pieces.append(piece)
            line += 1
            if not parity:
                record = b"\n".join(pieces) + b"\n"
                yield offset, record, start_line
                offset += len(record)
                pieces = []
                start_line = line
            elif sum(len(p) for p in pieces) > MAX_RECORD:
                raise BulkInputInvalid("", f"line {start_line}", "a record longer than 64 MB (an unterminated "
                                       "quote?)")
    if quote is not None and carry.count(quote) & 1:
        parity ^= 1
    if pieces or carry:
        pieces.append(carry)
        record = b"\n".join(pieces)
        if record:
            yield offset, record, start_line


def first_record(blocks: Iterator[bytes], quote: bytes | None) -> tuple[bytes, bytes]:
    """The first record of ``blocks`` (with its line end) and the bytes read after it."""
    data = b""
    for block in blocks:
        data += block
        end = _record_end(data, 0, quote)
        if end is not None:
            return data[:end], data[end:]
        if len(data) > MAX_RECORD:
            raise BulkInputInvalid("", "line 1", "no line end in the first 64 MB")
    return data, b""


def _record_end(data: bytes, start: int, quote: bytes | None) -> int | None:
    """The end (after its ``\\n``) of the record starting at ``start``, or None when it does not end in ``data``."""
    parity = 0
    pos = start
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return None
        if quote is not None and data.count(quote, pos, nl) & 1:
            parity ^= 1
        pos = nl + 1
        if not parity:
            return pos


def _field_of(content: bytes, index: int, dialect: Dialect) -> int:
    """Which field (0-based, PostgreSQL's way of splitting) holds byte ``index`` of a record."""
    parts = content[:index].split(dialect.quote)
    return sum(p.count(dialect.delimiter) for p in parts[::2])


def classify(record: bytes, dialect: Dialect, *, at_eof: bool) -> tuple[str, str, str, int | None] | None:
    """Why COPY would refuse ``record`` (with its line end) as a whole: (kind, SQLSTATE, reason, field index).

    None when COPY can read it (its values may still be wrong: that is for the
    set-based checks).  ``kind`` is ``skip`` for a blank line.
    """
    if record.endswith(b"\n"):
        content = record[:-1]
        crlf = content.endswith(b"\r")
        if crlf:
            content = content[:-1]
    else:  # the last record, without a line end
        content, crlf = record, dialect.eol == b"\r\n"
    if not content.strip(b" \t\r"):
        return "skip", "", "blank line", None
    nul = content.find(b"\x00")
    if nul >= 0:
        return ("reject", "22021", 'invalid byte sequence for encoding "UTF8": 0x00',
                None if dialect.jsonl else _field_of(content, nul, dialect))
    try:
        content.decode(dialect.codec)
    except UnicodeDecodeError as exc:
        return ("reject", "22021", f'invalid byte sequence for encoding "{_pg_name(dialect.codec)}"',
                None if dialect.jsonl else _field_of(content, exc.start, dialect))
    if dialect.jsonl:
        return None
    parts = content.split(dialect.quote)
    if len(parts) % 2 == 0:
        return "reject", "22P04", "unterminated CSV quoted field", None
    outside = parts[::2]
    if any(b"\r" in p for p in outside):
        return "reject", "22P04", "unquoted carriage return found in data", None
    if record.endswith(b"\n") and crlf != (dialect.eol == b"\r\n"):
        what = "newline" if dialect.eol == b"\r\n" else "carriage return"
        return "reject", "22P04", f"unquoted {what} found in data (the file's lines end differently)", None
    fields = sum(p.count(dialect.delimiter) for p in outside) + 1
    if fields > len(dialect.columns):
        return "reject", "22P04", "extra data after last expected column", None
    if fields < len(dialect.columns):
        return ("reject", "22P04", f'missing data for column "{dialect.columns[fields]}"', fields)
    return None


def _pg_name(codec: str) -> str:
    return {"utf-8": "UTF8", "latin-1": "LATIN1", "cp1252": "WIN1252"}.get(codec, codec.upper())


def _csv_run(dialect: Dialect) -> re.Pattern[bytes]:
    """A run of well-formed records: exactly the columns' count of RFC 4180 fields, then the file's line end."""
    d = re.escape(dialect.delimiter)
    q = re.escape(dialect.quote)
    field_ = rb"(?:" + q + rb"(?:[^" + q + rb"\x00]|" + q + q + rb")*+" + q + rb"|[^" + d + q + rb"\r\n\x00]*+)"
    record = field_ + (rb"(?:" + d + field_ + rb"){" + str(len(dialect.columns) - 1).encode() + rb"}")
    return re.compile(rb"(?:" + record + re.escape(dialect.eol) + rb")*+")


@dataclass
class Chunk:
    """Bytes for one staging COPY, and where its runs of records come from in the file."""

    data: bytearray = field(default_factory=bytearray)
    #: (position in ``data``, file offset, line) at the start of each run of consecutive records.
    anchors: list[tuple[int, int, int]] = field(default_factory=list)

    def add(self, piece: bytes, offset: int, line: int) -> None:
        if not self.anchors or self._end_offset != offset:
            self.anchors.append((len(self.data), offset, line))
        self.data += piece
        self._end_offset = offset + len(piece)

    _end_offset: int = -1


class Scanner:
    """Turns the bytes of a segment into chunks for the staging COPY, setting aside what COPY would refuse.

    For CSV the chunks are the file's own bytes (runs of records); for JSON
    Lines each line becomes one value of PostgreSQL's text format (its
    backslashes, tabs and carriage returns escaped).
    """

    def __init__(self, dialect: Dialect, offset: int, line: int, *, chunk_bytes: int = 2 << 20) -> None:
        self.dialect = dialect
        self.offset = offset  # file offset of the next unprocessed byte
        self.line = line
        self.chunk_bytes = chunk_bytes
        #: Records set aside, in file order; every other record went into a chunk (PostgreSQL counts those).
        self.classified: list[Classified] = []
        self.refused: list[Classified] = []
        self._run = None if dialect.jsonl else _csv_run(dialect)

    def chunks(self, blocks: Iterable[bytes]) -> Iterator[Chunk]:
        chunk = Chunk()
        carry = b""
        for block in blocks:
            data = carry + block if carry else block
            used = self._consume(data, chunk, at_eof=False)
            carry = data[used:]
            if len(carry) > MAX_RECORD:
                raise BulkInputInvalid("", f"line {self.line}", "a record longer than 64 MB (an unterminated quote?)")
            if len(chunk.data) >= self.chunk_bytes:
                yield chunk
                chunk = Chunk()
        if carry:
            used = self._consume(carry, chunk, at_eof=True)
            assert used == len(carry)
        if chunk.data:
            yield chunk

    def _consume(self, data: bytes, chunk: Chunk, *, at_eof: bool) -> int:
        """Process the complete records at the start of ``data``; the number of bytes used."""
        pos = 0
        size = len(data)
        quote = None if self.dialect.jsonl else self.dialect.quote
        while pos < size:
            if self._run is not None:
                end = self._run.match(data, pos).end()  # type: ignore[union-attr]
                if end > pos:
                    run = data[pos:end]
                    try:
                        run.decode(self.dialect.codec) if self.dialect.codec != "latin-1" else None
                        valid = True
                    except UnicodeDecodeError:
                        valid = False
                    if valid:
                        chunk.add(run, self.offset, self.line)
                        self.line += run.count(b"\n")
                        self.offset += len(run)
                        pos = end
                        continue
                    # Invalid text somewhere in the run: fall through and take it record by record.
            record_end = _record_end(data, pos, quote)
            if record_end is None:
                if not at_eof:
                    return pos
                record_end = size
            self._one(data[pos:record_end], chunk, at_eof=at_eof and record_end == size)
            pos = record_end
        return pos

    def _one(self, record: bytes, chunk: Chunk, *, at_eof: bool) -> None:
        verdict = classify(record, self.dialect, at_eof=at_eof)
        if verdict is None:
            if self.dialect.jsonl:
                content = record.rstrip(b"\n").rstrip(b"\r")
                piece = content.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\r", b"\\r") + b"\n"
            else:
                piece = record if record.endswith(b"\n") else record + self.dialect.eol
            if self.dialect.jsonl:
                chunk.anchors.append((len(chunk.data), self.offset, self.line))
                chunk.data += piece
                chunk._end_offset = -1
            else:
                chunk.add(piece, self.offset, self.line)
        else:
            kind, sqlstate, reason, index = verdict
            column = self.dialect.columns[index] if index is not None and index < len(self.dialect.columns) else None
            self.classified.append(Classified(self.offset, len(record), self.line, kind, sqlstate or None, reason,
                                              column))
        self.line += record.count(b"\n")
        self.offset += len(record)

    def set_aside(self, offset: int, length: int, line: int, sqlstate: str | None, reason: str,
                  column: str | None) -> None:
        """A record PostgreSQL refused while staging (see :func:`locate`): rejected, not staged.

        Kept apart from :attr:`classified` (which the scanning thread appends to) until :meth:`all_set_aside`.
        """
        self.refused.append(Classified(offset, length, line, "reject", sqlstate, reason, column))

    def all_set_aside(self) -> list[Classified]:
        return sorted(self.classified + self.refused, key=lambda c: c.offset)


def locate(chunk: Chunk, record_number: int, quote: bytes | None) -> tuple[int, int, int, int]:
    """Record ``record_number`` (1-based) of a chunk: (position in chunk, length, file offset, line)."""
    pos = 0
    for _ in range(record_number - 1):
        end = _record_end(bytes(chunk.data), pos, quote)
        if end is None:
            break
        pos = end
    end = _record_end(bytes(chunk.data), pos, quote) or len(chunk.data)
    anchor = max((a for a in chunk.anchors if a[0] <= pos), key=lambda a: a[0])
    offset = anchor[1] + (pos - anchor[0])
    line = anchor[2] + bytes(chunk.data[anchor[0]:pos]).count(b"\n")
    return pos, end - pos, offset, line
