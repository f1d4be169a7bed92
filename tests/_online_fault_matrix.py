"""The fault matrix of the online kinds: ``kill -9`` at every point a kind's phases expose while writers write,
then resume; abort at every phase.  Shared by tests/test_online_kind_faults.py (the slice CI runs) and
benchmarks/faults_online.py (every point of every kind, at a chosen scale).

The points come from the kind's plan (:func:`boundaries`), never from a list written by hand, so a phase or a
step added to a kind is covered at once.  A table run goes through its points in order: the first process
starts the change and is killed at the first point, a new process resumes it and is killed at the next, and so
on; the last one finishes.  Writer threads insert, update and delete the whole time, and every write is
mirrored in the same transaction into ``online_test.par_ref`` in the application's terms (a reference kept by
the writers), so at the end the table equals the reference row by row (EXCEPT ALL both ways): nothing lost,
duplicated, stale or resurrected.

The expand/contract kinds are driven as a deploy does it: the old application version writes while the change
expands (``complete=False``); when it is expanded, the new version starts writing too (its writes use the new
columns: dual writes both ways, and both versions' reads are compared with the reference); the old version
stops; then ``complete`` contracts, killed at its points too, with the new version writing.

Each driver is a new process that SIGKILLs itself at its point (the engine's ``AGENTDB_ONLINE_KILL_AT``).  It
is forked from a server process (:class:`Drivers`) that imported agentdb once, so a kill costs a fork and the
driver's own work instead of a Python start and the imports (about 0.6 s each on the CI machine).  A forked
driver is a process like any other: its connections die with it, and the server notices it as it would a crash.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from _online_helpers import leftovers
from _online_kind_helpers import make_par_and_kid
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
KILL_ENV = "AGENTDB_ONLINE_KILL_AT"

#: Batches of 200 rows, so a table of a couple of thousand rows takes about ten batches per batched phase.
BATCH = 200
SETTINGS: dict[str, Any] = {"batch_size": BATCH, "min_batch_size": BATCH, "max_batch_size": BATCH,
                            "lock_retries": 20, "throttle_poll": 0.1}

# --- drivers: processes forked from a server that imported agentdb once ------------------------------------

_SERVER = r"""
import json, os, sys, tempfile, traceback
import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401 -- what every driver needs, imported before forking
from agentdb import online
from agentdb.online import engine, kinds  # noqa: F401


def act(request):
    url, table, action = request["url"], request["table"], request["action"]
    settings = online.OnlineSettings(**request["settings"]) if request["settings"] else None
    if action == "start":
        online.start(table, request["kind"], database_url=url, settings=settings, **request["options"])
    elif action == "resume":
        online.resume(table, database_url=url, settings=settings)
    elif action == "complete":
        online.complete(table, database_url=url)
    elif action == "abort":
        online.abort(table, database_url=url)
    else:
        raise ValueError(action)


