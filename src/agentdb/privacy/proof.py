"""The proof: the person's identifying values, held in memory only, searched for in every column of every table.

Before erasing, :func:`capture` reads the values of the person's identifying
columns (the registry's contact, identifier and credential categories: e-mail,
display name, Spotify ids, API key prefixes and hashes) from their live rows,
from the archive and from the row images of their audit rows.  They stay in
this process: never written to the ledger, a log, an error or the output, and
never sent back to the server (the audit actor is compared as a keyed hash).

After the erasure has committed, :func:`scan` reads every column that can hold
text (strings, JSON, arrays, composites, enums, ``bytea`` as escaped text) of
every table and materialised view in every schema -- ``public``, the rollback
archive, agentdb's own -- with ``COPY ... TO STDOUT``, and looks for each value
case-insensitively, as it is and as JSON, array and COPY output escape it.  A
cell that holds a value is a *hit*; the ledger gets the number and where
(``schema.table.column``), never the value.

What counts, reported rather than hidden:

* a value shorter than :data:`MIN_LENGTH` characters is not searched (it would
  be found everywhere): :attr:`ProofReport.skipped`;
* a value only the person can hold (a unique column: e-mail, external ids, key
  prefixes) is a *hit* wherever it is found;
* a value others can hold too (a display name) is a hit, unless it is another
  person's own: when another user holds the same name (checked when the value
  is captured), or when the row it is found in bears it in a column the
  registry declares not personal (an artist called like the person: its
  ``name``, the ``bio`` that repeats it, that artist's audited row image).
  Those are :attr:`ProofReport.shared_hits`: a namesake is not a trace.
  Anywhere else -- free text, a personal column -- a name is a hit: a human
  decides.

.. warning::
   The scan reads the whole database.  Each table is read in its own short
   transaction (``ACCESS SHARE``: it waits only for DDL, under ``lock_timeout``,
   and never holds a lock while other tables are read), so a migration is not
   queued behind the whole scan.  Its cost is that of reading every text column
   once; a queue of requests shares one scan (:func:`agentdb.privacy.erase_users`).
"""

from __future__ import annotations

import codecs
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ahocorasick_rs
import psycopg
import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import LockTimeout
from agentdb.privacy._sql import _cursor, execute
from agentdb.privacy.plan import _PARTITION, PSEUDONYM_PREFIX, ErasurePlan, audited_identity
from agentdb.privacy.rules import AUDIT_TABLE, declaration, table_rules
from agentdb.runtime.locks import RetryPolicy, retry_on_lock_timeout
from agentdb.schema import metadata
from agentdb.schema.entities import GUARDED_TABLES

__all__ = ["MIN_LENGTH", "ProofReport", "ProofValue", "capture", "scan"]

#: Values shorter than this are not searched: they would match everywhere.
MIN_LENGTH = 4
#: Text read per search step (the COPY stream is cut at line ends).
_CHUNK = 4 * 1024 * 1024
#: Up to this many strings, plain ``str`` search; above, an Aho-Corasick automaton.
_FEW = 32
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
#: Type categories that can hold text (string, user-defined incl. JSON, array, composite, enum, unknown).
_TEXT_CATEGORIES = ("S", "U", "A", "C", "E", "X")
#: Types of those categories that cannot: their text form is digits, hex or fixed words.
_NEVER_TEXT = ("uuid", "pg_lsn", "txid_snapshot", "pg_snapshot", "tsquery", "aclitem", "regclass", "regtype")


@dataclass(frozen=True)
class ProofValue:
    """One identifying value of a person.  Its ``repr`` never shows the value."""

    value: str = field(repr=False)
    #: ``table.column`` it was read from (no value).
    source: str
    #: Another person holds the same value (a shared display name): its hits are not the person's traces.
    shared: bool = False
    #: Only the person can hold it (a unique column): every place it is found is a hit.
    unique: bool = True


