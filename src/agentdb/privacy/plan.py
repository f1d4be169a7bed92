"""The erasure plan: which relations hold a person's rows, and the statements that erase them, in order.

Describe, then execute: :func:`build_plan` reads the catalogue once (the
live tables, the partitions detached from them, the rollback archive) and
turns :func:`agentdb.privacy.rules.table_rules` into :class:`Step` objects;
:mod:`agentdb.privacy.erase` counts them (dry run) or runs them.  The plan
does not depend on the person, so a queue of requests builds it once.

Relations:

* *live* tables in ``public`` (a partitioned ``analytics`` is one relation:
  a statement on the parent reaches every partition through its partitioned
  index);
* *copies*: partitions detached from a declared table and left in ``public``
  (``<table>_pYYYYMM``, ``<table>_default``), and every unrestored table of the
  rollback archive (``agentdb_archive``, listed in ``agentdb.archived_tables``,
  a partition under its own name, mapped back to its parent's declaration).
  Copies have no foreign keys to act for us, so every change there is an
  explicit statement; an archive copy made by ``CREATE TABLE ... AS`` has no
  index either, and erasure gives it one on the column it looks people up by
  (a ``SHARE`` lock on the archive copy, which nobody writes).

Order of the steps, in one transaction: the person's identifying values are
read (for the proof); kept rows lose their link and have their ``NULLIFY`` and
``PSEUDONYMIZE`` columns cleared (where a live table has nothing to clear but
the link, its own ``ON DELETE SET NULL`` does it when the parent row goes, and
the rows are counted first); the person's rows are deleted children first
(foreign-key-safe: a parent's ``ON DELETE`` finds nothing left to cascade to);
last, the audit rows about the person -- including those the deletes just
wrote -- have their row images pseudonymised.  Every statement finds rows by
an indexed column: the user id, a foreign key, a primary key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from psycopg import sql

from agentdb.privacy._sql import columns_of, execute, indexed_columns, one, relation_oid
from agentdb.privacy.rules import AUDIT_TABLE, Link, TableRule, audit_keep_keys, table_rules
from agentdb.runtime.archive import ARCHIVE_SCHEMA
from agentdb.schema import metadata
from agentdb.schema.analytics import AUDITED_TABLES
from agentdb.schema.entities import GUARDED_TABLES

__all__ = ["PSEUDONYM_PREFIX", "ErasurePlan", "Relation", "Step", "build_plan"]

#: Every pseudonym erasure writes starts with this, so a reader (and the proof's value capture) can tell it.
PSEUDONYM_PREFIX = "erased:"
_PARTITION = re.compile(r"^(?P<parent>.+)_(?:p\d{6}|default)$")


@dataclass(frozen=True)
class Relation:
    """A table that holds rows of a declared table: the live one, or a copy (detached partition, archive)."""

    schema: str
    name: str
    #: The declared table whose rows (and rules) it has.
    table: str
    oid: int
    #: ``live`` for ``public``; the archiving run for an archive copy (children are matched to parents in it).
    generation: str
    copy: bool
    columns: dict[str, str] = field(hash=False, compare=False)
    indexed: frozenset[str] = frozenset()
    archived_at: datetime | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def has(self, *columns: str) -> bool:
        return all(c in self.columns for c in columns)


@dataclass(frozen=True)
class Step:
    """One statement of the erasure, on one relation.

    ``action``: ``delete`` (the person's rows), ``nullify`` (kept rows: the
    link and the ``NULLIFY``/``PSEUDONYMIZE`` columns, explicitly),
    ``nullify-by-fk`` (kept rows of a live table whose foreign key's ``ON DELETE
    SET NULL`` clears the link when the parent row is deleted: counted, not
    run) or ``pseudonymise-audit`` (the row images of the person's audit rows).
    """

    relation: Relation
    action: str
    link: Link | None = None
    #: Where the parent ids of :attr:`link` come from (empty: the parent is ``users``, the id is the person's).
    parents: tuple[Relation, ...] = ()
    #: column -> ``null`` or ``pseudonym`` (kept rows).
    assign: tuple[tuple[str, str], ...] = ()
    #: Owner links whose rows are deleted anyway: not counted as nullified.
    exclude: tuple[tuple[Link, tuple[Relation, ...]], ...] = ()

    @property
    def verb(self) -> str:
        return {"delete": "deleted", "nullify": "nullified", "nullify-by-fk": "nullified",
                "pseudonymise-audit": "pseudonymised"}[self.action]


@dataclass(frozen=True)
class Collect:
    """Reading the ids of a relation's rows that go with the person (needed by its children's steps)."""

    relation: Relation
    links: tuple[tuple[Link, tuple[Relation, ...]], ...]


@dataclass
class ErasurePlan:
    """Everything erasure does, for any person, on this database as it is now."""

    relations: list[Relation]
    collects: list[Collect]
    steps: list[Step]
    #: Archive tables whose table is not declared (an old schema): not erased by declaration, still proof-scanned.
    unmapped: list[str] = field(default_factory=list)
    #: (relation, column): archive copies that get an index on the column people are looked up by.
    needs_index: list[tuple[Relation, str]] = field(default_factory=list)

    # ------------------------------------------------------------------------------------------ statements

    def predicate(self, link: Link, parents: tuple[Relation, ...], alias: str | None = None) -> sql.Composable:
        """``column = %(user)s`` or ``column = ANY(%(ids:...)s)``: the rows a link ties to the person."""
        column = sql.Identifier(alias, link.column) if alias else sql.Identifier(link.column)
        if link.parent == "users":
            return sql.SQL("{} = %(user)s").format(column)
        return sql.SQL("{} = ANY({})").format(column, sql.Placeholder(_ids_key(parents)))

    def row_filter(self, step: Step) -> sql.Composable:
        """The WHERE clause of a step."""
        assert step.link is not None
        where = self.predicate(step.link, step.parents)
        for link, parents in step.exclude:
            if step.relation.has(link.column):
                where = sql.SQL("{} AND NOT coalesce({}, false)").format(where, self.predicate(link, parents))
        return where

    def count_statement(self, step: Step) -> sql.Composable:
        if step.action == "pseudonymise-audit":
            return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(step.relation.ident, _audit_filter(step))
        return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(step.relation.ident, self.row_filter(step))

    def apply_statement(self, step: Step) -> sql.Composable | None:
        """The statement that does the step (None for ``nullify-by-fk``: the foreign key does it)."""
        if step.action == "delete":
            return sql.SQL("DELETE FROM {} WHERE {}").format(step.relation.ident, self.row_filter(step))
        if step.action == "nullify":
            assert step.link is not None
            sets = [sql.SQL("{} = NULL").format(sql.Identifier(step.link.column))]
            sets += [sql.SQL("{} = {}").format(sql.Identifier(c), _value(step.relation, c, how))
                     for c, how in step.assign]
            return sql.SQL("UPDATE {} SET {} WHERE {}").format(
                step.relation.ident, sql.SQL(", ").join(sets), self.row_filter(step))
        if step.action == "pseudonymise-audit":
            return sql.SQL("UPDATE {} SET old_values = {}, new_values = {}, actor = {} WHERE {}").format(
                step.relation.ident, _scrubbed("old_values"), _scrubbed("new_values"), _actor(), _audit_filter(step))
        return None

    def collect_statement(self, collect: Collect) -> sql.Composable:
        where = sql.SQL(" OR ").join(self.predicate(link, parents) for link, parents in collect.links)
        return sql.SQL("SELECT id FROM {} WHERE {}").format(collect.relation.ident, where)

    def person_filter(self, relation: Relation, rule: TableRule) -> sql.Composable | None:
        """The rows of ``relation`` that are the person's (for the proof's values and the export)."""
        if relation.table == "users":
            return sql.SQL("id = %(user)s")
        parts = [self.predicate(link, self.parents_of(relation, link)) for link in (*rule.owner_links,
                 *rule.kept_links) if relation.has(link.column)]
        return sql.SQL(" OR ").join(parts) if parts else None

    # ------------------------------------------------------------------------------------------ parents

    def parents_of(self, relation: Relation, link: Link) -> tuple[Relation, ...]:
        """Where ``relation``'s parent rows are: same generation, else the next archive of the parent, else live."""
        if link.parent == "users":
            return ()
        candidates = [r for r in self.relations if r.table == link.parent]
        if not relation.copy or relation.generation == "live":
            return tuple(r for r in candidates if r.generation == "live")
        same = [r for r in candidates if r.generation == relation.generation]
        if same:
            return tuple(same)
        later = sorted((r for r in candidates if r.copy and r.generation != "live" and r.archived_at
                        and relation.archived_at and r.archived_at > relation.archived_at),
                       key=lambda r: r.archived_at or datetime.min)
        if later:
            return tuple(r for r in later if r.generation == later[0].generation)
        return tuple(r for r in candidates if r.generation == "live")

    def ids_params(self, doomed: dict[str, set[int]]) -> dict[str, Any]:
        """The ``ids:...`` parameters of every step, from the ids collected per relation."""
        params: dict[str, Any] = {}
        for step in self.steps:
            groups = [step.parents] + [parents for _, parents in step.exclude]
            for parents in groups:
                if parents:
                    params[_ids_key(parents)] = sorted(set().union(*(doomed.get(p.qualified, set())
                                                                     for p in parents)))
        for collect in self.collects:
            for _, parents in collect.links:
                if parents:
                    params[_ids_key(parents)] = sorted(set().union(*(doomed.get(p.qualified, set())
                                                                     for p in parents)))
        return params


