"""File formats, compressions and encodings of bulk files, and reading a file as blocks of bytes.

* **CSV** (RFC 4180: quoted fields with embedded delimiters, quotes and line
  breaks; a header line; an unquoted empty field is NULL, ``""`` an empty
  string -- PostgreSQL's ``COPY ... CSV``);
* **TSV**: the same with a tab as delimiter;
* **JSON Lines**: one JSON object per line, keys are column names.

The format comes from the extension (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``)
unless given; ``.gz`` and ``.zst`` after it select the compression.  Text is
UTF-8 with or without a BOM, lines end in LF or CRLF; another encoding is named
with ``encoding=`` (:data:`ENCODINGS`: encodings where the bytes of ``,"\\t\\r\\n``
mean those characters and nothing else, so records can be split without decoding).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import sys
import tempfile
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from agentdb.errors import BulkInputInvalid

__all__ = [
    "BLOCK",
    "ENCODINGS",
    "FORMATS",
    "FileSpec",
    "Input",
    "open_input",
    "output_spec",
    "parse_header",
]

BLOCK = 1 << 20
BOM = b"\xef\xbb\xbf"
FORMATS = ("csv", "tsv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}

#: Accepted encoding names (lower case, ``-``/``_`` ignored) -> (PostgreSQL's name, Python's codec).
ENCODINGS: dict[str, tuple[str, str]] = {
    "utf8": ("UTF8", "utf-8"),
    "latin1": ("LATIN1", "latin-1"), "iso88591": ("LATIN1", "latin-1"),
    "latin9": ("LATIN9", "iso8859-15"), "iso885915": ("LATIN9", "iso8859-15"),
    "latin2": ("LATIN2", "iso8859-2"), "iso88592": ("LATIN2", "iso8859-2"),
    "win1252": ("WIN1252", "cp1252"), "cp1252": ("WIN1252", "cp1252"), "windows1252": ("WIN1252", "cp1252"),
    "win1250": ("WIN1250", "cp1250"), "cp1250": ("WIN1250", "cp1250"), "windows1250": ("WIN1250", "cp1250"),
    "win1251": ("WIN1251", "cp1251"), "cp1251": ("WIN1251", "cp1251"), "windows1251": ("WIN1251", "cp1251"),
    "koi8r": ("KOI8R", "koi8-r"),
}


def encoding_of(name: str | None, table: str) -> tuple[str, str]:
    """(PostgreSQL name, Python codec) of an encoding a user named; UTF-8 when none."""
    if name is None:
        return ENCODINGS["utf8"]
    key = name.lower().replace("-", "").replace("_", "")
    if key not in ENCODINGS:
        known = ", ".join(sorted({pg.lower() for pg, _ in ENCODINGS.values()}))
        raise BulkInputInvalid(table, "encoding", f"{name[:40]!r} is not supported", hint=f"one of {known}")
    return ENCODINGS[key]


@dataclass(frozen=True)
class FileSpec:
    """How a file is written: its format, compression and delimiter."""

    format: str
    compression: str | None
    delimiter: bytes

    @property
    def quote(self) -> bytes:
        return b'"'


def _spec(name: str, format: str | None, delimiter: str | None, table: str) -> FileSpec:
    suffixes = [s.lower() for s in Path(name).suffixes]
    compression = _COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression:
        suffixes = suffixes[:-1]
    if format is None:
        format = _EXTENSIONS.get(suffixes[-1]) if suffixes else None
        if format is None:
            raise BulkInputInvalid(table, "format", f"cannot tell the format of {Path(name).name!r} from its name",
                                   hint="name it .csv, .tsv or .jsonl (.gz, .zst), or give --format")
    format = format.lower()
    if format not in FORMATS:
        raise BulkInputInvalid(table, "format", f"{format[:20]!r} is not one of {', '.join(FORMATS)}")
    if delimiter is not None and format == "jsonl":
        raise BulkInputInvalid(table, "delimiter", "JSON Lines has no delimiter")
    sep = (delimiter or ("\t" if format == "tsv" else ",")).encode()
    if format != "jsonl" and (len(sep) != 1 or sep in b'"\r\n\\' or sep.isalnum()):
        raise BulkInputInvalid(table, "delimiter", "it must be one ASCII character other than a quote, a "
                               "backslash, a letter, a digit or a line break")
    return FileSpec(format, compression, sep)


def output_spec(name: str, format: str | None, delimiter: str | None, table: str) -> FileSpec:
    """The spec of an export's file (``-``: stdout, CSV unless ``format``)."""
    return _spec("stdout.csv" if name == "-" and format is None else name, format, delimiter, table)


