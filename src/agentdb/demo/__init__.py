"""Demo data: fill every application table with realistic, consistent rows at a chosen scale.

``seed_demo("small")`` is what the tests and the README's demo use;
``seed_demo("large")`` builds 10 000 users and a million analytics rows.

How it works:

* **Describe, then execute.**  :func:`plan_demo` turns a scale into a
  :class:`DemoPlan` (the tables in load order and how many rows each should
  get); :func:`seed_demo` executes it and returns a :class:`DemoReport` with
  the rows and time per table.
* **Deterministic.**  Every table draws from its own ``random.Random`` seeded
  with (seed, salt, table), and analytics rows are derived from
  ``hashint8extended(row number, seed)`` on the server; timestamps are relative
  to the fixed :data:`ANCHOR`, never ``now()``.  The same seed on a fresh
  database gives the same rows, ids included.  The salt is the first user id of
  the run, so ``append=True`` adds new, non-colliding users, e-mails and
  Spotify ids.
* **Consistent.**  Ids that other rows point at are reserved from the tables'
  identity sequences first (``nextval``), so every foreign key is known in
  Python; events happen after the account was created, a click after its
  serve, an ISRC carries its album's release year, playlist positions are
  0..n-1, an album's ``total_tracks`` is its number of tracks, a match is an
  unordered pair at most once, accepted matches become collaborations.
* **Fast.**  Tables are loaded with ``COPY ... FROM STDIN`` (psycopg 3
  ``write_row``); analytics is generated on the server by one ``INSERT ...
  SELECT ... generate_series``, which measured faster than streaming the same
  rows through COPY (``benchmarks/bench_seed_demo.py``).  When analytics is
  empty and gets at least :data:`BULK_INDEX_THRESHOLD` rows, its indexes and
  foreign keys are dropped before the load and re-created from their catalogue
  definitions after it (PostgreSQL's "Populating a Database" advice), which
  halves the time.
* **Atomic.**  Everything runs in one transaction: a failure anywhere leaves
  no row behind.

.. warning::
   The fast analytics path takes an ACCESS EXCLUSIVE lock on ``analytics``
   until the seeding commits (it drops and re-creates the table's indexes);
   other sessions cannot read the table meanwhile.  It is only taken when the
   table is empty, and under ``lock_timeout`` (5 s).

Audit rows are written by the tables' own triggers, with
``agentdb.actor = 'agentdb seed-demo'``.  The seeding only inserts, so the
bulk-change guards (which refuse mass UPDATE/DELETE) never fire.
"""

from __future__ import annotations

from agentdb.demo.plan import (  # noqa: F401  (the constants stay importable from agentdb.demo)
    ACTOR,
    ANCHOR,
    BULK_INDEX_THRESHOLD,
    SCALES,
    TABLES,
    DemoPlan,
    DemoReport,
    DemoScale,
    TableLoad,
    plan_demo,
)
from agentdb.demo.seed import seed_demo

__all__ = [
    "DemoPlan",
    "DemoReport",
    "DemoScale",
    "TableLoad",
    "plan_demo",
    "seed_demo",
]
