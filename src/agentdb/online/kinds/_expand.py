"""Expand/contract: change a live table's columns while old and new application versions both run.

The kinds built on this (``add_column``, ``rename_column``, ``split_column``,
``merge_columns``) change the table in place -- no copy, no swap, no view and
no ``search_path`` for the application to switch:

``expand``
    the new columns are added (a catalogue change; a constant default is a
    "fast default", no rewrite), and a ``BEFORE INSERT OR UPDATE`` trigger
    keeps old and new columns in step in the writer's own transaction: a
    write by the old version (it sets the old columns) computes the new ones
    (the *forward* expressions), a write by the new version (it sets only the
    new columns) computes the old ones (the *backward* expressions);
``backfill``
    rows that existed before get the new columns in key-ordered batches
    (:mod:`agentdb.online.backfill`), each its own transaction committed with
    the checkpoint;
``constraints``
    a new column that must be NOT NULL gets a ``CHECK (col IS NOT NULL) NOT
    VALID``, ``VALIDATE`` (no blocking lock), ``SET NOT NULL`` (which uses the
    validated check instead of scanning) and the check is dropped;
``verify``
    no row is left whose new columns are missing although the forward
    expressions give them a value;
``complete``
    the contraction, run by ``agentdb online complete`` (or at once when the
    run does not stop expanded): the trigger goes, and the old columns go (or
    a rename puts the old column, with its indexes and constraints, under the
    new name), under ACCESS EXCLUSIVE for a catalogue change only.

Until the contraction the change can be aborted: the trigger and the new
columns are dropped and the table is as it was.

.. warning::
   The trigger decides who wrote a row by what changed: for ``add_column``,
   an UPDATE that leaves the new column as it was gets it computed again
   from its expression (the old version's write), one that sets it keeps the
   value.  Otherwise an UPDATE that
   changes an old column is the old version's (the new columns are computed
   again), one that changes only new columns is the new version's.  An
   INSERT that gives the new columns (non-NULL) and leaves the old ones NULL
   is the new version's.  An old column with a DEFAULT is filled by the
   default before the trigger runs, so for an INSERT by the new version the
   trigger cannot tell it from a value: such columns are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import OnlineChangeRefused
from agentdb.online.backfill import BYPASS_SETTING, BackfillSpec
from agentdb.online.catalog import TableInfo
from agentdb.online.kinds._rebuild import estimate_rows, fit
from agentdb.online.kinds.base import ChangeKind
from agentdb.online.plan import Phase, Step
from agentdb.online.settings import OnlineSettings
from agentdb.runtime.history import INTERNAL_SCHEMA

__all__ = ["expand_abort", "expand_design", "expand_objects", "expand_phases"]

_TAG = "$agentdb_online$"


def expand_design(info: TableInfo, token: str, *, add: Sequence[Mapping[str, Any]],
                  forward: Mapping[str, str], backward: Mapping[str, str], old_columns: Sequence[str],
                  not_null: Sequence[str], contract: Mapping[str, Any]) -> dict[str, Any]:
    """The design shared by the expand kinds.

    ``add``: new columns (``name``, ``type``, ``default`` -- SQL text of a
    constant, or None -- and ``comment``); ``forward``: new column -> SQL
    over the old columns; ``backward``: old column -> SQL over the new ones;
    ``contract``: ``{"drop": [old columns]}`` or ``{"rename": [old, new]}``.
    """
    key = info.primary_key
    if key is None:
        raise OnlineChangeRefused(info.qualified, "it has no primary key (the backfill goes by key ranges)")
    for column in old_columns:
        found = info.column(column)
        if found.identity or found.generated:
            raise OnlineChangeRefused(info.qualified, f"column {column} is an identity or generated column")
        if backward and found.default is not None:
            raise OnlineChangeRefused(info.qualified, f"column {column} has a DEFAULT, so the trigger could not "
                                      "tell a new version's INSERT from an old one's",
                                      hint="drop the default first (ALTER COLUMN ... DROP DEFAULT)")
    existing = {c.name for c in info.columns}
    for added in add:
        if added["name"] in existing:
            raise OnlineChangeRefused(info.qualified, f"it has a column {added['name']} already")
    types = {c.name: c.type for c in info.columns}
    return {
        "schema": info.schema, "table": info.name, "token": token,
        "add": [dict(c) for c in add], "forward": dict(forward), "backward": dict(backward),
        "old_columns": list(old_columns), "not_null": list(not_null), "contract": dict(contract),
        "key": list(key.columns), "key_types": [types[c] for c in key.columns],
        "function": f"online_{token}_sync", "trigger": f"agentdb_online_{token}_sync",
        "checks": {c: fit(c, f"_online_{token}_nn") for c in not_null},
    }


def _row(prefix: str | None, columns: Sequence[str]) -> sql.Composable:
    if prefix is None:
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.SQL(prefix + ".{}").format(sql.Identifier(c))
                                                        for c in columns))


def _nulls(count: int) -> sql.Composable:
    return sql.SQL("ROW({})").format(sql.SQL(", ").join([sql.SQL("NULL")] * count))


def _compute(mapping: Mapping[str, str]) -> sql.Composable:
    """``SELECT e1, e2 INTO NEW.c1, NEW.c2 FROM (SELECT NEW.*) AS s``: the expressions see the row's columns."""
    return sql.SQL("SELECT {} INTO {} FROM (SELECT NEW.*) AS s;").format(
        sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(e)) for e in mapping.values()),
        sql.SQL(", ").join(sql.SQL("NEW.{}").format(sql.Identifier(c)) for c in mapping))


