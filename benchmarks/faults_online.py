"""The whole fault matrix of the online kinds (issue 12): kill -9 at every boundary and at random points of every
kind with writers running, and abort at every phase of every kind.

For each kind other than partition (tests/test_online_faults.py has that one), each on a scratch database of
its own with ``--rows`` rows in ``par`` (and ``kid`` referencing it):

``boundaries``
    writer threads insert, update and delete the whole time; the process driving the change is killed
    (SIGKILL, the engine's ``AGENTDB_ONLINE_KILL_AT`` hook) at every point the kind's phases expose, enumerated
    from its plan (``<phase>:before``, each step, the first batch inside its transaction and after its commit,
    ``cutover:locked``, ``<phase>:after``), a new process resuming each time; an expand/contract kind expands
    with the old application version writing, then the new version writes beside it (dual writes both ways)
    and the old one stops before the contraction, which is killed at its points too.  At the end the table
    equals the writers' reference row by row (EXCEPT ALL both ways), nothing is left behind (trigger,
    function, table, INVALID index) and ``online.status()`` is empty.  A point that leaves the state of the
    point before it (a phase's ``:after`` after its last step; points after the last commit) is listed as such;
``random``
    the same with ``--random`` points drawn from every point a run meets, batch points included (seeded:
    ``--seed`` replays them; the points are printed);
``abort``
    for every state before the cut-over (an expand/contract kind: before its contraction) the change is
    started, killed there and aborted: schema (pg_dump) and rows as before, nothing behind; the last one's
    abort is itself killed at its first step and run again.

Prints a table, one line per kind, and every point with what came of it; exits 1 when a run found a problem.
tests/test_online_kind_faults.py runs a slice of this in CI: every boundary of a kind of each family
(alter_column_type; add_column; add_unique and add_foreign_key), 20 random points spread over the other six
kinds, abort at every phase of alter_column_type, split_column, add_foreign_key and drop_index.

    .venv/bin/python benchmarks/faults_online.py --database-url URL [--rows 2000] [--random 20] [--seed N]
        [--kinds add_column,rename_column] [--no-abort]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _online_fault_matrix import (  # noqa: E402
    BATCH,
    SCENARIOS,
    Drivers,
    Run,
    abort_at_each,
    abortable,
    boundaries,
    database,
    first,
    make_tables,
    phases_of,
    random_points,
    run_points,
)

from agentdb import online  # noqa: E402
from agentdb._pgtools import find_tool  # noqa: E402


def _dumper(server: str) -> Callable[[str], str]:
    """``pg_dump --schema-only`` of the application schemas, as tests/conftest.py's schema_dump."""
    version = int(str(first(server, "SHOW server_version_num"))) // 10000
    pg_dump = find_tool("pg_dump", version)

    def dump(url: str) -> str:
        result = subprocess.run([str(pg_dump), "--schema-only", "--no-owner", "--exclude-schema=agentdb",
                                 "--exclude-schema=agentdb_archive", "--dbname", url],
                                capture_output=True, text=True, check=True)
        return "\n".join(line for line in result.stdout.splitlines()
                         if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped from", "-- Dumped by")))

    return dump


def _points(run: Run) -> str:
    return ", ".join(f"{p} ({o})" for p, o in zip(run.points, run.outcomes, strict=False)) + (
        f", ... not reached: {', '.join(run.points[len(run.outcomes):])}" if len(run.outcomes) < len(run.points)
        else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="server to create scratch databases on")
    parser.add_argument("--rows", type=int, default=2000, help="rows of par (batches of 200)")
    parser.add_argument("--random", type=int, default=20, help="random kill points per kind")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--kinds", default="", help="comma-separated kinds (default: all but partition)")
    parser.add_argument("--no-abort", action="store_true", help="skip the abort matrix")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    kinds = [k for k in args.kinds.split(",") if k] or list(SCENARIOS)
    server = args.database_url
    print(f"server: {first(server, 'SELECT version()')}; {os.cpu_count()} cores; {args.rows} rows; "
          f"seed {seed} (--seed {seed} replays the random points)")
    dump = _dumper(server)
    lines: list[tuple[str, ...]] = []
    details: list[str] = []
    failed = False
    started = time.monotonic()
    with Drivers() as drivers:
        for kind in kinds:
            scenario = SCENARIOS[kind]
            runs: dict[str, Run] = {}
            with database(server) as url:
                make_tables(url, args.rows)
                phases = phases_of(url, scenario)
                runs["boundaries"] = run_points(url, scenario, phases, boundaries(phases), drivers, args.rows,
                                                seed=seed)
            with database(server) as url:
                make_tables(url, args.rows)
                points = random_points(phases, random.Random(f"{seed}-{kind}"), args.random,
                                       args.rows // BATCH - 1)
                runs["random"] = run_points(url, scenario, phases, points, drivers, args.rows, seed=seed)
            if not args.no_abort:
                with database(server) as url:
                    make_tables(url, min(args.rows, 500))
                    until = online.KINDS[kind].abortable_until_complete
                    runs["abort"] = abort_at_each(url, scenario, abortable(phases, until), drivers, dump)
            cells: list[str] = [kind, scenario.family]
            for what in ("boundaries", "random", "abort"):
                run = runs.get(what)
                if run is None:
                    cells.append("-")
                    continue
                done = sum(o in ("killed", "completed", "aborted") for o in run.outcomes)
                same = sum(o.startswith(("same state", "after the end")) for o in run.outcomes)
                cells.append(f"{done}/{len(run.points)}" + (f" (+{same} same)" if same else "")
                             + f" {run.seconds:.1f}s")
                details.append(f"{kind} {what}: {_points(run)}")
                for problem in run.problems:
                    details.append(f"  PROBLEM: {problem}")
                    failed = True
            writes = sum(r.commits for r in runs.values())
            errors = sum(r.failures for r in runs.values())
            cells += [f"{writes} ({errors} failed)", "ok" if not any(r.problems for r in runs.values()) else "FAILED"]
            lines.append(tuple(cells))
            print(f"  {kind}: {cells[-1]}", flush=True)
    head = ("kind", "family", "boundaries killed", "random killed", "aborted", "writes", "result")
    widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]
    print()
    for row in [head, tuple("-" * w for w in widths), *lines]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"\n{time.monotonic() - started:.0f}s in all; every point:")
    for line in details:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
