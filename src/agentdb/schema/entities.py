"""What the database holds besides tables, declared once as it is *now*: trigger functions, triggers, views, grants.

Tables are declared by the Core models (:data:`agentdb.schema.metadata`);
everything else a migration creates and a later one may change is declared
here as an `alembic_utils <https://olirice.github.io/alembic_utils/>`_
replaceable entity.  Alembic's autogenerate (``agentdb new --autogenerate``,
``alembic revision --autogenerate``, the drift test) compares the live
database with this module (:mod:`agentdb.runtime.autogenerate`) and writes
``op.create_entity`` / ``op.replace_entity`` / ``op.drop_entity`` for every
difference, the way it writes ``op.add_column`` for the models.

Migrations never import this module: each one carries, frozen, the SQL it ran
(005 the guard, the roles and the analyst column grants of its day), so its
sha256 says what it does.  A change here reaches a database through a new
migration.

Declared:

* the trigger functions ``set_updated_at``, ``collaboration_history_append_only``,
  ``audit_row_change``, ``consent_track_times`` and ``guard_bulk_change``;
* their triggers, derived from the models: ``<table>_set_updated_at`` on every
  table with an ``updated_at`` column, ``<table>_audit`` on every table of
  :data:`~agentdb.schema.analytics.AUDITED_TABLES`, the three bulk-change guard
  triggers on every table of :data:`GUARDED_TABLES`,
  ``collaboration_history_append_only`` and ``consent_track_times``;
* the view ``public.rollback_archive``;
* the table grants of the three group roles (:func:`role_names`): ``app`` reads
  and writes every table (``SELECT, INSERT`` only on :data:`APPEND_ONLY` tables),
  ``readonly`` reads every table, ``analyst`` reads the columns
  :func:`~agentdb.schema.personal_data.analyst_columns` allows;
* row-level security policies: none.  One created by hand is drift.

Not declared, because alembic_utils cannot express them (they stay in the
migrations that create them): the roles themselves (cluster-wide, created only
if missing), ``USAGE`` on schema ``public``, grants to and revokes from
``PUBLIC``, and the comments on functions and views.  Grants to roles other
than the three are not compared: an administrator's own grants are not drift.

Autogenerate simulates functions, triggers and views inside a savepoint, which
locks the tables they are attached to: see the warning in
:mod:`agentdb.runtime.autogenerate` before running it against a busy database.
"""

from __future__ import annotations

import os
import re

from alembic_utils.pg_function import PGFunction
from alembic_utils.pg_grant_table import PGGrantTable
from alembic_utils.pg_trigger import PGTrigger
from alembic_utils.pg_view import PGView
from alembic_utils.replaceable_entity import ReplaceableEntity

from agentdb.schema import metadata
from agentdb.schema.analytics import AUDITED_TABLES

__all__ = [
    "APPEND_ONLY",
    "DEFAULT_LIMIT",
    "GUARDED_TABLES",
    "GUARD_SQLSTATE",
    "MARKER",
    "PURPOSES",
    "entities",
    "functions",
    "grants",
    "role_names",
    "triggers",
    "views",
]

# --- roles ---------------------------------------------------------------------------------------------------------

#: purpose -> what the group role is for (its COMMENT).
PURPOSES = {
    "app": "application: reads and writes data, no DDL",
    "readonly": "read-only: SELECT on every application table",
    "analyst": "analysts: analytics and the columns the personal-data registry lets them read",
}
#: Written into the COMMENT of a role agentdb created; only such roles are ever dropped.
MARKER = "[created by agentdb]"
#: Tables no role but the owner may UPDATE, DELETE or TRUNCATE.
APPEND_ONLY = frozenset({"audit_log"})
_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def role_names(prefix: str | None = None) -> dict[str, str]:
    """purpose -> role name for ``prefix`` (default: ``AGENTDB_ROLE_PREFIX`` or ``agentdb``)."""
    prefix = prefix or os.environ.get("AGENTDB_ROLE_PREFIX") or "agentdb"
    if not _PREFIX.match(prefix):
        raise ValueError(f"AGENTDB_ROLE_PREFIX {prefix!r} must match {_PREFIX.pattern}")
    return {purpose: f"{prefix}_{purpose}" for purpose in PURPOSES}


# --- the bulk-change guard -----------------------------------------------------------------------------------------

#: The SQLSTATE of a refusal (class ``YB``: implementation-defined, unused by PostgreSQL).
GUARD_SQLSTATE = "YB001"
#: Users one statement may touch when ``agentdb.bulk_change_limit`` is not set.
DEFAULT_LIMIT = 100
#: table -> the column naming the user a row is about.
GUARDED_TABLES = {"users": "id", "consent": "user_id", "audit_log": "subject_user_id"}

