"""Capture: every write to the source reaches the target, in the writer's own transaction.

An ``AFTER INSERT OR UPDATE OR DELETE ... FOR EACH ROW`` trigger on the source
applies each change to the target: a delete deletes the key, an update that
changes the key deletes the old key, and the new row is upserted (``ON
CONFLICT (key) DO UPDATE``).  Because it runs in the writer's transaction,
source and target agree in every snapshot, which is what lets the batch copy
(:mod:`agentdb.online.copy`) and the verification
(:mod:`agentdb.online.verify`) reason about them.  A second trigger refuses
``TRUNCATE`` of the source while the change runs (row triggers do not see it).

The trigger function is ``SECURITY DEFINER`` (owned by whoever runs the
change, who owns the target), so an application role needs no privilege on the
target; it sets its own ``search_path`` and names every object qualified.
The trigger is ``ENABLE ALWAYS``: it fires under ``session_replication_role =
replica`` as well (logical replication apply, some restore tools).

.. warning::
   Installing the trigger takes SHARE ROW EXCLUSIVE on the source, which waits
   for every transaction that has written to it and blocks writers meanwhile:
   the engine runs it under a short ``lock_timeout`` with retries.

   A writer in REPEATABLE READ or SERIALIZABLE whose row is being copied by a
   batch at that very moment can get a serialization failure (SQLSTATE 40001)
   from the upsert; such writers already retry on 40001.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

__all__ = ["CaptureSpec", "install_statements", "remove_statements"]

#: Tag of the dollar-quoted function bodies; a name containing it is refused.
_TAG = "$agentdb_online$"


@dataclass(frozen=True)
class CaptureSpec:
    """Which table feeds which, by which key, with which column expressions."""

    source: tuple[str, str]
    target: tuple[str, str]
    #: Key columns of the source and the matching key columns of the target (same order).
    source_key: tuple[str, ...]
    target_key: tuple[str, ...]
    target_columns: tuple[str, ...]
    #: The source column that feeds each target column (same order)...
    source_columns: tuple[str, ...]
    function: tuple[str, str]
    truncate_function: tuple[str, str]
    trigger: str
    truncate_trigger: str
    overriding: bool = False
    #: Shown by the TRUNCATE refusal.
    change_label: str = ""
    #: ...unless a kind gives one expression per target column over ``NEW`` (a type change's USING).
    new_values: tuple[sql.Composable, ...] | None = None

    def _row(self, variable: str, columns: tuple[str, ...]) -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.SQL(variable), sql.Identifier(c)) for c in columns)


def install_statements(spec: CaptureSpec) -> list[sql.Composable]:
    """Create the capture and TRUNCATE-refusing functions and triggers (one transaction)."""
    for name in (*spec.source, *spec.target, *spec.target_columns, *spec.source_columns):
        if _TAG in name:
            raise ValueError(f"name {name!r} contains {_TAG}")
    target = sql.Identifier(*spec.target)
    target_key = sql.SQL(", ").join(sql.Identifier(c) for c in spec.target_key)
    old_key = spec._row("OLD", spec.source_key)
    new_key = spec._row("NEW", spec.source_key)
    others = [c for c in spec.target_columns if c not in spec.target_key]
    on_conflict: sql.Composable
    if others:
        on_conflict = sql.SQL("DO UPDATE SET ({}) = ROW({})").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in others),
            sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in others),
        )
    else:
        on_conflict = sql.SQL("DO NOTHING")
    new_values = sql.SQL(", ").join(
        spec.new_values if spec.new_values is not None
        else [sql.SQL("NEW.{}").format(sql.Identifier(c)) for c in spec.source_columns]
    )
    body = sql.SQL(
        "\nBEGIN\n"
        "    IF TG_OP = 'DELETE' THEN\n"
        "        DELETE FROM {target} WHERE ({target_key}) = ({old_key});\n"
        "        RETURN NULL;\n"
        "    END IF;\n"
        "    IF TG_OP = 'UPDATE' AND ({old_key}) IS DISTINCT FROM ({new_key}) THEN\n"
        "        DELETE FROM {target} WHERE ({target_key}) = ({old_key});\n"
        "    END IF;\n"
        "    INSERT INTO {target} ({columns}){overriding} VALUES ({new_values})\n"
        "    ON CONFLICT ({target_key}) {on_conflict};\n"
        "    RETURN NULL;\n"
        "END\n"
    ).format(
        target=target, target_key=target_key, old_key=old_key, new_key=new_key,
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in spec.target_columns),
        overriding=sql.SQL(" OVERRIDING SYSTEM VALUE") if spec.overriding else sql.SQL(""),
        new_values=new_values, on_conflict=on_conflict,
    )
    source = sql.Identifier(*spec.source)
    function = sql.Identifier(*spec.function)
    refuse = sql.SQL(
        "\nBEGIN\n"
        "    RAISE EXCEPTION USING ERRCODE = 'object_in_use',\n"
        "        MESSAGE = format('TRUNCATE of %s refused: an online change (%s) is copying it',\n"
        "                         TG_TABLE_NAME, {label}),\n"
        "        HINT = 'finish or abort the change first (agentdb online status)';\n"
        "END\n"
    ).format(label=sql.Literal(spec.change_label))
    truncate_function = sql.Identifier(*spec.truncate_function)
    tag = sql.SQL(_TAG)
    return [
        sql.SQL(
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            "SET search_path = pg_catalog, pg_temp AS {tag}{body}{tag}"
        ).format(function, tag=tag, body=body),
        sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(function),
        sql.SQL(
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp "
            "AS {tag}{body}{tag}"
        ).format(truncate_function, tag=tag, body=refuse),
        sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(truncate_function),
        sql.SQL(
            "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(spec.trigger), source, function),
        sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(source, sql.Identifier(spec.trigger)),
        sql.SQL("CREATE TRIGGER {} BEFORE TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}()").format(
            sql.Identifier(spec.truncate_trigger), source, truncate_function),
        sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(source, sql.Identifier(spec.truncate_trigger)),
    ]


def remove_statements(spec: CaptureSpec) -> list[sql.Composable]:
    """Drop the triggers and functions; idempotent (IF EXISTS), so an abort after a crash can repeat it."""
    source = sql.Identifier(*spec.source)
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(spec.trigger), source),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(spec.truncate_trigger), source),
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(*spec.function)),
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(*spec.truncate_function)),
    ]