for line in sys.stdin:
    request = json.loads(line)
    with tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            os.dup2(err.fileno(), 1)
            os.dup2(err.fileno(), 2)
            os.environ.pop(engine.KILL_ENV, None)
            if request["kill_at"]:
                os.environ[engine.KILL_ENV] = request["kill_at"]
            code = 0
            try:
                act(request)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        print(json.dumps({"id": request["id"], "pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        err.seek(0)
        text = err.read().decode(errors="replace")
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(json.dumps({"id": request["id"], "returncode": code, "output": text[-4000:]}), flush=True)
"""


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str

    @property
    def killed(self) -> bool:
        return self.returncode == -9


class Drivers:
    """A server process that forks one driver process per request (start, resume, complete or abort of a change),
    optionally killed at a point; one request at a time."""

    def __init__(self, timeout: float = 120.0) -> None:
        env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
        self.timeout = timeout
        self.process = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.driver_pid: int | None = None
        self.request = 0

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def __enter__(self) -> Drivers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _line(self, key: str, timeout: float) -> dict[str, Any]:
        """The next answer to the current request that has ``key`` (an answer to an earlier request, which a
        failed test did not wait for, is skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = dict(json.loads(self.lines.get(timeout=max(0.0, deadline - time.monotonic()))))
            except queue.Empty:
                if self.driver_pid is not None:
                    os.kill(self.driver_pid, 9)
                raise AssertionError(f"no answer from the driver process within {timeout:.0f}s") from None
            if answer["id"] == self.request and key in answer:
                return answer

    def spawn(self, url: str, action: str, *, table: str, kind: str = "", options: Mapping[str, Any] | None = None,
              settings: Mapping[str, Any] | None = None, kill_at: str | None = None) -> int:
        """Start a driver; returns its pid.  :meth:`wait` for its outcome before the next request."""
        self.request += 1
        request = {"id": self.request, "url": url, "table": table, "action": action, "kind": kind,
                   "options": dict(options or {}), "settings": dict(settings or {}), "kill_at": kill_at}
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        self.driver_pid = int(self._line("pid", 30)["pid"])
        return self.driver_pid

    def wait(self) -> Outcome:
        answer = self._line("returncode", self.timeout)
        self.driver_pid = None
        return Outcome(int(answer["returncode"]), str(answer["output"]))

    def run(self, url: str, action: str, **kwargs: Any) -> Outcome:
        self.spawn(url, action, **kwargs)
        return self.wait()


# --- kill points, from the plan ----------------------------------------------------------------------------


def boundaries(phases: Sequence[Any]) -> list[str]:
    """Every point the engine's kill hook exposes at the boundaries of these phases, in the order a run meets
    them: ``<phase>:before``; each ``<phase>:step:<n>``; in a batched phase the first batch, killed inside its
    transaction and right after its commit; ``cutover:locked`` (swapped, locks held, not committed);
    ``<phase>:after``."""
    points = []
    for phase in phases:
        points.append(f"{phase.name}:before")
        if phase.sort == "steps":
            points += [f"{phase.name}:step:{n}" for n in range(1, len(phase.steps) + 1)]
        elif phase.sort in ("copy", "backfill"):
            points += [f"{phase.name}:batch:1:uncommitted", f"{phase.name}:batch:1"]
        elif phase.sort == "cutover":
            points.append("cutover:locked")
        points.append(f"{phase.name}:after")
    return points


def point_space(phases: Sequence[Any], batches: int) -> list[tuple[str, int, bool]]:
    """Every point a run meets, in order, as (point, n, uncommitted): ``n`` is the batch number within the phase
    (0 for a point that is not a batch), up to ``batches`` batches per batched phase."""
    space: list[tuple[str, int, bool]] = []
    for point in boundaries(phases):
        phase, _, where = point.partition(":")
        if where.startswith("batch:"):
            if where.endswith(":uncommitted"):
                for n in range(1, batches + 1):
                    space += [(phase, n, True), (phase, n, False)]
            continue
        space.append((point, 0, False))
    return space


def unmet(previous: str | None, point: str, phases: Sequence[Any]) -> str | None:
    """Why a process resuming after a kill at ``previous`` cannot meet ``point`` (None: it meets it).

    The kill at a phase's last step comes after the commit that moved the change to the next phase, so it
    leaves the state ``<phase>:after`` would (and, in the last phase, the completed change); a point that
    commits cannot be met twice.  ``:before`` and ``cutover:locked`` (rolled back) can, and batch points,
    which count the batches of each process (:func:`random_points`)."""
    if previous is None:
        return None
    last = phases[-1]
    steps = {p.name: len(p.steps) for p in phases if p.sort == "steps"}
    phase, _, where = previous.partition(":")
    if phase == last.name and (where == "after" or where == f"step:{steps.get(phase)}"):
        return "after the end"
    if point == previous and not (where == "before" or previous == "cutover:locked" or where.startswith("batch:")):
        return f"same state as {previous}"
    if point == f"{phase}:after" and where == f"step:{steps.get(phase)}":
        return f"same state as {previous}"
    return None


def random_points(phases: Sequence[Any], rng: random.Random, count: int, batches: int) -> list[str]:
    """``count`` points drawn at random from every point a run meets (batch points included), in run order,
    as each process's kill point: a batch point counts the batches of the process that resumes, so the n-th
    batch of the phase is ``batch:<n - batches the earlier processes committed>``.  A point no process can
    meet after the one before it (:func:`unmet`) is drawn again."""
    space = point_space(phases, batches)
    drawn = rng.choices(range(len(space)), k=count)
    for _ in range(1000):
        points = _walk(space, sorted(drawn), phases, batches)
        if len(points) >= count:
            return points[:count]
        drawn.append(rng.randrange(len(space)))
    raise AssertionError(f"no {count} points a run can meet in {space}")


def _walk(space: Sequence[tuple[str, int, bool]], drawn: Sequence[int], phases: Sequence[Any],
          batches: int) -> list[str]:
    points: list[str] = []
    committed: dict[str, int] = {}
    for index in drawn:
        point, n, uncommitted = space[index]
        phase = point
        if n:
            done = committed.get(phase, 0)
            n = max(n, done + 1)
            if n > batches:
                continue
            point = f"{phase}:batch:{n - done}" + (":uncommitted" if uncommitted else "")
        if unmet(points[-1] if points else None, point, phases) is None:
            points.append(point)
            if n:
                committed[phase] = n - 1 if uncommitted else n
    return points


def abortable(phases: Sequence[Any], until_complete: bool) -> list[str]:
    """The boundaries at which the change can still be aborted -- before its cut-over commits (an expand/contract
    kind: before its contraction), before the last step of a kind without either -- each state once: a phase's
    ``:after`` leaves the state of the next phase's ``:before``, and that one, after a phase of steps, the
    state of its last step, so they are left out."""
    points = boundaries(phases)
    if any(p.sort == "cutover" for p in phases):
        last = "cutover:locked"
    elif until_complete and phases[-1].name == "complete":
        last = "complete:before"
    elif phases[-1].sort == "steps" and len(phases[-1].steps) > 1:
        last = f"{phases[-1].name}:step:{len(phases[-1].steps) - 1}"
    else:
        last = f"{phases[-1].name}:before"
    after_steps = {f"{later.name}:before" for earlier, later in itertools.pairwise(phases) if earlier.sort == "steps"}
    return [p for p in points[: points.index(last) + 1] if not p.endswith(":after") and p not in after_steps]


# --- the tables, the reference and the writers -------------------------------------------------------------


def make_tables(url: str, rows: int) -> None:
    """``par`` (integer identity key; name, city, country, amount; an index on city) with ``rows`` rows,
    ``kid`` referencing it (ON DELETE CASCADE), and ``online_test.par_ref``: what par holds in the application's
    terms, kept by the writers in their own transactions (``twice`` is what an added column should hold)."""
    with psycopg.connect(url) as conn:
        make_par_and_kid(conn, rows)
        conn.execute("CREATE TABLE online_test.par_ref (id bigint PRIMARY KEY, name text, city text, country text, "
                     "amount integer, twice bigint)")
        conn.execute("INSERT INTO online_test.par_ref SELECT id, name, city, country, amount, amount * 2 "
                     "FROM public.par")
        conn.execute("ANALYZE public.par, public.kid")


#: One transaction of writes: (connection, random, a tag unique to the thread, the table's initial rows).
Write = Callable[[psycopg.Connection[Any], random.Random, str, int], None]

_CITIES = ("Oslo", "Lyon", "Rome", "Kyiv")
_COUNTRIES = ("NO", "FR", "IT", "UA")


def _delete(conn: psycopg.Connection[Any], key: int) -> None:
    conn.execute("WITH w AS (DELETE FROM public.par WHERE id = %s RETURNING id) "
                 "DELETE FROM online_test.par_ref r USING w WHERE r.id = w.id", (key,))


def _insert(conn: psycopg.Connection[Any], columns: Sequence[str], values: Sequence[object],
            ref: Mapping[str, object]) -> None:
    """Insert a par row (and a kid row) and its reference row, with the id the table gave."""
    statement = sql.SQL(
        "WITH w AS (INSERT INTO public.par ({}) VALUES ({}) RETURNING id) "
        "INSERT INTO online_test.par_ref (id, {}) SELECT id, {} FROM w RETURNING id"
    ).format(sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(sql.Placeholder() * len(values)),
             sql.SQL(", ").join(map(sql.Identifier, ref)), sql.SQL(", ").join(sql.Placeholder() * len(ref)))
    row = conn.execute(statement, (*values, *ref.values())).fetchone()
    assert row is not None
    conn.execute("INSERT INTO public.kid (par_id, note) VALUES (%s, 'w')", (row[0],))


def _update(conn: psycopg.Connection[Any], key: int, values: Mapping[str, object],
            ref: Mapping[str, object]) -> None:
    statement = sql.SQL(
        "WITH w AS (UPDATE public.par SET {} WHERE id = %s RETURNING id) "
        "UPDATE online_test.par_ref r SET {} FROM w WHERE r.id = w.id"
    ).format(sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in values),
             sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in ref))
    conn.execute(statement, (*values.values(), key, *ref.values()))


def _name(rng: random.Random, tag: str) -> tuple[str, str]:
    """A unique name of two words (a split gives them back)."""
    return f"{tag}{rng.randrange(10**9)}", f"x{rng.randrange(10**9):x}"


def old_version(conn: psycopg.Connection[Any], rng: random.Random, tag: str, rows: int) -> None:
    """The application before the change: inserts, updates (of every old column, or of amount only) and
    deletes (which cascade to kid), in its own columns."""
    op = rng.random()
    key = rng.randrange(1, rows + rows // 5)
    amount = rng.randrange(10**6)
    if op < 0.35:
        first, last = _name(rng, tag)
        city, country = rng.choice(_CITIES), rng.choice(_COUNTRIES)
        _insert(conn, ("name", "city", "country", "amount"), (f"{first} {last}", city, country, amount),
                {"name": f"{first} {last}", "city": city, "country": country, "amount": amount, "twice": amount * 2})
    elif op < 0.6:
        first, last = _name(rng, tag)
        values = {"name": f"{first} {last}", "city": rng.choice(_CITIES), "country": rng.choice(_COUNTRIES),
                  "amount": amount}
        _update(conn, key, values, {**values, "twice": amount * 2})
    elif op < 0.85:
        _update(conn, key, {"amount": amount}, {"amount": amount, "twice": amount * 2})
    else:
        _delete(conn, key)


def _new_add_column(conn: psycopg.Connection[Any], rng: random.Random, tag: str, rows: int) -> None:
    """The new version after add_column: it writes ``twice`` itself (values the expression would not give)."""
    op = rng.random()
    key = rng.randrange(1, rows + rows // 5)
    amount, twice = rng.randrange(10**6), -rng.randrange(1, 10**9)
    if op < 0.35:
        first, last = _name(rng, tag)
        _insert(conn, ("name", "city", "country", "amount", "twice"), (f"{first} {last}", "Oslo", "NO", amount, twice),
                {"name": f"{first} {last}", "city": "Oslo", "country": "NO", "amount": amount, "twice": twice})
    elif op < 0.85:
        _update(conn, key, {"amount": amount, "twice": twice}, {"amount": amount, "twice": twice})
    else:
        _delete(conn, key)


def _new_rename(conn: psycopg.Connection[Any], rng: random.Random, tag: str, rows: int) -> None:
    """The new version after rename_column city -> town."""
    op = rng.random()
    key = rng.randrange(1, rows + rows // 5)
    amount, town = rng.randrange(10**6), rng.choice(_CITIES)
    if op < 0.35:
        first, last = _name(rng, tag)
        _insert(conn, ("name", "town", "country", "amount"), (f"{first} {last}", town, "FR", amount),
                {"name": f"{first} {last}", "city": town, "country": "FR", "amount": amount, "twice": amount * 2})
    elif op < 0.85:
        _update(conn, key, {"town": town, "amount": amount}, {"city": town, "amount": amount, "twice": amount * 2})
    else:
        _delete(conn, key)


def _new_split(conn: psycopg.Connection[Any], rng: random.Random, tag: str, rows: int) -> None:
    """The new version after split_column name -> first_name, last_name."""
    op = rng.random()
    key = rng.randrange(1, rows + rows // 5)
    amount = rng.randrange(10**6)
    first, last = _name(rng, tag)
    if op < 0.35:
        _insert(conn, ("first_name", "last_name", "city", "country", "amount"), (first, last, "Rome", "IT", amount),
                {"name": f"{first} {last}", "city": "Rome", "country": "IT", "amount": amount, "twice": amount * 2})
    elif op < 0.85:
        _update(conn, key, {"first_name": first, "last_name": last},
                {"name": f"{first} {last}"})
    else:
        _delete(conn, key)


def _new_merge(conn: psycopg.Connection[Any], rng: random.Random, tag: str, rows: int) -> None:
    """The new version after merge_columns city, country -> place."""
    op = rng.random()
    key = rng.randrange(1, rows + rows // 5)
    amount = rng.randrange(10**6)
    city, country = rng.choice(_CITIES), rng.choice(_COUNTRIES)
    if op < 0.35:
        first, last = _name(rng, tag)
        _insert(conn, ("name", "place", "amount"), (f"{first} {last}", f"{city}/{country}", amount),
                {"name": f"{first} {last}", "city": city, "country": country, "amount": amount, "twice": amount * 2})
    elif op < 0.85:
        _update(conn, key, {"place": f"{city}/{country}", "amount": amount},
                {"city": city, "country": country, "amount": amount, "twice": amount * 2})
    else:
        _delete(conn, key)


_GROUPS = itertools.count(1)


class Writers:
    """Threads running ``write`` in a transaction again and again until stopped; a failed transaction (a
    deadlock between writers, a lock timeout) rolls back on both tables, so the reference stays exact."""

    def __init__(self, url: str, write: Write, rows: int, *, seed: int = 0, tag: str = "w", count: int = 2) -> None:
        self.url, self.write, self.rows = url, write, rows
        self.stop_event = threading.Event()
        self.commits = 0
        self.started_with = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        group = next(_GROUPS)  # names stay unique over several runs on one table
        self.threads = [threading.Thread(target=self._run, args=(seed * 100 + n, f"{tag}{group}.{n}-"), daemon=True)
                        for n in range(count)]

    def start(self, commits: int = 5, timeout: float = 10) -> Writers:
        """Start, and return once they have committed ``commits`` transactions (they write, before any kill)."""
        for thread in self.threads:
            thread.start()
        deadline = time.monotonic() + timeout
        while self.commits < commits and time.monotonic() < deadline:
            time.sleep(0.01)
        self.started_with = self.commits
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self, seed: int, tag: str) -> None:
        rng = random.Random(seed)
        with psycopg.connect(self.url, application_name="online-test-writer") as conn:
            while not self.stop_event.is_set():
                try:
                    with conn.transaction():
                        self.write(conn, rng, tag, self.rows)
                    with self.lock:
                        self.commits += 1
                except psycopg.Error as exc:
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                    if conn.broken:
                        return
                time.sleep(0.003)


# --- the scenarios: one per kind ---------------------------------------------------------------------------

#: A view of the table in the application's terms, and the same of the reference: (SQL, SQL).
View = tuple[str, str]
_BASE: View = ("SELECT id, name, city, country, amount FROM public.par",
               "SELECT id, name, city, country, amount FROM online_test.par_ref")


@dataclass(frozen=True)
class Scenario:
    kind: str
    #: rebuild, expand or constraint: the kinds of a family share their phases.
    family: str
    options: Mapping[str, Any]
    table: str = "par"
    #: Expand/contract: how the new application version writes, and what it reads (compared with the reference).
    new_version: Write | None = None
    new_view: View = _BASE
    #: (SQL, expected first column of the first row) once the change completed.
    checks: tuple[tuple[str, object], ...] = ()

    @property
    def expand(self) -> bool:
        return self.new_version is not None

    def settings(self) -> dict[str, Any]:
        return {**SETTINGS, "complete": False} if self.expand else dict(SETTINGS)


def _column(name: str) -> str:
    """The column's type (and `` not null``), None when par has no such column."""
    return sql.SQL("SELECT format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END "
                   "FROM pg_attribute WHERE attrelid = 'public.par'::regclass AND attname = {} AND NOT attisdropped"
                   ).format(sql.Literal(name)).as_string(None)


def _validated(name: str) -> str:
    return sql.SQL("SELECT convalidated FROM pg_constraint WHERE conname = {}").format(
        sql.Literal(name)).as_string(None)

SCENARIOS: dict[str, Scenario] = {s.kind: s for s in (
    Scenario("alter_column_type", "rebuild", {"column": "id", "type": "bigint"}, checks=(
        (_column("id"), "bigint not null"),
        ("SELECT confrelid::regclass::text || ' ' || convalidated FROM pg_constraint "
         "WHERE conname = 'kid_par_id_fkey'", "par true"),
        ("SELECT max_value FROM pg_sequences WHERE sequencename = 'par_id_seq'", 9223372036854775807),
        ("SELECT count(*) FROM public.kid WHERE par_id NOT IN (SELECT id FROM public.par)", 0),
    )),
    Scenario("add_column", "expand", {"column": "twice", "type": "bigint", "backfill": "amount * 2",
                                      "server_default": "0", "nullable": False},
             new_version=_new_add_column,
             new_view=("SELECT id, name, city, country, amount, twice FROM public.par",
                       "SELECT id, name, city, country, amount, twice FROM online_test.par_ref"),
             checks=((_column("twice"), "bigint not null"),
                     ("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'public.par'::regclass",
                      "0"))),
    Scenario("rename_column", "expand", {"column": "city", "new_name": "town"}, new_version=_new_rename,
             new_view=("SELECT id, name, town, country, amount FROM public.par", _BASE[1]),
             checks=((_column("city"), None), ("SELECT pg_get_indexdef('public.par_city_idx'::regclass)",
                                              "CREATE INDEX par_city_idx ON public.par USING btree (town)"))),
    Scenario("split_column", "expand", {"column": "name", "into": {
        "first_name": ["text", "split_part(name, ' ', 1)"], "last_name": ["text", "split_part(name, ' ', 2)"]},
        "merge_back": "first_name || ' ' || last_name"}, new_version=_new_split,
        new_view=("SELECT id, first_name, last_name, city, country, amount FROM public.par",
                  "SELECT id, split_part(name, ' ', 1), split_part(name, ' ', 2), city, country, amount "
                  "FROM online_test.par_ref"),
        checks=((_column("name"), None),)),
    Scenario("merge_columns", "expand", {"columns": ["city", "country"], "into": "place", "type": "text",
                                         "expression": "city || '/' || country",
                                         "split_back": {"city": "split_part(place, '/', 1)",
                                                        "country": "split_part(place, '/', 2)"}},
             new_version=_new_merge,
             new_view=("SELECT id, name, place, amount FROM public.par",
                       "SELECT id, name, city || '/' || country, amount FROM online_test.par_ref"),
             checks=((_column("city"), None), (_column("country"), None))),
    Scenario("create_index", "constraint", {"name": "par_country_amount_idx", "columns": ["country", "amount"]},
             checks=(("SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.par_country_amount_idx'::regclass",
                      True),)),
    Scenario("drop_index", "constraint", {"name": "par_city_idx"},
             checks=(("SELECT to_regclass('public.par_city_idx')", None),)),
    Scenario("add_check", "constraint", {"name": "par_amount_check", "condition": "amount >= 0"},
             checks=((_validated("par_amount_check"), True),)),
    Scenario("add_foreign_key", "constraint", {"name": "kid_par_id_fkey2", "columns": ["par_id"],
                                               "references": "par", "on_delete": "CASCADE"}, table="kid",
             checks=((_validated("kid_par_id_fkey2"), True),)),
    Scenario("add_unique", "constraint", {"name": "par_name_key", "columns": ["name"]},
             checks=(("SELECT contype::text FROM pg_constraint WHERE conname = 'par_name_key'", "u"),)),
)}


def phases_of(url: str, scenario: Scenario) -> tuple[Any, ...]:
    """The kind's phases, from its plan of this very table (a dry run: nothing changes)."""
    from agentdb import online

    settings = online.OnlineSettings(**scenario.settings())
    return online.plan(scenario.table, scenario.kind, database_url=url, settings=settings,
                       **scenario.options).phases


# --- checks ------------------------------------------------------------------------------------------------


def view_differences(url: str, view: View) -> tuple[int, int]:
    """Rows of the table's view not in the reference's, and the other way round (EXCEPT ALL both ways)."""
    counts = []
    with psycopg.connect(url) as conn:
        for left, right in ((view[0], view[1]), (view[1], view[0])):
            row = conn.execute(sql.SQL("SELECT count(*) FROM ({} EXCEPT ALL {}) x").format(
                sql.SQL(left), sql.SQL(right))).fetchone()
            assert row is not None
            counts.append(int(row[0]))
    return counts[0], counts[1]


def first(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def problems_after(url: str, scenario: Scenario, writers: Sequence[Writers]) -> list[str]:
    """What is wrong with the table once the change completed (empty: nothing)."""
    from agentdb import online

    found = []
    commits = sum(w.commits for w in writers)
    failures = [f for w in writers for f in w.failures]
    if commits <= sum(w.started_with for w in writers):
        found.append(f"the writers committed nothing while the change ran ({commits} transactions in all)")
    if len(failures) > commits / 10:
        found.append(f"{len(failures)} writer transactions failed of {commits}: {failures[:3]}")
    for view in {_BASE, scenario.new_view} if not scenario.expand else {scenario.new_view}:
        if (diff := view_differences(url, view)) != (0, 0):
            found.append(f"table and reference differ {diff} in {view[0]!r}")
    for query, expected in scenario.checks:
        if (got := first(url, query)) != expected:
            found.append(f"{query!r} gives {got!r}, not {expected!r}")
    if left := leftovers(url):
        found.append(f"left behind: {left}")
    if unfinished := online.status(database_url=url):
        found.append(f"online.status(): {[s.message for s in unfinished]}")
    if (status := first(url, "SELECT status FROM agentdb.online_changes ORDER BY id DESC LIMIT 1")) != "completed":
        found.append(f"the change is {status}")
    return found


# --- a table run: kill at each point in turn ---------------------------------------------------------------


@dataclass
class Run:
    """What a table run did: each point and what came of it."""

    kind: str
    points: list[str]
    outcomes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    commits: int = 0
    failures: int = 0


def _expect_interrupted(url: str, point: str) -> str:
    """The change, after its driver was killed: ``killed`` (status() flags it interrupted) or ``completed``.

    The killed driver's session outlives it until the server notices the closed connection (a moment, on a
    busy machine longer): until then its lock makes the change look driven."""
    from agentdb import online

    deadline = time.monotonic() + 10
    while True:
        found = online.status(database_url=url)
        if not found:
            return "completed"
        if len(found) == 1 and found[0].interrupted:
            return "killed"
        if len(found) != 1 or time.monotonic() > deadline:
            return f"PROBLEM: after a kill at {point}: {[s.message for s in found]}"
        time.sleep(0.02)


def run_points(url: str, scenario: Scenario, phases: Sequence[Any], points: Sequence[str], drivers: Drivers,
               rows: int, *, seed: int = 0) -> Run:
    """Start the change, kill its driver at each point in turn (each time a new process resumes it), finish it;
    with writers writing the whole time.  Every kill must happen where asked."""
    run = Run(scenario.kind, list(points))
    started = time.monotonic()
    old = Writers(url, old_version, rows, seed=seed, tag="o").start()
    new: Writers | None = None
    writers = [old]
    began = False
    try:
        killed: str | None = None
        for point in points:
            reason = unmet(killed, point, phases)
            if reason is not None:
                run.outcomes.append(reason)
                continue
            action = "start" if not began else "resume"
            if scenario.expand and point.startswith("complete:"):
                if new is None:
                    new = _deploy(url, scenario, drivers, rows, seed, old, run, began)
                    writers.append(new)
                    began = True
                action = "complete"
            outcome = drivers.run(url, action, table=scenario.table, kind=scenario.kind,
                                  options=scenario.options, settings=scenario.settings() if not began else None,
                                  kill_at=point)
            began = True
            killed = point
            if not outcome.killed:
                run.problems.append(f"not killed at {point} ({action}): rc {outcome.returncode}: "
                                    f"{outcome.output[-1500:]}")
                return run
            state = _expect_interrupted(url, point)
            run.outcomes.append(state)
            if state.startswith("PROBLEM"):
                run.problems.append(state)
                return run
        if scenario.expand and new is None:
            new = _deploy(url, scenario, drivers, rows, seed, old, run, began)
            writers.append(new)
            began = True
        _finish(url, scenario, drivers, run)
    finally:
        for writer in writers:
            writer.stop()
        run.seconds = time.monotonic() - started
        run.commits = sum(w.commits for w in writers)
        run.failures = sum(len(w.failures) for w in writers)
    if not run.problems:
        run.problems += problems_after(url, scenario, writers)
    return run


def _finish(url: str, scenario: Scenario, drivers: Drivers, run: Run) -> None:
    """Resume (an expand/contract kind: complete) to the end; nothing to do when the last kill came after it."""
    from agentdb import online

    if not online.status(database_url=url):
        return
    outcome = drivers.run(url, "complete" if scenario.expand else "resume", table=scenario.table)
    if outcome.returncode != 0:
        run.problems.append(f"the final run failed: {outcome.output[-1500:]}")


def _deploy(url: str, scenario: Scenario, drivers: Drivers, rows: int, seed: int, old: Writers, run: Run,
            began: bool) -> Writers:
    """An expand/contract kind, expanded: finish the expansion (the deploy's ``agentdb upgrade --expand-only``
    run again), let the new version write beside the old one, compare what each reads with the reference, stop
    the old version."""
    assert scenario.new_version is not None
    outcome = drivers.run(url, "resume" if began else "start", table=scenario.table, kind=scenario.kind,
                          options=scenario.options, settings=None if began else scenario.settings())
    if outcome.returncode != 0:
        run.problems.append(f"the expansion did not finish: {outcome.output[-1500:]}")
    new = Writers(url, scenario.new_version, rows, seed=seed + 1, tag="n").start(commits=20)
    old.stop()
    for view in (_BASE, scenario.new_view):
        if (diff := view_differences(url, view)) != (0, 0):
            run.problems.append(f"expanded, table and reference differ {diff} in {view[0]!r}")
    return new


# --- abort ---------------------------------------------------------------------------------------------------


@contextmanager
def database(server: str) -> Iterator[str]:
    """A new empty database on ``server`` (a URL), dropped afterwards; yields its URL."""
    import uuid

    import sqlalchemy as sa

    name = f"faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def abort_at_each(url: str, scenario: Scenario, points: Sequence[str], drivers: Drivers,
                  dump: Callable[[str], str]) -> Run:
    """For each point: start the change, kill it there, abort it; the tables must be exactly as before (``dump``:
    the schema; rows of par and kid), with nothing left and no unfinished change.  At the last point, the abort
    itself is killed at its first step and run again."""
    from agentdb import online

    run = Run(scenario.kind, list(points))
    started = time.monotonic()
    with psycopg.connect(url) as conn:
        for table in ("par", "kid"):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("online_test", f"{table}_before")))
            conn.execute(sql.SQL("CREATE TABLE {} AS SELECT * FROM {}").format(
                sql.Identifier("online_test", f"{table}_before"), sql.Identifier("public", table)))
    before = dump(url)
    steps = len(online.KINDS[scenario.kind].abort_steps(_design(url, scenario)))
    for number, point in enumerate(points):
        outcome = drivers.run(url, "start", table=scenario.table, kind=scenario.kind, options=scenario.options,
                              settings=SETTINGS, kill_at=point)
        if not outcome.killed:
            run.problems.append(f"not killed at {point}: rc {outcome.returncode}: {outcome.output[-1500:]}")
            break
        if number == len(points) - 1 and steps:
            outcome = drivers.run(url, "abort", table=scenario.table, kill_at="abort:step:1")
            if not outcome.killed:
                run.problems.append(f"the abort was not killed at abort:step:1: {outcome.output[-1500:]}")
                break
        try:
            result = online.abort(scenario.table, database_url=url)
        except Exception as exc:
            run.problems.append(f"abort after a kill at {point}: {exc}")
            break
        found = [f"status {result.status}"] if result.status != "aborted" else []
        if dump(url) != before:
            found.append("the schema differs")
        for table in ("par", "kid"):
            try:
                if (diff := view_differences(url, _same_columns(url, table))) != (0, 0):
                    found.append(f"{table}'s rows differ {diff}")
            except psycopg.Error as exc:
                found.append(f"{table}'s rows cannot be compared: {str(exc).splitlines()[0]}")
        if left := leftovers(url):
            found.append(f"left behind: {left}")
        if unfinished := online.status(database_url=url):
            found.append(f"online.status(): {[s.message for s in unfinished]}")
        run.outcomes.append("aborted" if not found else "PROBLEM")
        if found:
            run.problems.append(f"abort after a kill at {point}: " + "; ".join(found))
            break
    run.seconds = time.monotonic() - started
    return run


def _same_columns(url: str, table: str) -> View:
    """The table's rows and those of its copy from before, column by column (as the copy has them)."""
    with psycopg.connect(url) as conn:
        columns = sql.SQL(", ").join(sql.Identifier(str(r[0])) for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum", (f"online_test.{table}_before",)))
        return (sql.SQL("SELECT {} FROM {}").format(columns, sql.Identifier("public", table)).as_string(conn),
                sql.SQL("SELECT {} FROM {}").format(
                    columns, sql.Identifier("online_test", f"{table}_before")).as_string(conn))


def _design(url: str, scenario: Scenario) -> dict[str, Any]:
    from agentdb import online

    return online.plan(scenario.table, scenario.kind, database_url=url, **scenario.options).design