def _ids_key(parents: tuple[Relation, ...]) -> str:
    return "ids:" + ",".join(sorted(p.qualified for p in parents))


def _value(relation: Relation, column: str, how: str) -> sql.Composable:
    """NULL, or the pseudonym in the column's type; a NULL stays NULL (a CHECK may tie it to another column)."""
    if how == "null":
        return sql.SQL("NULL")
    kind = relation.columns.get(column, "text")
    if kind in {"json", "jsonb"}:
        value = sql.SQL("to_jsonb(%(pseudonym)s::text)")
    elif kind == "uuid":
        value = sql.SQL("%(pseudonym_uuid)s::uuid")
    else:
        value = sql.SQL("%(pseudonym)s")
    return sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE {} END").format(sql.Identifier(column), value)


def _keep_keys() -> sql.Composable:
    """``CASE entity_type WHEN 'user' THEN ARRAY[...] ...``: the row-image keys erasure keeps, per entity type."""
    cases = [sql.SQL("WHEN {} THEN {}::text[]").format(sql.Literal(entity), sql.Literal(list(keys)))
             for entity, keys in sorted(audit_keep_keys().items())]
    return sql.SQL("CASE entity_type {} ELSE '{{}}'::text[] END").format(sql.SQL(" ").join(cases))


def _scrubbed(column: str) -> sql.Composable:
    """The row image with every value but the kept keys (and JSON nulls) replaced by the pseudonym."""
    image = sql.Identifier(column)
    return sql.SQL(
        "CASE WHEN {image} IS NULL THEN NULL ELSE coalesce((SELECT jsonb_object_agg(e.key, CASE WHEN "
        "e.value = 'null'::jsonb OR e.key = ANY({keep}) THEN e.value ELSE to_jsonb(%(pseudonym)s::text) END) "
        "FROM jsonb_each({image}) e), '{{}}'::jsonb) END"
    ).format(image=image, keep=_keep_keys())