def _function(design: Mapping[str, Any]) -> list[sql.Composable]:
    new = list(design["forward"])
    old = design["old_columns"]
    backward = design["backward"]
    insert = sql.SQL("IF {} IS NOT DISTINCT FROM {} THEN {}").format(_row("NEW", new), _nulls(len(new)),
                                                                      _compute(design["forward"]))
    if backward:
        insert = sql.SQL("{} ELSIF {} IS NOT DISTINCT FROM {} THEN {}").format(
            insert, _row("NEW", list(backward)), _nulls(len(backward)), _compute(backward))
    if old:
        update = sql.SQL("IF {} IS DISTINCT FROM {} THEN {}").format(_row("NEW", old), _row("OLD", old),
                                                                    _compute(design["forward"]))
        if backward:
            update = sql.SQL("{} ELSIF {} IS DISTINCT FROM {} THEN {}").format(
                update, _row("NEW", new), _row("OLD", new), _compute(backward))
    else:
        # add_column: until the contraction the column follows its expression for every write that does not
        # set it (the old version's); a write that sets it (the new version's) keeps its value.
        update = sql.SQL("IF {} IS NOT DISTINCT FROM {} THEN {}").format(_row("NEW", new), _row("OLD", new),
                                                                        _compute(design["forward"]))
    body = sql.SQL(
        "\nBEGIN\n"
        "    IF pg_catalog.current_setting({setting}, true) IS NOT DISTINCT FROM {token} THEN\n"
        "        RETURN NEW;  -- the backfill's own batch\n"
        "    END IF;\n"
        "    IF TG_OP = 'INSERT' THEN\n"
        "        {insert}\n"
        "        END IF;\n"
        "    ELSE\n"
        "        {update}\n"
        "        END IF;\n"
        "    END IF;\n"
        "    RETURN NEW;\n"
        "END\n"
    ).format(setting=sql.Literal(BYPASS_SETTING), token=sql.Literal(design["token"]), insert=insert, update=update)
    function = sql.Identifier(INTERNAL_SCHEMA, design["function"])
    table = sql.Identifier(design["schema"], design["table"])
    return [
        sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql "
                "SET search_path = pg_catalog, pg_temp AS {tag}{body}{tag}").format(
            function, tag=sql.SQL(_TAG), body=body),
        sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(function),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(design["trigger"]), table),
        # WHEN: the backfill's own rows skip the trigger without calling its function (a fifth of a batch's time).
        sql.SQL("CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {} FOR EACH ROW "
                "WHEN (pg_catalog.current_setting({}, true) IS DISTINCT FROM {}) EXECUTE FUNCTION {}()").format(
            sql.Identifier(design["trigger"]), table, sql.Literal(BYPASS_SETTING), sql.Literal(design["token"]),
            function),
        sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(table, sql.Identifier(design["trigger"])),
    ]


