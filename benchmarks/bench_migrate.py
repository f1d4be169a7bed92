"""What the runner's safety costs: ``agentdb upgrade head`` against ``psql -f`` of the same SQL.

Both build the whole schema on a fresh database.  ``psql`` applies the offline
SQL (``agentdb sql base:head``) with ``ON_ERROR_STOP`` in one go; agentdb adds
the run lock, a transaction per migration, timeouts, checksum validation, the
blocker watch and the history rows.  Prints the median and spread of N runs.

    .venv/bin/python benchmarks/bench_migrate.py [--runs 10] [--database-url URL]

Without ``--database-url`` the embedded server is used (a scratch database is
created and dropped on it for every run).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from _scratch import drop, scratch

import agentdb
from agentdb._pgtools import find_tool
from agentdb.connection import resolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--database-url", default=None, help="a server URL whose role may CREATE DATABASE")
    args = parser.parse_args()

    server = resolve(args.database_url).conninfo()
    with psycopg.connect(server) as conn:
        version = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
    psql = find_tool("psql", version // 10000)
    offline = agentdb.sql("base:head")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(offline)
        sql_file = Path(handle.name)

    timings: dict[str, list[float]] = {"psql -f (offline SQL)": [], "agentdb upgrade head": []}
    for _ in range(args.runs):
        name, url = scratch(server)
        started = time.perf_counter()
        subprocess.run([str(psql), "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(sql_file)],
                       check=True, capture_output=True)
        timings["psql -f (offline SQL)"].append(time.perf_counter() - started)
        drop(server, name)

        name, url = scratch(server)
        started = time.perf_counter()
        report = agentdb.upgrade("head", database_url=url)
        timings["agentdb upgrade head"].append(time.perf_counter() - started)
        drop(server, name)
    sql_file.unlink()

    print(f"server: PostgreSQL {version // 10000}.{version % 100}; {len(report.steps)} migrations; "
          f"{args.runs} runs each, fresh database per run")
    print(f"{'method':<26}{'median s':>10}{'min s':>10}{'max s':>10}")
    for method, values in timings.items():
        print(f"{method:<26}{statistics.median(values):>10.3f}{min(values):>10.3f}{max(values):>10.3f}")
    overhead = statistics.median(timings["agentdb upgrade head"]) - statistics.median(timings["psql -f (offline SQL)"])
    print(f"safety overhead (median difference): {overhead * 1000:.0f} ms (run lock, a transaction and a history "
          "row per migration, checksum validation, the blocker-watch connection, loading the Alembic environment)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