class _Counting(io.RawIOBase):
    """A raw file that counts the bytes read from it (the progress of a compressed file is on disk)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.count = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.count = self.handle.seek(offset, whence)
        return self.count

    def tell(self) -> int:
        return self.count

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self.handle.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n or 0
        return int(n or 0)

    def close(self) -> None:
        self.handle.close()
        super().close()


class Input:
    """The file being imported: a path on disk (stdin is spooled to a private temporary file first).

    It is read several times -- once for its sha256, then as the load needs --
    and always from disk, so memory stays flat whatever the file's size.
    """

    def __init__(self, path: Path, display: str, spec: FileSpec, *, spooled: bool = False) -> None:
        self.path = path
        self.display = display
        self.spec = spec
        self.spooled = spooled
        self.size = path.stat().st_size
        self.sha256 = ""
        self._raw: _Counting | None = None

    def checksum(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            while block := handle.read(BLOCK):
                digest.update(block)
        self.sha256 = digest.hexdigest()
        return self.sha256

    @property
    def raw_position(self) -> int:
        """Bytes of the file on disk read so far by the current :meth:`blocks` (for progress)."""
        return self._raw.count if self._raw is not None else 0

    def _open(self) -> IO[bytes]:
        raw = _Counting(open(self.path, "rb"))
        self._raw = raw
        buffered = io.BufferedReader(raw, BLOCK)
        if self.spec.compression == "gzip":
            return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
        if self.spec.compression == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().stream_reader(buffered, read_size=BLOCK, closefd=True)
        return buffered

    def blocks(self, start: int = 0, size: int = BLOCK) -> Generator[bytes, None, None]:
        """The decompressed content from byte ``start`` on, in blocks; a corrupt compression is a clear error."""
        try:
            with self._open() as handle:
                if start:
                    if self.spec.compression is None:
                        handle.seek(start)
                    else:
                        left = start
                        while left > 0:
                            skipped = handle.read(min(left, BLOCK))
                            if not skipped:
                                break
                            left -= len(skipped)
                while block := handle.read(size):
                    yield block
        except (OSError, EOFError) as exc:
            if isinstance(exc, FileNotFoundError | PermissionError):
                raise
            raise BulkInputInvalid("", f"reading {self.display}", f"not a valid {self.spec.compression or 'file'} "
                                   f"({type(exc).__name__})") from None
        except Exception as exc:  # zstandard.ZstdError and friends
            if type(exc).__module__.startswith("zstandard"):
                raise BulkInputInvalid("", f"reading {self.display}", "not a valid zstd file") from None
            raise

    def remove_spool(self) -> None:
        if self.spooled:
            self.path.unlink(missing_ok=True)


def open_input(path: str | Path, table: str, *, format: str | None = None,
               delimiter: str | None = None) -> Input:
    """The input file (``-``: standard input, spooled to a temporary file readable by its owner only)."""
    text = str(path)
    if text == "-":
        spec = _spec("stdin." + (format or "csv"), format, delimiter, table)
        handle, spool = tempfile.mkstemp(prefix="agentdb-import-", suffix=".spool")
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "wb") as out:
            source = sys.stdin.buffer
            while block := source.read(BLOCK):
                out.write(block)
        return Input(Path(spool), "-", spec, spooled=True)
    file = Path(text)
    spec = _spec(file.name, format, delimiter, table)
    if not file.exists():
        raise BulkInputInvalid(table, "input", f"{file.name!r} does not exist")
    if not file.is_file():
        raise BulkInputInvalid(table, "input", f"{file.name!r} is not a regular file")
    if not os.access(file, os.R_OK):
        raise BulkInputInvalid(table, "input", f"{file.name!r} cannot be read (permissions)")
    return Input(file, file.name, spec)


def parse_header(record: bytes, spec: FileSpec, codec: str, table: str) -> list[str]:
    """The column names of a header record (without its line end), as Python's csv module reads them."""
    try:
        text = record.decode(codec)
    except UnicodeDecodeError:
        raise BulkInputInvalid(table, "header (line 1)", f"not valid {codec}",
                               hint="give the file's encoding with --encoding") from None
    if "\x00" in text:
        raise BulkInputInvalid(table, "header (line 1)", "it contains a NUL byte")
    try:
        rows = list(csv.reader([text], delimiter=spec.delimiter.decode(), quotechar='"', strict=True))
    except csv.Error:
        raise BulkInputInvalid(table, "header (line 1)", "it is not a valid CSV line") from None
    return [name.strip() for name in rows[0]] if rows else []