@dataclass
class ProofReport:
    """What the scan found for one request: counts and places, never a value."""

    values: int = 0
    shared_values: int = 0
    skipped: int = 0
    hits: int = 0
    shared_hits: int = 0
    #: ``schema.table.column`` -> cells holding one of the person's (unshared) values.
    locations: dict[str, int] = field(default_factory=dict)
    relations: int = 0
    columns: int = 0
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    #: Relations that could not be read (``schema.table: reason``): the proof is incomplete.
    unscanned: list[str] = field(default_factory=list)

    @property
    def proven(self) -> bool:
        return self.hits == 0 and not self.unscanned

    def as_dict(self) -> dict[str, Any]:
        return {"values": self.values, "shared_values": self.shared_values, "skipped_short": self.skipped,
                "hits": self.hits, "shared_hits": self.shared_hits, "locations": dict(self.locations),
                "relations": self.relations, "columns": self.columns, "rows": self.rows, "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "unscanned": list(self.unscanned), "proven": self.proven}


# ------------------------------------------------------------------------------------------------- capture


def _shared(plan: ErasurePlan, table: str, column: str, value: sql.Composable) -> sql.Composable:
    """``EXISTS`` a row of the live ``table`` not about the person whose ``column`` equals ``value``."""
    rule = table_rules()[table]
    live = [r for r in plan.relations if r.table == table and not r.copy]
    if not live or column in rule.unique_identity:
        return sql.SQL("false")
    mine = plan.person_filter(live[0], rule)
    return sql.SQL("EXISTS (SELECT FROM {} o WHERE o.{} = {} AND NOT coalesce({}, false))").format(
        live[0].ident, sql.Identifier(column), value, mine if mine is not None else sql.SQL("false"))


def capture(connection: sa.Connection, plan: ErasurePlan, params: Mapping[str, Any]) -> list[ProofValue]:
    """The person's identifying values, from their rows, the archive and their audit rows' images (in memory)."""
    rules = table_rules()
    found: dict[tuple[str, bool], ProofValue] = {}

    def keep(value: Any, table: str, column: str, shared: Any) -> None:
        if isinstance(value, str) and value.strip() and not value.startswith(PSEUDONYM_PREFIX):
            unique = column in rules[table].unique_identity
            found.setdefault((value, bool(shared)), ProofValue(value, f"{table}.{column}", bool(shared), unique))

    for relation in plan.relations:
        rule = rules[relation.table]
        identity = [c for c in rule.identity if relation.has(c)]
        where = plan.person_filter(relation, rule)
        if not identity or where is None:
            continue
        picks = [sql.SQL("r.{}, {}").format(sql.Identifier(c), _shared(plan, relation.table, c, sql.SQL("r.{}").format(
            sql.Identifier(c)))) for c in identity]
        for row in execute(connection, sql.SQL("SELECT {} FROM {} r WHERE {}").format(
                sql.SQL(", ").join(picks), relation.ident, where), params):
            for index, column in enumerate(identity):
                keep(row[2 * index], relation.table, column, row[2 * index + 1])
    subject = sql.Identifier(GUARDED_TABLES[AUDIT_TABLE])
    audited = {a.entity_type: a.table for a in _audited()}
    for relation in (r for r in plan.relations if r.table == AUDIT_TABLE):
        if not relation.has(GUARDED_TABLES[AUDIT_TABLE], "old_values", "new_values", "entity_type"):
            continue
        for entity, columns in audited_identity().items():
            for column in columns:
                shared = _shared(plan, audited[entity], column, sql.SQL("x.v"))
                for value, is_shared in execute(connection, sql.SQL(
                    "SELECT x.v, {} FROM {} a CROSS JOIN LATERAL (VALUES (a.old_values ->> {}), "
                    "(a.new_values ->> {})) x(v) WHERE a.{} = %(user)s AND a.entity_type = {} AND x.v IS NOT NULL"
                ).format(shared, relation.ident, sql.Literal(column), sql.Literal(column), subject,
                         sql.Literal(entity)), params):
                    keep(value, audited[entity], column, is_shared)
    return list(found.values())


def _audited() -> Iterable[Any]:
    from agentdb.schema.analytics import AUDITED_TABLES

    return AUDITED_TABLES


# ---------------------------------------------------------------------------------------------------- scan


def _forms(value: str) -> set[str]:
    """The value as a cell's COPY text can show it: plain, JSON-escaped, array-escaped; lower-cased."""
    shown = {value, json.dumps(value, ensure_ascii=False)[1:-1], json.dumps(value)[1:-1],
             value.replace("\\", "\\\\").replace('"', '\\"')}
    copied = {s.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") for s in shown}
    return {form.lower() for form in copied}


#: What a value found in a cell means for its request: ``hit``, ``shared`` (another person's own value) or
#: ``name`` (a hit, unless its row bears it in a column declared not personal: a namesake, see _Namesakes).
Owner = tuple[int, str]


class _Matcher:
    """Finds which of many lower-cased strings occur in a text, and whose they are.

    A few strings (one person) are looked for one by one with ``str`` search,
    which is fastest for them; many (a queue) with one Aho-Corasick automaton,
    whose cost does not grow with their number.
    """

    def __init__(self, owners: Mapping[str, set[Owner]]) -> None:
        self.owners = owners
        self.forms = sorted(owners, key=len, reverse=True)
        self.automaton = ahocorasick_rs.AhoCorasick(self.forms) if len(self.forms) > _FEW else None

    def any_in(self, text: str) -> bool:
        if self.automaton is not None:
            return bool(self.automaton.find_matches_as_indexes(text))
        return any(form in text for form in self.forms)

    def owners_in(self, cell: str) -> set[Owner]:
        if self.automaton is not None:
            forms = {self.forms[i] for i, _, _ in self.automaton.find_matches_as_indexes(cell, overlapping=True)}
        else:
            forms = {form for form in self.forms if form in cell}
        found: set[Owner] = set()
        for form in forms:
            found |= self.owners[form]
        return found


def _relations(connection: sa.Connection) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Every table and materialised view outside the system schemas, with its text-capable columns."""
    rows = execute(connection, sql.SQL(
        "SELECT n.nspname, c.relname, a.attname, t.typname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE c.relkind IN ('r', 'm') AND n.nspname <> ALL(%(system)s) AND n.nspname !~ '^pg_(toast|temp)' "
        "AND (t.typcategory = ANY(%(categories)s) OR t.typname = 'bytea') AND t.typname <> ALL(%(never)s) "
        "ORDER BY n.nspname, c.relname, a.attnum"
    ), {"system": list(_SYSTEM_SCHEMAS), "categories": list(_TEXT_CATEGORIES), "never": list(_NEVER_TEXT)})
    grouped: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for schema, table, column, typname in rows:
        grouped.setdefault((str(schema), str(table)), []).append((str(column), str(typname)))
    return [(schema, table, columns) for (schema, table), columns in grouped.items()]


@dataclass
class _Read:
    """What reading one relation found: cells per (``schema.table.column``, request, shared?), rows, bytes."""

    hits: Counter[tuple[str, int, bool]] = field(default_factory=Counter)
    rows: int = 0
    size: int = 0


def _declared_table(schema: str, table: str) -> str | None:
    """The declared table a relation of ``public`` holds rows of (itself, or the parent of a partition)."""
    if schema != "public":
        return None
    if table in metadata.tables:
        return table
    match = _PARTITION.match(table)
    return match.group("parent") if match and match.group("parent") in metadata.tables else None


def _not_personal(table: str | None, column: str) -> bool:
    found = declaration(table, column) if table else None
    return found is not None and not found.pii.personal


def _uncopy(cell: str) -> str:
    """A cell as COPY's text format escapes it, unescaped (enough for JSON: backslash sequences)."""
    return cell.replace("\\\\", "\x00").replace("\\t", "\t").replace("\\n", "\n").replace(
        "\\r", "\r").replace("\x00", "\\")


class _Namesakes:
    """Whether a name found in a cell belongs to a namesake: a row that bears it in a column declared not personal.

    ``artists.name`` is the artist's public name: a person called the same is
    not in that row, nor in its ``bio`` that repeats the name, nor in the audit
    row image of that artist.  A row that holds the name only in personal
    columns or free text gives no such explanation: the name is a hit there.
    """

    def __init__(self, schema: str, table: str, columns: list[tuple[str, str]]) -> None:
        self.table = _declared_table(schema, table)
        self.columns = [c for c, _ in columns]
        self.public_columns = {i for i, c in enumerate(self.columns) if _not_personal(self.table, c)}
        self.audited = {a.entity_type: a.table for a in _audited()}

    def explained(self, index: int, cell: str, cells: list[str], names: set[str]) -> bool:
        if any(any(n in cells[i] for n in names) for i in self.public_columns if i < len(cells)):
            return True  # the row bears the name in a public column: it is the namesake's row
        column = self.columns[index]
        if self.table != AUDIT_TABLE or column not in {"old_values", "new_values"} or "entity_type" not in self.columns:
            return False
        entity = self.audited.get(cells[self.columns.index("entity_type")])
        try:
            image = json.loads(_uncopy(cell))
        except ValueError:
            return False
        return isinstance(image, dict) and any(
            isinstance(v, str) and any(n in v for n in names) and _not_personal(entity, k) for k, v in image.items())


def _copy(connection: sa.Connection, schema: str, table: str, columns: list[tuple[str, str]],
          matcher: _Matcher, names: Mapping[int, set[str]]) -> _Read:
    """Read one relation's text columns with COPY and count the cells holding each request's values.

    A cell counts as a hit of a request when it holds one of its ``hit`` values,
    or one of its ``name`` values outside a column declared not personal; as a
    shared hit when it holds only values of the request that are somebody else's.
    """
    exprs = [sql.SQL("encode({}, 'escape')").format(sql.Identifier(c)) if kind == "bytea"
             else sql.SQL("{}::text").format(sql.Identifier(c)) for c, kind in columns]
    statement = sql.SQL("COPY (SELECT {} FROM ONLY {}) TO STDOUT").format(
        sql.SQL(", ").join(exprs), sql.Identifier(schema, table))
    read = _Read()
    namesakes = _Namesakes(schema, table, columns)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""

    def search(text: str) -> None:
        read.rows += text.count("\n")
        if not matcher.any_in(text):
            return
        for line in text.split("\n"):
            if not line or not matcher.any_in(line):
                continue
            cells = line.split("\t")
            for index, cell in enumerate(cells):
                owners = matcher.owners_in(cell)
                for request in {r for r, _ in owners}:
                    kinds = {kind for r, kind in owners if r == request}
                    hit = "hit" in kinds or ("name" in kinds and not namesakes.explained(
                        index, cell, cells, names.get(request, set())))
                    read.hits[(f"{schema}.{table}.{columns[index][0]}", request, not hit)] += 1

    cursor = _cursor(connection)
    try:
        with cursor.copy(statement) as copy:
            for block in copy:
                data = bytes(block)
                read.size += len(data)
                pending += decoder.decode(data)
                if len(pending) >= _CHUNK:
                    cut = pending.rfind("\n") + 1
                    text, pending = pending[:cut], pending[cut:]
                    search(text.lower())
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance("COPY", None, exc, psycopg.Error) from exc
    finally:
        cursor.close()
    search((pending + decoder.decode(b"", final=True)).lower())
    return read


def scan(connection: sa.Connection, values: Mapping[int, list[ProofValue]], *,
         policy: RetryPolicy | None = None, lock_timeout: float = 5.0) -> dict[int, ProofReport]:
    """Search the whole database for the values of each request; one :class:`ProofReport` per request.

    Commits what the caller's transaction holds, then reads each relation in
    its own transaction.  A relation that cannot be read (no privilege, a lock
    held too long) is listed in ``unscanned`` of every report: not proven.
    """
    started = time.monotonic()
    owners: dict[str, set[Owner]] = {}
    names: dict[int, set[str]] = {}
    reports = {request: ProofReport() for request in values}
    for request, found in values.items():
        report = reports[request]
        unshared = {v.value for v in found if not v.shared}
        for value in found:
            if len(value.value.strip()) < MIN_LENGTH:
                report.skipped += 1
                continue
            shared = value.shared and value.value not in unshared
            kind = "shared" if shared else "hit" if value.unique else "name"
            report.values += 1
            report.shared_values += shared
            if kind == "name":
                names.setdefault(request, set()).add(value.value.lower())
            for form in _forms(value.value):
                owners.setdefault(form, set()).add((request, kind))
    if connection.in_transaction():
        connection.commit()
    hits: Counter[tuple[str, int, bool]] = Counter()
    unscanned: list[str] = []
    relations = columns = rows = size = 0
    if owners:
        matcher = _Matcher(owners)
        execute(connection, sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout * 1000)}ms")))
        connection.commit()
        try:
            for schema, table, text_columns in _relations(connection):
                connection.commit()
                def attempt(s: str = schema, t: str = table, c: list[tuple[str, str]] = text_columns) -> _Read:
                    return _copy(connection, s, t, c, matcher, names)

                try:
                    read = retry_on_lock_timeout(attempt, connection, policy or RetryPolicy(attempts=3),
                                                 what=f"proof scan of {schema}.{table}")
                except LockTimeout:
                    unscanned.append(f"{schema}.{table}: lock_timeout")
                    continue
                except sa.exc.DBAPIError as exc:
                    reason = getattr(getattr(exc.orig, "diag", None), "message_primary", None) or "cannot be read"
                    unscanned.append(f"{schema}.{table}: {reason}")
                    continue
                finally:
                    if connection.in_transaction():
                        connection.rollback()
                hits.update(read.hits)
                relations += 1
                columns += len(text_columns)
                rows += read.rows
                size += read.size
        finally:
            execute(connection, "RESET lock_timeout")
            connection.commit()
    elapsed = time.monotonic() - started
    for request, report in reports.items():
        report.relations, report.columns, report.rows, report.bytes = relations, columns, rows, size
        report.seconds = elapsed
        report.unscanned = list(unscanned)
        for (where, owner, shared), count in sorted(hits.items()):
            if owner != request:
                continue
            if shared:
                report.shared_hits += count
            else:
                report.hits += count
                report.locations[where] = report.locations.get(where, 0) + count
    return reports