# --- trigger functions, as they are now ----------------------------------------------------------------------------

_SET_UPDATED_AT = """
CREATE FUNCTION public.set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW IS DISTINCT FROM OLD THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$
"""

_COLLABORATION_HISTORY_APPEND_ONLY = """
CREATE FUNCTION public.collaboration_history_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Depth 1: the UPDATE or DELETE came from a statement.  Deeper: from a
    -- referential action (ON DELETE CASCADE / SET NULL), which is allowed.
    IF pg_trigger_depth() <= 1 THEN
        RAISE EXCEPTION 'collaboration_history is append-only: % is not allowed', TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Add a new history row instead.';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$
"""

_AUDIT_ROW_CHANGE = """
CREATE FUNCTION public.audit_row_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    excluded text[] := TG_ARGV[2:TG_NARGS - 1];
    old_row jsonb;
    new_row jsonb;
    changed text[];
    subject text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD) - excluded;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW) - excluded;
    END IF;
    SELECT coalesce(array_agg(k.key ORDER BY k.key), '{}') INTO changed
    FROM jsonb_object_keys(coalesce(old_row, new_row)) AS k(key)
    WHERE k.key <> 'updated_at'
      AND coalesce(old_row -> k.key, 'null') IS DISTINCT FROM coalesce(new_row -> k.key, 'null');
    IF TG_OP = 'UPDATE' AND cardinality(changed) = 0 THEN
        RETURN NULL;
    END IF;
    IF TG_ARGV[1] <> '' THEN
        -- NEW's subject, else OLD's: an ON DELETE SET NULL update still names the erased user.
        subject := coalesce(new_row ->> TG_ARGV[1], old_row ->> TG_ARGV[1]);
    END IF;
    INSERT INTO public.audit_log
        (entity_type, entity_id, action, actor, changed_columns, old_values, new_values,
         subject_user_id, transaction_id)
    VALUES
        (TG_ARGV[0], (coalesce(new_row, old_row) ->> 'id')::bigint, lower(TG_OP),
         coalesce(nullif(current_setting('agentdb.actor', true), ''), current_user::text), changed,
         old_row, new_row, subject::bigint, txid_current());
    RETURN NULL;
END
$$
"""

_CONSENT_TRACK_TIMES = """
CREATE FUNCTION public.consent_track_times() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.granted THEN
            NEW.granted_at := coalesce(NEW.granted_at, now());
        END IF;
    ELSIF NEW.granted AND NOT OLD.granted THEN
        IF NEW.granted_at IS NOT DISTINCT FROM OLD.granted_at THEN
            NEW.granted_at := now();
        END IF;
        NEW.revoked_at := NULL;
    ELSIF OLD.granted AND NOT NEW.granted THEN
        IF NEW.revoked_at IS NOT DISTINCT FROM OLD.revoked_at THEN
            NEW.revoked_at := now();
        END IF;
    END IF;
    RETURN NEW;
END
$$
"""

#: The guard: refuses one UPDATE, DELETE or TRUNCATE that touches more users than the limit (see agentdb.guards).
_GUARD_BULK_CHANGE = """
CREATE FUNCTION public.guard_bulk_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    subject text := TG_ARGV[0];
    configured text := nullif(current_setting('agentdb.bulk_change_limit', true), '');
    max_users bigint := @DEFAULT_LIMIT@;
    touched_users bigint;
    touched_rows bigint;
    detail text;
BEGIN
    IF lower(coalesce(nullif(current_setting('agentdb.allow_bulk_change', true), ''), 'off'))
           IN ('on', 'true', 'yes', '1') THEN
        RETURN NULL;
    END IF;
    IF configured ~ '^[0-9]{1,18}$' THEN
        max_users := configured::bigint;
    ELSIF configured IS NOT NULL THEN
        RAISE WARNING 'agentdb.bulk_change_limit = % is not a number; using %', configured, max_users;
    END IF;
    IF TG_OP <> 'TRUNCATE' THEN
        SELECT count(DISTINCT coalesce('u' || (to_jsonb(o) ->> subject), 'r' || (to_jsonb(o) ->> 'id'))), count(*)
        INTO touched_users, touched_rows
        FROM old_rows AS o;
        IF touched_users <= max_users THEN
            RETURN NULL;
        END IF;
    END IF;
    detail := jsonb_build_object(
        'table', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 'operation', TG_OP, 'users', touched_users,
        'rows', touched_rows, 'limit', max_users, 'role', current_user::text,
        'application', current_setting('application_name'))::text;
    RAISE LOG 'agentdb bulk change refused: %', detail;
    RAISE EXCEPTION 'refused: % on %.% touches % in one statement, more than agentdb.bulk_change_limit = %',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME,
            coalesce(touched_users || ' users (' || touched_rows || ' rows)', 'all rows'), max_users
        USING ERRCODE = '@SQLSTATE@', DETAIL = detail, SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME,
              HINT = 'to mean it, run it in a transaction that first does SET LOCAL agentdb.allow_bulk_change = on';
END
$$
""".replace("@DEFAULT_LIMIT@", str(DEFAULT_LIMIT)).replace("@SQLSTATE@", GUARD_SQLSTATE)

