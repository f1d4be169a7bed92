"""How fast ``agentdb seed-demo`` builds analytics rows, against the plain PostgreSQL ways of loading the same rows.

1. ``seed_demo`` at the chosen scale (default ``large``: 10 000 users, 1 000 000
   analytics rows) on a fresh database: rows and seconds per table.
2. On the seeded database, each in a transaction that truncates ``analytics``
   and is rolled back, ``psql`` doing the same job the plain way:

   * the very same ``INSERT ... SELECT ... generate_series`` statement (its
     parameters inlined), with the table's indexes and foreign keys in place;
   * ``\\copy analytics FROM`` a CSV of the same rows (exported first, not timed).

   agentdb's own analytics step differs from the first only by dropping the
   indexes and foreign keys of the empty table and re-creating them after the load.

    .venv/bin/python benchmarks/bench_seed_demo.py [--scale large] [--analytics-rows N] [--database-url URL]

Without ``--database-url`` the embedded server is used; a scratch database is
created and dropped.  Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from _scratch import drop, scratch

import agentdb
from agentdb import demo
from agentdb._pgtools import find_tool
from agentdb.connection import resolve
from agentdb.demo import _loaders

COLUMNS = "user_id, event_type, track_id, properties, country, device, session_id, created_at"


def _psql(psql: Path, url: str, script: str) -> float:
    """Run ``script`` with psql (ON_ERROR_STOP) and return the wall time in seconds."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    started = time.perf_counter()
    subprocess.run([str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", handle.name],
                   check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    Path(handle.name).unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", default="large", choices=sorted(demo.SCALES))
    parser.add_argument("--analytics-rows", type=int, default=None)
    parser.add_argument("--database-url", default=None, help="a server URL whose role may CREATE DATABASE")
    args = parser.parse_args()

    server = resolve(args.database_url).conninfo()
    with psycopg.connect(server) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int, version()").fetchone()
        assert row is not None
        version, banner = int(row[0]), str(row[1])
    psql = find_tool("psql", version // 10000)
    print(f"server: {banner.split(',')[0]}")

    name, url = scratch(server)
    try:
        agentdb.upgrade(database_url=url)
        captured: dict[str, Any] = {}
        original = _loaders._LOADERS["analytics"]

        def capture(ctx: _loaders._Context) -> int:
            captured["params"] = _loaders._analytics_params(ctx)
            return original(ctx)

        _loaders._LOADERS["analytics"] = capture
        try:
            report = demo.seed_demo(args.scale, database_url=url, analytics_rows=args.analytics_rows)
        finally:
            _loaders._LOADERS["analytics"] = original

        print(f"\nagentdb seed-demo --scale {args.scale}: {report.users:,} users, "
              f"{report.analytics_rows:,} analytics rows, one transaction")
        print(f"{'table':<24}{'rows':>12}{'seconds':>10}{'rows/s':>12}  how")
        for load in report.tables:
            rate = f"{load.rows_per_second:,.0f}" if load.seconds > 0 and load.rows else ""
            seconds = f"{load.seconds:.2f}" if load.seconds else ""
            print(f"{load.table:<24}{load.rows:>12,}{seconds:>10}{rate:>12}  {load.method}")
        overall = report.total_rows / report.seconds
        print(f"{'total':<24}{report.total_rows:>12,}{report.seconds:>10.2f}{overall:>12,.0f}")

        rows = report.rows["analytics"]
        ours = next(load for load in report.tables if load.table == "analytics")
        with psycopg.connect(url) as conn:
            statement = psycopg.ClientCursor(conn).mogrify(_loaders._ANALYTICS_SQL, captured["params"])
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "analytics.csv"
            subprocess.run([str(psql), "-X", "-q", "-d", url, "-c",
                            f"\\copy analytics ({COLUMNS}) TO '{csv}' CSV"], check=True)
            insert_select = _psql(psql, url, f"BEGIN;\nTRUNCATE analytics;\n{statement};\nROLLBACK;\n")
            copy_csv = _psql(psql, url, f"BEGIN;\nTRUNCATE analytics;\n"
                                        f"\\copy analytics ({COLUMNS}) FROM '{csv}' CSV\nROLLBACK;\n")

        print(f"\nanalytics, {rows:,} rows (the same rows each time):")
        for label, seconds in (
            ("agentdb seed-demo (INSERT ... SELECT, indexes and FKs rebuilt after)", ours.seconds),
            ("psql: same INSERT ... SELECT generate_series, indexes and FKs kept", insert_select),
            ("psql: \\copy of a CSV of the same rows, indexes and FKs kept", copy_csv),
        ):
            print(f"  {label:<72}{seconds:8.2f} s {rows / seconds:>12,.0f} rows/s")
    finally:
        drop(server, name)


if __name__ == "__main__":
    main()