def _drop_trigger(design: Mapping[str, Any]) -> list[sql.Composable]:
    table = sql.Identifier(design["schema"], design["table"])
    return [sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(design["trigger"]), table),
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(INTERNAL_SCHEMA, design["function"]))]


def backfill_spec(design: Mapping[str, Any]) -> BackfillSpec:
    new = list(design["forward"])
    return BackfillSpec(
        table=(design["schema"], design["table"]), key=tuple(design["key"]), key_types=tuple(design["key_types"]),
        assignments=sql.SQL(", ").join(sql.SQL("{} = ({})").format(sql.Identifier(c), sql.SQL(e))
                                       for c, e in design["forward"].items()),
        condition=sql.SQL("{} IS NOT DISTINCT FROM {} AND ROW({}) IS DISTINCT FROM {}").format(
            _row(None, new), _nulls(len(new)),
            sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(e)) for e in design["forward"].values()),
            _nulls(len(new))),
        token=design["token"],
    )


def expand_phases(design: Mapping[str, Any]) -> tuple[Phase, ...]:
    schema, table = design["schema"], design["table"]
    qualified = f"{schema}.{table}"
    target = sql.Identifier(schema, table)
    add: list[sql.Composable] = []
    for column in design["add"]:
        add.append(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}{}").format(
            target, sql.Identifier(column["name"]), sql.SQL(column["type"]),
            sql.SQL(" DEFAULT {}").format(sql.SQL(column["default"])) if column.get("default") else sql.SQL("")))
        if column.get("set_default"):
            add.append(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                target, sql.Identifier(column["name"]), sql.SQL(column["set_default"])))
        if column.get("comment"):
            add.append(sql.SQL("COMMENT ON COLUMN {} IS {}").format(
                sql.Identifier(schema, table, column["name"]), sql.Literal(column["comment"])))
    names = ", ".join(c["name"] for c in design["add"])
    synced = bool(design["forward"])
    expand = [Step(f"add column(s) {names} to {qualified} (catalogue only: no default that needs a rewrite)",
                   tuple(add), locks=(f"ACCESS EXCLUSIVE on {qualified} (catalogue only)",), contended=True)]
    if synced:
        expand.append(Step(f"install the sync trigger on {qualified}: every write fills the other version's "
                           "columns", tuple(_function(design)),
                           locks=(f"SHARE ROW EXCLUSIVE on {qualified} (waits for open writers; catalogue only)",),
                           contended=True))
    phases = [Phase("expand", f"add {names} to {qualified}" + (" and keep old and new columns in step"
                                                               if synced else ""), steps=tuple(expand))]
    if synced:
        phases.append(Phase("backfill", f"fill {names} for the rows that existed before, in key-ordered batches",
                            sort="backfill", backfill=backfill_spec(design)))
    if design["not_null"]:
        steps: list[Step] = []
        for column in design["not_null"]:
            check = design["checks"][column]
            steps += [
                Step(f"add CHECK ({column} IS NOT NULL) NOT VALID",
                     (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID").format(
                         target, sql.Identifier(check), sql.Identifier(column)),),
                     locks=(f"ACCESS EXCLUSIVE on {qualified} (catalogue only)",), contended=True),
                Step("validate it (scans the rows, reads and writes go on)",
                     (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(target, sql.Identifier(check)),),
                     locks=(f"SHARE UPDATE EXCLUSIVE on {qualified}",)),
                Step(f"SET NOT NULL on {column}: proven by the validated check, no scan; drop the check",
                     (sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(target, sql.Identifier(column)),
                      sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(target, sql.Identifier(check))),
                     locks=(f"ACCESS EXCLUSIVE on {qualified} (catalogue only)",), contended=True),
            ]
        phases.append(Phase("constraints", "make " + ", ".join(design["not_null"]) + " NOT NULL without a scan "
                            "under a blocking lock", steps=tuple(steps)))
    if not synced:
        return tuple(phases)
    spec = backfill_spec(design)
    phases.append(Phase("verify", "check that no row misses its new columns", steps=(Step(
        f"check that every row of {qualified} has its new columns",
        (sql.SQL("DO $$ BEGIN IF EXISTS (SELECT FROM {} WHERE {}) THEN RAISE EXCEPTION "
                 "'rows of % miss their new columns: the backfill is incomplete', {}; END IF; END $$").format(
            target, spec.condition, sql.Literal(qualified)),),
        locks=(f"ACCESS SHARE on {qualified} (reads it once)",)),)))
    contract = design["contract"]
    statements = _drop_trigger(design)
    if "rename" in contract:
        old, new = contract["rename"]
        statements += [sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(target, sql.Identifier(new)),
                       sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
                           target, sql.Identifier(old), sql.Identifier(new))]
        title = (f"contract: drop the trigger; {old} (with its indexes, constraints and statistics) takes the "
                 f"name {new}, whose copy goes")
    elif contract.get("drop"):
        statements += [sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(target, sql.Identifier(c))
                       for c in contract["drop"]]
        title = "contract: drop the trigger and the old column(s) " + ", ".join(contract["drop"])
    else:
        title = "drop the sync trigger: the application writes the new column(s) itself from now on"
        if contract.get("set_default"):
            column, default = contract["set_default"]
            statements.append(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                target, sql.Identifier(column), sql.SQL(default)))
            title += f"; {column} gets its DEFAULT"
    phases.append(Phase("complete", "contract (when the old application version is gone)", steps=(Step(
        title, tuple(statements), locks=(f"ACCESS EXCLUSIVE on {qualified} (catalogue only)",), contended=True),)))
    return tuple(phases)