_ROLLBACK_ARCHIVE = """
CREATE VIEW public.rollback_archive AS
SELECT id, table_schema || '.' || table_name AS table_name, archive_table, revision, row_count,
       archived_at, restored_at, restored_rows
FROM agentdb.archived_tables
"""


def functions() -> list[PGFunction]:
    """The trigger functions of schema ``public``."""
    return [
        PGFunction.from_sql(source.strip())
        for source in (_SET_UPDATED_AT, _COLLABORATION_HISTORY_APPEND_ONLY, _AUDIT_ROW_CHANGE, _CONSENT_TRACK_TIMES,
                       _GUARD_BULK_CHANGE)
    ]


def _trigger(name: str, table: str, definition: str) -> PGTrigger:
    return PGTrigger(schema="public", signature=name, on_entity=f"public.{table}",
                     definition=definition.format(table=f"public.{table}"))


def _quoted(value: str) -> str:
    """A trigger argument as a SQL string literal (the names here are constants of this module and the models)."""
    return "'" + value.replace("'", "''") + "'"


def triggers() -> list[PGTrigger]:
    """Every trigger of schema ``public``, derived from the models and the tables named above."""
    declared = [
        _trigger(f"{table.name}_set_updated_at", table.name,
                 "BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION public.set_updated_at()")
        for table in sorted(metadata.tables.values(), key=lambda t: t.name) if "updated_at" in table.c
    ]
    declared.append(_trigger(
        "collaboration_history_append_only", "collaboration_history",
        "BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION public.collaboration_history_append_only()",
    ))
    for audited in AUDITED_TABLES:
        arguments = ", ".join(_quoted(a) for a in (audited.entity_type, audited.subject_column or "",
                                                   *audited.excluded))
        declared.append(_trigger(
            f"{audited.table}_audit", audited.table,
            "AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW "
            f"EXECUTE FUNCTION public.audit_row_change({arguments})",
        ))
    declared.append(_trigger("consent_track_times", "consent",
                             "BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW "
                             "EXECUTE FUNCTION public.consent_track_times()"))
    for table, subject in GUARDED_TABLES.items():
        action = f"EXECUTE FUNCTION public.guard_bulk_change({_quoted(subject)})"
        for event in ("UPDATE", "DELETE"):
            declared.append(_trigger(
                f"{table}_guard_bulk_{event.lower()}", table,
                f"AFTER {event} ON {{table}} REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT {action}",
            ))
        declared.append(_trigger(f"{table}_guard_truncate", table,
                                 f"BEFORE TRUNCATE ON {{table}} FOR EACH STATEMENT {action}"))
    return declared


def views() -> list[PGView]:
    """The views of schema ``public``."""
    return [PGView.from_sql(_ROLLBACK_ARCHIVE.strip())]


def grants(prefix: str | None = None) -> list[PGGrantTable]:
    """The grants of the three group roles on every table of the models, analyst columns from the registry.

    ``SELECT``, ``INSERT`` and ``UPDATE`` are column privileges for
    alembic_utils: a grant on the whole table reads as a grant on each of its
    columns, so the app and read-only roles are declared with every column.
    """
    from agentdb.schema.personal_data import analyst_columns

    names = role_names(prefix)
    visible = analyst_columns()
    declared: list[PGGrantTable] = []
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        columns = [column.name for column in table.columns]
        writes = ("SELECT", "INSERT") if table.name in APPEND_ONLY else ("SELECT", "INSERT", "UPDATE", "DELETE")
        for privilege in writes:
            declared.append(PGGrantTable(schema="public", table=table.name, role=names["app"], grant=privilege,
                                         columns=None if privilege == "DELETE" else columns))
        declared.append(PGGrantTable(schema="public", table=table.name, role=names["readonly"], grant="SELECT",
                                     columns=columns))
        if visible.get(table.name):
            declared.append(PGGrantTable(schema="public", table=table.name, role=names["analyst"], grant="SELECT",
                                         columns=visible[table.name]))
    return declared


def entities(prefix: str | None = None) -> list[ReplaceableEntity]:
    """Everything declared here, functions first (triggers depend on them)."""
    return [*functions(), *triggers(), *views(), *grants(prefix)]
