"""kill -9 in each phase of a type change and of an added NOT NULL column, writers running the whole
time; each time a new process resumes from the checkpoint; at the end nothing is lost or stale."""

from __future__ import annotations

import psycopg
from _online_helpers import leftovers
from _online_kind_helpers import SMALL, Writers, drive, make_tables, par_writes, scalar

from agentdb import online

#: A kill inside each phase's work and at the boundaries where the table changes hands (kept short: each kill is a
#: new process, a few seconds each; the partition kind's fault test covers every boundary of the shared engine).
TYPE_POINTS = ["start:step:2", "copy:batch:2:uncommitted", "verify:after", "cutover:locked", "complete:after"]
COLUMN_POINTS = ["expand:step:2", "backfill:batch:2:uncommitted", "constraints:step:3", "verify:after"]


def _killed_at_each(url: str, points: list[str], extra: dict[str, object]) -> None:
    for number, point in enumerate(points):
        result = drive(url, "start" if number == 0 else "resume", table="par", kill_at=point, settings=SMALL,
                       extra=dict(extra))
        assert result.returncode == -9, f"not killed at {point}: {result.stderr[-2000:]}"


def _finish(url: str) -> None:
    final = drive(url, "resume", table="par")
    assert final.returncode == 0 or "no unfinished online change" in final.stderr, final.stderr[-2000:]


def test_type_change_killed_in_each_phase_loses_nothing(database_url: str) -> None:
    make_tables(database_url, 2000)
    with Writers(database_url, par_writes) as writers:
        _killed_at_each(database_url, TYPE_POINTS, {"kind": "alter_column_type", "column": "id", "type": "bigint"})
        _finish(database_url)
    assert writers.commits > 50 and len(writers.failures) < writers.commits / 10, writers.failures[:3]
    with psycopg.connect(database_url) as conn:
        for query in ("SELECT id, amount FROM par EXCEPT ALL SELECT id, amount FROM online_test.par_ref",
                      "SELECT id, amount FROM online_test.par_ref EXCEPT ALL SELECT id, amount FROM par"):
            assert conn.execute(f"SELECT count(*) FROM ({query}) x").fetchone() == (0,)
    assert scalar(database_url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                  "'par'::regclass AND attname = 'id'") == "bigint"
    assert online.status(database_url=database_url) == [] and leftovers(database_url) == []


def test_added_column_killed_in_each_phase_is_complete_and_not_null(database_url: str) -> None:
    make_tables(database_url, 2000)
    with Writers(database_url, par_writes) as writers:
        _killed_at_each(database_url, COLUMN_POINTS, {"kind": "add_column", "column": "twice", "type": "bigint",
                                                      "backfill": "amount * 2", "nullable": False,
                                                      "server_default": "0"})
    # the contraction (the trigger goes) once the old version, which does not write the column, has stopped
    _finish(database_url)
    assert writers.commits > 50
    assert scalar(database_url, "SELECT count(*) FROM par WHERE twice IS DISTINCT FROM coalesce(amount * 2, 0)"
                  ) == 0
    assert scalar(database_url, "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'par'::regclass "
                  "AND attname = 'twice'")
    assert online.status(database_url=database_url) == [] and leftovers(database_url) == []