def expand_abort(design: Mapping[str, Any]) -> tuple[Step, ...]:
    schema, table = design["schema"], design["table"]
    target = sql.Identifier(schema, table)
    statements = _drop_trigger(design) + [
        sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(target, sql.Identifier(c["name"]))
        for c in design["add"]]
    return (Step(f"drop the sync trigger and the new column(s) of {schema}.{table}", tuple(statements),
                 locks=(f"ACCESS EXCLUSIVE on {schema}.{table} (catalogue only)",), contended=True),)


def expand_objects(design: Mapping[str, Any]) -> dict[str, list[str]]:
    return {"functions": [f"{INTERNAL_SCHEMA}.{design['function']}"],
            "triggers": [f"{design['schema']}.{design['table']}.{design['trigger']}"]}


def column_state(connection: sa.Connection, schema: str, table: str) -> dict[str, tuple[str, bool]]:
    """Column name -> (type, not null), for ``already_done``."""
    return {str(r[0]): (str(r[1]), bool(r[2])) for r in connection.execute(sa.text(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull "
        "FROM pg_catalog.pg_attribute a WHERE a.attrelid = to_regclass(pg_catalog.format('%I.%I', "
        "CAST(:s AS text), CAST(:t AS text))) AND a.attnum > 0 AND NOT a.attisdropped"), {"s": schema, "t": table})}


class ExpandKind(ChangeKind):
    """What every expand/contract kind (add_column, rename, split, merge) shares: the phases, the abort, the rows
    to backfill and the objects of the sync trigger come from the design :func:`expand_design` makes."""

    @classmethod
    def phases(cls, design: Mapping[str, Any], settings: OnlineSettings) -> tuple[Phase, ...]:
        return expand_phases(design)

    @classmethod
    def abort_steps(cls, design: Mapping[str, Any]) -> tuple[Step, ...]:
        return expand_abort(design)

    @classmethod
    def rows_estimate(cls, connection: sa.Connection, design: Mapping[str, Any]) -> int:
        return estimate_rows(connection, design["schema"], design["table"])

    @classmethod
    def objects(cls, design: Mapping[str, Any]) -> dict[str, list[str]]:
        return expand_objects(design)
