"""Rejected rows: what the report says about each, and the rejects file that keeps their original bytes.

The rejects file holds, byte for byte, every rejected record of the input in
file order, after the input's own header line (for CSV and TSV): fix it and
import it as it is.  It can hold personal data, so it is created readable and
writable by its owner only (mode 0600, whatever the umask), and its path is
checked before any row is written.  With batches, what a batch rejected is
flushed to disk before the batch commits, and a resumed import first cuts the
file back to what the last committed batch had written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentdb.errors import BulkInputInvalid

__all__ = ["RejectedRow", "RejectsFile"]


@dataclass(frozen=True)
class RejectedRow:
    """One rejected record: never its values, only where it is and why."""

    #: Line of the file where the record starts (1-based; the header is line 1).
    line: int
    #: The column PostgreSQL or the check named, when one is known.
    column: str | None
    sqlstate: str | None
    #: PostgreSQL's primary message with values masked, or the check's own words.
    reason: str
    #: Byte offset and length of the record in the (decompressed) file.
    offset: int
    length: int

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "sqlstate": self.sqlstate, "reason": self.reason,
                "offset": self.offset, "length": self.length}

    def describe(self) -> str:
        column = f", column {self.column}" if self.column else ""
        return f"line {self.line}{column}: [{self.sqlstate or '?'}] {self.reason}"


class RejectsFile:
    """The rejects file: opened (or checked) up front, written only when a row is rejected."""

    def __init__(self, path: Path, header: bytes, table: str) -> None:
        self.path = path
        self.header = header
        self._fd: int | None = None
        self.bytes = 0
        self._created = False
        parent = path.parent if str(path.parent) else Path(".")
        if path.exists() and not path.is_file():
            raise BulkInputInvalid(table, "rejects file", f"{path.name!r} exists and is not a regular file")
        if not parent.is_dir():
            raise BulkInputInvalid(table, "rejects file", f"directory of {path.name!r} does not exist",
                                   hint="give a writable path with --rejects")
        if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise BulkInputInvalid(table, "rejects file", f"{path.name!r} cannot be written (permissions)",
                                   hint="give a writable path with --rejects")

    def open(self, *, keep: int | None = None) -> None:
        """Create (or, resuming, reopen cut back to ``keep`` bytes) the file, mode 0600."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        size = os.fstat(fd).st_size
        if keep is not None and 0 < keep <= size:
            os.ftruncate(fd, keep)
            os.lseek(fd, keep, os.SEEK_SET)
            self.bytes = keep
        else:
            os.ftruncate(fd, 0)
            self.bytes = 0
            if self.header:
                os.write(fd, self.header)
                self.bytes = len(self.header)
        self._fd = fd
        self._created = True

    def write(self, record: bytes, *, keep: int | None = None) -> None:
        if self._fd is None:
            self.open(keep=keep)
        assert self._fd is not None
        view = memoryview(record)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.bytes += len(record)

    def flush(self) -> None:
        """Make what was written durable (before the batch that rejected it commits)."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def written(self) -> bool:
        return self._created
