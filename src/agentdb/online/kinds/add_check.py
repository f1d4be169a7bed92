"""Add a CHECK constraint without a scan under a blocking lock: ``NOT VALID``, then ``VALIDATE``.

``ADD CONSTRAINT ... CHECK (...) NOT VALID`` is a catalogue change (ACCESS
EXCLUSIVE for an instant, under the short ``lock_timeout`` with retries); from
then on every write is checked.  ``VALIDATE CONSTRAINT`` then scans the
existing rows under SHARE UPDATE EXCLUSIVE, which reads and writes do not
wait for.  On a partitioned table both recurse to the partitions.  A row that
violates the condition fails the validation, naming the constraint; abort
drops it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import sqlalchemy as sa
from psycopg import sql

from agentdb.errors import OnlineChangeRefused
from agentdb.online.catalog import describe
from agentdb.online.kinds import _ddl
from agentdb.online.kinds.base import ChangeKind
from agentdb.online.plan import Phase, Step
from agentdb.online.settings import OnlineSettings

__all__ = ["AddCheckKind", "constraint_validated", "drop_constraint_step", "validate_step"]


def constraint_validated(connection: sa.Connection, schema: str, table: str, name: str) -> bool | None:
    """True: the table has a validated constraint ``name``; False: a NOT VALID one; None: none."""
    found = connection.execute(sa.text(
        "SELECT convalidated FROM pg_catalog.pg_constraint WHERE conname = :name AND conrelid = "
        "to_regclass(pg_catalog.format('%I.%I', CAST(:schema AS text), CAST(:table AS text)))"
    ), {"schema": schema, "table": table, "name": name}).first()
    return None if found is None else bool(found[0])


def validate_step(schema: str, table: str, name: str) -> Step:
    return Step(f"validate {name}: scan the existing rows of {schema}.{table}",
                (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(sql.Identifier(schema, table),
                                                                         sql.Identifier(name)),),
                locks=(f"SHARE UPDATE EXCLUSIVE on {schema}.{table} (reads and writes go on)",))


def drop_constraint_step(schema: str, table: str, name: str, extra_lock: str = "") -> Step:
    return Step(f"drop constraint {name} of {schema}.{table} if it exists",
                (sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(sql.Identifier(schema, table),
                                                                               sql.Identifier(name)),),
                locks=(f"ACCESS EXCLUSIVE on {schema}.{table}{extra_lock} (catalogue only)",), contended=True)


class AddCheckKind(ChangeKind):
    name: ClassVar[str] = "add_check"
    summary: ClassVar[str] = "add a CHECK constraint NOT VALID, then VALIDATE it while writes go on"
    options: ClassVar[Mapping[str, Any]] = {"name": None, "condition": None}

    @classmethod
    def design(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any],
               token: str) -> dict[str, Any]:
        qualified = f"{schema}.{table}"
        _ddl.check_options(qualified, cls.name, options, cls.options, ("name", "condition"))
        info = describe(connection, schema, table)
        name = _ddl.check_new_name(info, options["name"], "constraint")
        if _ddl.constraint_exists(connection, info, name):
            raise OnlineChangeRefused(qualified, f"it has a constraint named {name} already")
        condition = _ddl.check_expression(connection, info, options["condition"], "the condition", cast="boolean")
        return {"schema": schema, "table": table, "token": token, "name": name, "condition": condition}

    @classmethod
    def already_done(cls, connection: sa.Connection, schema: str, table: str, options: Mapping[str, Any]) -> bool:
        name = options.get("name")
        return isinstance(name, str) and constraint_validated(connection, schema, table, name) is True

    @classmethod
    def phases(cls, design: Mapping[str, Any], settings: OnlineSettings) -> tuple[Phase, ...]:
        schema, table, name = design["schema"], design["table"], design["name"]
        add = Step(
            f"add CHECK {name} NOT VALID to {schema}.{table}: new writes are checked from now on",
            (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({}) NOT VALID").format(
                sql.Identifier(schema, table), sql.Identifier(name), sql.SQL(design["condition"])),),
            locks=(f"ACCESS EXCLUSIVE on {schema}.{table} (catalogue only)",), contended=True,
        )
        return (Phase("add", f"add {name} NOT VALID", steps=(add,)),
                Phase("validate", f"validate {name}", steps=(validate_step(schema, table, name),)))

    @classmethod
    def abort_steps(cls, design: Mapping[str, Any]) -> tuple[Step, ...]:
        return (drop_constraint_step(design["schema"], design["table"], design["name"]),)
