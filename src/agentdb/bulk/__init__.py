"""Bulk import and export: files in and out of any application table at the speed of COPY.

``bulk_import(table, path)`` and ``bulk_export(table, path)`` (``agentdb import`` /
``agentdb export``).  The parts, one file per concern:

* :mod:`~agentdb.bulk.formats` -- CSV, TSV, JSON Lines; gzip, zstd; encodings; stdin;
* :mod:`~agentdb.bulk.catalog` -- the table, its columns and constraints, from the catalogue;
* :mod:`~agentdb.bulk.scan` -- records, lines and what COPY would refuse as a whole;
* :mod:`~agentdb.bulk.stage` -- the staged path: set-based checks that find every bad row;
* :mod:`~agentdb.bulk.importing` / :mod:`~agentdb.bulk.exporting` -- the two commands;
* :mod:`~agentdb.bulk.ledger` -- ``agentdb.imports``: exactly once, checkpoints, resume;
* :mod:`~agentdb.bulk.rejects` -- the rejected rows and the rejects file (0600);
* :mod:`~agentdb.bulk.partitions` -- month partitions created before a load (by partition maintenance);
* :mod:`~agentdb.bulk.pseudonymize` -- keyed pseudonyms for exports;
* :mod:`~agentdb.bulk.events` -- the ``event_logs`` record of personal-data imports and exports.

How an import stays as fast as COPY and still finds every bad row
------------------------------------------------------------------
1. **Optimistic COPY.**  The file's own bytes, after its header line, go to
   ``COPY table (header columns) FROM STDIN (FORMAT csv)`` in 1 MB blocks:
   PostgreSQL parses them, Python only reads the file.  A clean file costs what
   ``\\copy`` costs, plus one sha256 pass (exactly-once) and the ledger row.
   On a partitioned table a row routed to the DEFAULT partition
   (``pg_stat_xact_user_tables``) counts as a failure, so rows never land there:
   the COPY is rolled back, partition maintenance creates the months it found
   there (:func:`agentdb.partitions.create_month_partitions`), and the COPY
   runs once more.
2. **On any refusal** (a data exception, a constraint, a missing partition) the
   COPY is rolled back -- the first bad row of a dirty file is usually near its
   start, so little is wasted -- and the segment is *staged*:

   * the records go to a temporary table of ``text`` columns by COPY; records
     COPY would refuse as a whole (field count, unterminated quote, NUL,
     invalid UTF-8, a stray line end) are recognised first -- long runs of
     well-formed records by one compiled regular expression, the rest one by
     one -- and set aside with PostgreSQL's SQLSTATE and wording;
   * one set-based statement per kind of check marks every bad row: types
     (PostgreSQL 16's ``pg_input_is_valid``/``pg_input_error_info``; on 15 a
     generated PL/pgSQL function, one exception block per row), NOT NULL, CHECK
     constraints (their catalogue expressions), UNIQUE keys within the file and
     against the table, foreign keys (anti-joins);
   * missing month partitions are created (never the DEFAULT partition);
   * one ``INSERT ... SELECT`` loads the rest; a row it still refuses (a
     trigger, a concurrent insert) is found by halving the range under
     savepoints, so it is rejected with PostgreSQL's own reason too;
   * meanwhile a second pass over the file, in a thread, finds the line and the
     original bytes of every rejected record for the report and the rejects file.

   Clean data never pays for any of this; dirty data pays a staging copy of
   text (no indexes, no WAL) and the checks, and keeps COPY's per-row cost for
   the insert.
3. **Counts.** ``rows_read == rows_loaded + rows_rejected + rows_skipped``,
   always (rows not loaded because the import was refused, or in a dry run,
   are counted as skipped, with the reason).

No value of the file or the table is printed, logged or stored by any of this:
rejected rows are named by line, column, SQLSTATE and a reason whose quoted
values are masked.
"""

from agentdb.bulk.exporting import ExportProgress, ExportReport, bulk_export
from agentdb.bulk.importing import ImportProgress, ImportReport, bulk_import
from agentdb.bulk.ledger import DDL as LEDGER_DDL
from agentdb.bulk.ledger import ensure_ledger
from agentdb.bulk.pseudonymize import pseudonym
from agentdb.bulk.rejects import RejectedRow

__all__ = [
    "LEDGER_DDL",
    "ExportProgress",
    "ExportReport",
    "ImportProgress",
    "ImportReport",
    "RejectedRow",
    "bulk_export",
    "bulk_import",
    "ensure_ledger",
    "pseudonym",
]