def _actor() -> sql.Composable:
    """The actor, replaced by the pseudonym when it is one of the person's identifying values.

    Compared as keyed hashes (the key is read on the server), so the values never leave this process.
    """
    return sql.SQL(
        "CASE WHEN encode(sha256((SELECT pseudonym_key FROM agentdb.privacy_settings) || "
        "convert_to(lower(actor), 'UTF8')), 'hex') = ANY(%(actor_hashes)s::text[]) "
        "THEN %(pseudonym)s ELSE actor END"
    )


def _audit_filter(step: Step) -> sql.Composable:
    subject = sql.Identifier(GUARDED_TABLES[AUDIT_TABLE])
    return sql.SQL(
        "{subject} = %(user)s AND ({old} IS DISTINCT FROM old_values OR {new} IS DISTINCT FROM new_values "
        "OR {actor} IS DISTINCT FROM actor)"
    ).format(subject=subject, old=_scrubbed("old_values"), new=_scrubbed("new_values"), actor=_actor())


# ------------------------------------------------------------------------------------------------ discovery


def _declared(name: str, rules: dict[str, TableRule]) -> str | None:
    if name in rules:
        return name
    match = _PARTITION.match(name)
    return match.group("parent") if match and match.group("parent") in rules else None


def _relation(connection: sa.Connection, schema: str, name: str, table: str, oid: int, generation: str,
              copy: bool, archived_at: datetime | None = None) -> Relation:
    return Relation(schema, name, table, oid, generation, copy, columns_of(connection, oid),
                    indexed_columns(connection, oid), archived_at)


