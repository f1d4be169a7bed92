"""``agentdb import`` / ``export`` against ``psql \\copy`` on the same files, table, indexes and triggers, same run.

For each size (default 1,000,000 and 5,000,000 ``analytics`` rows) on a fresh
database at head with demo users and tracks (so both foreign keys are checked):

* **clean**: ``\\copy analytics (...) FROM file CSV HEADER`` vs ``bulk_import``;
* **1% bad rows** spread through the file (every 100th line: a bad timestamp, a
  user id that is not a number, a CHECK violation, a user that does not exist,
  a line with too few fields, in turn): ``bulk_import(max_rejects="1%")``, which
  loads the 99% and reports every bad line, vs ``\\copy`` of the *clean* file
  (``\\copy`` cannot load the dirty one at all);
* **export**: ``\\copy (SELECT * FROM analytics) TO file CSV HEADER`` vs ``bulk_export``
  (``analytics`` is partitioned at head, and COPY TO of a partitioned table
  needs the query form; ``bulk_export`` uses it too).

The month partitions of the files' dates (2025-01 to 2026-08) are created
before anything is timed (``agentdb.partitions.create_month_partitions``), so
``\\copy`` and agentdb load into the same partitions (``\\copy`` would
otherwise send every row to the DEFAULT partition).  Each load starts from an
empty table (``TRUNCATE``, not timed).  Every agentdb
run is a separate Python process, timed from its start (interpreter and
imports included, as a user sees it); its peak RSS is printed, to show memory
stays flat as the file grows.  Medians of ``--runs`` runs, interleaved.

    .venv/bin/python benchmarks/bench_bulk.py [--rows 1000000,5000000] [--runs 3] [--database-url URL]

Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from _scratch import drop, scratch

import agentdb
from agentdb._pgtools import find_tool
from agentdb.connection import resolve
from agentdb.partitions import create_month_partitions

COLUMNS = "user_id,event_type,track_id,properties,country,device,session_id,created_at"
EVENTS = ("play", "skip", "search", "like", "recommendation.click")
DEVICES = ("mobile", "desktop", "tablet", "web", "tv")
COUNTRIES = ("DE", "FR", "US", "GB", "SE", "BR", "JP")
#: What ``\\copy ... TO`` exports: a partitioned table needs the query form.
EVERY_ROW = "(SELECT * FROM analytics)"


def _generate(path: Path, rows: int, users: list[int], tracks: list[int], bad_every: int | None, seed: int) -> int:
    """Write ``rows`` analytics lines (plus header); with ``bad_every``, every Nth line is bad. Bad lines written."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    bad = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(COLUMNS + "\n")
        buffer = []
        for i in range(rows):
            user = rng.choice(users)
            when = (start + timedelta(seconds=rng.randrange(0, 600 * 86400))).strftime("%Y-%m-%d %H:%M:%S+00")
            track = rng.choice(tracks) if rng.random() < 0.8 else ""
            ms = rng.randrange(1000, 300000)
            line = (f'{user},{rng.choice(EVENTS)},{track},"{{""ms_played"": {ms}, ""source"": ""album""}}",'
                    f"{rng.choice(COUNTRIES)},{rng.choice(DEVICES)},{uuid.UUID(int=rng.getrandbits(128))},{when}")
            if bad_every and i % bad_every == bad_every // 2:
                kind = (i // bad_every) % 5
                if kind == 0:
                    line = line.rsplit(",", 1)[0] + ",2025-13-45 25:61:00+00"
                elif kind == 1:
                    line = "12abc" + line[line.index(","):]
                elif kind == 2:
                    line = line.replace(",mobile,", ",phone,").replace(",desktop,", ",phone,").replace(
                        ",tablet,", ",phone,").replace(",web,", ",phone,").replace(",tv,", ",phone,")
                elif kind == 3:
                    line = "987654321" + line[line.index(","):]
                else:
                    line = ",".join(line.split(",")[:3])
                bad += 1
            buffer.append(line)
            if len(buffer) >= 10000:
                out.write("\n".join(buffer) + "\n")
                buffer.clear()
        if buffer:
            out.write("\n".join(buffer) + "\n")
    return bad


def _psql(psql: Path, url: str, command: str) -> float:
    started = time.perf_counter()
    subprocess.run([str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", command],
                   check=True, capture_output=True, text=True)
    return time.perf_counter() - started


_CHILD = """
import sys, time
from agentdb.bulk import bulk_import, bulk_export
started = time.perf_counter()
if sys.argv[1] == "import":
    report = bulk_import("analytics", sys.argv[2], database_url=sys.argv[3], max_rejects=sys.argv[4], force=True,
                         rejects=sys.argv[5])
    assert report.adds_up, report.summary()
    print(report.rows_loaded, report.rows_rejected, report.method)
else:
    report = bulk_export("analytics", sys.argv[2], database_url=sys.argv[3])
    print(report.rows, 0, "export")
print(time.perf_counter() - started)
"""


def _agentdb(*args: str) -> tuple[float, float, float, str]:
    """Run one agentdb import/export in its own process: (seconds of the call, wall seconds, peak RSS MB, summary).

    The call is timed inside the process; the wall time adds starting Python and importing agentdb (its
    facade imports every capability), which a user running the command also waits for.
    """
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", _CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    _pid, status, usage = os.wait4(process.pid, 0)
    out = process.stdout.read() if process.stdout else ""
    err = process.stderr.read() if process.stderr else ""
    if status != 0:
        raise SystemExit(f"agentdb run failed: {err.strip().splitlines()[-1] if err.strip() else status}")
    lines = out.strip().splitlines()
    return float(lines[-1]), time.perf_counter() - started, usage.ru_maxrss / 1024, lines[0]


def _truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE analytics")
        conn.execute("TRUNCATE agentdb.imports") if conn.execute(
            "SELECT to_regclass('agentdb.imports') IS NOT NULL").fetchone() == (True,) else None
        conn.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", default="1000000,5000000", help="comma-separated sizes (analytics rows)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="a server URL whose role may CREATE DATABASE")
    args = parser.parse_args()
    sizes = [int(s) for s in args.rows.split(",")]

    server = resolve(args.database_url).url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(server) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int, version()").fetchone()
        assert row is not None
        version, banner = int(row[0]), str(row[1])
    psql = find_tool("psql", version // 10000)
    print(f"server: {banner.split(',')[0]}; runs: {args.runs}; {os.cpu_count()} cores")

    name, url = scratch(server)
    work = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    results: list[tuple[str, ...]] = []
    try:
        agentdb.upgrade(database_url=url)
        agentdb.seed_demo("small", database_url=url, users=2000, analytics_rows=0)
        months = [datetime(2025 + m // 12, m % 12 + 1, 1, tzinfo=UTC) for m in range(20)]  # 2025-01 .. 2026-08
        create_month_partitions("analytics", months, database_url=url)
        with psycopg.connect(url) as conn:
            users = [r[0] for r in conn.execute("SELECT id FROM users").fetchall()]
            tracks = [r[0] for r in conn.execute("SELECT id FROM tracks").fetchall()]
        for size in sizes:
            clean, dirty, out = work / f"clean-{size}.csv", work / f"dirty-{size}.csv", work / f"out-{size}.csv"
            _generate(clean, size, users, tracks, None, 1)
            bad = _generate(dirty, size, users, tracks, 100, 1)
            mb = clean.stat().st_size / 1e6
            print(f"\n{size:,} rows: clean file {mb:.0f} MB, dirty file {bad:,} bad lines", flush=True)
            timings: dict[str, list[float]] = {k: [] for k in ("copy", "clean", "dirty", "copy_to", "export",
                                                               "clean_wall", "dirty_wall", "export_wall")}
            rss: dict[str, float] = {}
            for run in range(args.runs):
                _truncate(url)
                timings["copy"].append(_psql(psql, url, f"\\copy analytics ({COLUMNS}) FROM '{clean}' CSV HEADER"))
                _truncate(url)
                seconds, wall, peak, line = _agentdb("import", str(clean), url, "0", str(work / "r.csv"))
                timings["clean"].append(seconds)
                timings["clean_wall"].append(wall)
                rss["clean"] = max(rss.get("clean", 0), peak)
                _truncate(url)
                seconds, wall, peak, dline = _agentdb("import", str(dirty), url, "1%", str(work / "r.csv"))
                timings["dirty"].append(seconds)
                timings["dirty_wall"].append(wall)
                rss["dirty"] = max(rss.get("dirty", 0), peak)
                timings["copy_to"].append(_psql(psql, url, f"\\copy {EVERY_ROW} TO '{out}' CSV HEADER"))
                seconds, wall, peak, _ = _agentdb("export", str(out), url)
                timings["export"].append(seconds)
                timings["export_wall"].append(wall)
                rss["export"] = max(rss.get("export", 0), peak)
                print(f"  run {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in timings.items()
                                                       if not k.endswith("_wall"))
                      + f" (clean: {line}; dirty: {dline})", flush=True)
            med = {k: statistics.median(v) for k, v in timings.items()}
            for what, key, base, label in (("clean import", "clean", "copy", ""),
                                           ("1% bad rows", "dirty", "copy", " (clean file)"),
                                           ("export", "export", "copy_to", "")):
                results.append((f"{size:,}", what, f"{med[base]:.1f} s{label}", f"{med[key]:.1f} s",
                                f"{med[base] / med[key]:.2f}x", f"{med[key + '_wall']:.1f} s",
                                f"{med[base] / med[key + '_wall']:.2f}x", f"{size / med[key]:,.0f}",
                                f"{rss[key]:.0f}"))
            for path in (clean, dirty, out):
                path.unlink(missing_ok=True)
        print("\n| rows | what | psql \\copy | agentdb call | rate vs \\copy | agentdb wall | wall rate | rows/s | "
              "peak RSS MB |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for result in results:
            print("| " + " | ".join(result) + " |")
    finally:
        drop(server, name)
        for leftover in work.glob("*"):
            leftover.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