def discover(connection: sa.Connection) -> tuple[list[Relation], list[str]]:
    """Every relation holding rows of a table erasure touches, and the archive tables it cannot map."""
    rules = table_rules()
    relations: list[Relation] = []
    for table in sorted(rules):
        oid = relation_oid(connection, "public", table)
        if oid is not None:
            relations.append(_relation(connection, "public", table, table, oid, "live", copy=False))
    # Partitions detached and left in public: rows of their parent nobody reaches through it any more.
    for name, oid in execute(connection, "SELECT c.relname, c.oid::int8 FROM pg_class c JOIN pg_namespace n "
                             "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' "
                             "AND NOT c.relispartition ORDER BY 1"):
        parent = _declared(str(name), rules)
        if parent is not None and parent != name:
            relations.append(_relation(connection, "public", str(name), parent, int(oid), "live", copy=True))
    unmapped: list[str] = []
    if one(connection, "SELECT to_regclass('agentdb.archived_tables') IS NOT NULL"):
        for entry, table_name, archive, run_id, archived_at in execute(
            connection, "SELECT id, table_name, archive_table, run_id::text, archived_at FROM agentdb.archived_tables "
            "WHERE restored_at IS NULL ORDER BY id"
        ):
            oid = relation_oid(connection, ARCHIVE_SCHEMA, str(archive))
            if oid is None:
                continue
            declared = _declared(str(table_name), rules)
            if declared is None:
                if str(table_name) in metadata.tables:
                    continue  # a declared table erasure never touches (the catalogue)
                unmapped.append(f"{ARCHIVE_SCHEMA}.{archive}")
                continue
            relations.append(_relation(connection, ARCHIVE_SCHEMA, str(archive), declared, oid,
                                       str(run_id or f"entry-{entry}"), copy=True, archived_at=archived_at))
    return relations, unmapped


def _children_first(tables: Iterable[str]) -> list[str]:
    """Declared tables ordered so that every table comes before those it references."""
    remaining = sorted(tables)
    parents = {name: {fk.column.table.name for fk in metadata.tables[name].foreign_keys} & set(remaining) - {name}
               for name in remaining}
    ordered: list[str] = []
    while remaining:
        # A table no remaining table references: nothing points at its rows any more.
        ready = [t for t in remaining if not any(t in parents[o] for o in remaining if o != t)] or remaining[:1]
        ordered.append(ready[0])
        remaining.remove(ready[0])
    return ordered


def build_plan(connection: sa.Connection) -> ErasurePlan:
    """The plan for this database as it is now (read-only: it only reads the catalogue)."""
    rules = table_rules()
    relations, unmapped = discover(connection)
    plan = ErasurePlan(relations, [], [], unmapped)
    by_table: dict[str, list[Relation]] = {}
    for relation in relations:
        by_table.setdefault(relation.table, []).append(relation)

    order = _children_first(by_table)
    # Collect ids parents first (the reverse), for the tables other tables' owner links point at.
    pointed_at = {link.parent for rule in rules.values() for link in (*rule.owner_links, *rule.kept_links)}
    for table in reversed(order):
        rule = rules[table]
        if table == "users" or table not in pointed_at or not rule.owner_links:
            continue
        for relation in by_table[table]:
            links = tuple((link, plan.parents_of(relation, link)) for link in rule.owner_links
                          if relation.has(link.column))
            if links and relation.has("id"):
                plan.collects.append(Collect(relation, links))

    # Kept rows first: their links still point at the rows about to be deleted.
    for table in order:
        rule = rules[table]
        for relation in by_table[table]:
            exclude = tuple((link, plan.parents_of(relation, link)) for link in rule.owner_links
                            if relation.has(link.column))
            assign = tuple((c, "null") for c in rule.nullify if relation.has(c)) + tuple(
                (c, "pseudonym") for c in rule.pseudonymize if relation.has(c))
            for link in rule.kept_links:
                if not relation.has(link.column):
                    continue
                action = "nullify" if relation.copy or assign else "nullify-by-fk"
                plan.steps.append(Step(relation, action, link, plan.parents_of(relation, link), assign, exclude))
                _index(plan, relation, link.column)
    for table in order:  # children first
        rule = rules[table]
        owners = rule.owner_links if table != "users" else (Link("id", "users", "CASCADE"),)
        for relation in sorted(by_table[table], key=lambda r: r.copy):
            for link in owners:
                if relation.has(link.column):
                    plan.steps.append(Step(relation, "delete", link, plan.parents_of(relation, link)))
                    _index(plan, relation, link.column)
    subject = GUARDED_TABLES[AUDIT_TABLE]
    for relation in by_table.get(AUDIT_TABLE, []):
        if relation.has(subject, "old_values", "new_values", "actor", "entity_type"):
            plan.steps.append(Step(relation, "pseudonymise-audit"))
            _index(plan, relation, subject)
    return plan


def _index(plan: ErasurePlan, relation: Relation, column: str) -> None:
    if relation.copy and column not in relation.indexed and (relation, column) not in plan.needs_index:
        plan.needs_index.append((relation, column))


def audited_identity() -> dict[str, tuple[str, ...]]:
    """entity type -> the identifying columns of its audited table (the keys the proof reads from row images)."""
    rules = table_rules()
    found: dict[str, tuple[str, ...]] = {}
    for audited in AUDITED_TABLES:
        rule = rules.get(audited.table)
        columns = tuple(c for c in (rule.identity if rule else ()) if c not in audited.excluded)
        if columns:
            found[audited.entity_type] = columns
    return found
