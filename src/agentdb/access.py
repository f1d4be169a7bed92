"""Access control: the application, read-only and analyst group roles and their grants.

Three ``NOLOGIN`` group roles; login roles are made members of them
(``GRANT agentdb_app TO api_service``):

``agentdb_app``
    reads and writes data (``SELECT, INSERT, UPDATE, DELETE``), no DDL, no
    ``TRUNCATE``; append-only tables (``audit_log``) get ``SELECT, INSERT`` only.
``agentdb_readonly``
    ``SELECT`` on every application table.
``agentdb_analyst``
    ``SELECT`` on the columns the personal-data registry lets analysts read
    (:func:`agentdb.schema.personal_data.analyst_columns`): non-personal
    columns, and personal ones declared ``analyst=True`` (the pseudonymous
    ``analytics`` table).  Column grants, generated, never listed by hand.

Roles are cluster-wide, grants are per database.  Migration 005 calls
:func:`install`: it creates each role only if missing (a second database on
the same server reuses them), marks a role it creates with a comment
containing :data:`MARKER`, and records in ``agentdb.access_roles`` which role
names this database uses and whether it created them.  :func:`uninstall` (the
downgrade) revokes this database's grants, then drops a role only when

* agentdb created it (the marker; a role an administrator made is never dropped),
* ``pg_shdepend`` shows no dependency on it in any database any more (no other
  database still grants it anything, and it owns nothing), and
* it has no members (dropping it would silently revoke a membership an
  administrator granted).

So the last database to downgrade drops the roles, whichever database created
them.  A role that is kept is reported with a ``NOTICE``.

No default privileges: ``ALTER DEFAULT PRIVILEGES`` applies only to objects
created by the role that set it, and cannot express column grants.  A
migration that creates a table calls :func:`grant_table` (which also
re-applies the analyst columns after a column is added or reclassified).

``AGENTDB_ROLE_PREFIX`` (default ``agentdb``) names the roles at the upgrade
of 005 (``<prefix>_app``...); later statements read the names from
``agentdb.access_roles``, so a downgrade drops exactly what the upgrade used.

.. warning::
   PostgreSQL 14 and older grant ``CREATE`` on schema ``public`` to
   ``PUBLIC``; :func:`install` revokes it (recorded in ``agentdb.access_revoked``,
   restored by :func:`uninstall`), otherwise every role could run DDL there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Protocol

from psycopg import sql

__all__ = [
    "APPEND_ONLY",
    "MARKER",
    "PURPOSES",
    "grant_table",
    "install",
    "role_names",
    "uninstall",
]

#: ``agentdb.access_roles.purpose`` -> what the role is for (its COMMENT).
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


class _Op(Protocol):
    def execute(self, sqltext: str) -> object: ...


def role_names(prefix: str | None = None) -> dict[str, str]:
    """purpose -> role name for ``prefix`` (default: ``AGENTDB_ROLE_PREFIX`` or ``agentdb``)."""
    prefix = prefix or os.environ.get("AGENTDB_ROLE_PREFIX") or "agentdb"
    if not _PREFIX.match(prefix):
        raise ValueError(f"AGENTDB_ROLE_PREFIX {prefix!r} must match {_PREFIX.pattern}")
    return {purpose: f"{prefix}_{purpose}" for purpose in PURPOSES}


def _s(composed: sql.Composable) -> str:
    return composed.as_string(None)


def _text_array(values: Iterable[str]) -> sql.Composable:
    return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(sql.Literal(v) for v in values))


_TABLES_DDL = """
CREATE TABLE agentdb.access_roles (
    purpose text PRIMARY KEY CHECK (purpose IN ('app', 'readonly', 'analyst')),
    role_name name NOT NULL UNIQUE,
    created_here boolean NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
)
"""
_TABLES_COMMENTS = (
    "COMMENT ON TABLE agentdb.access_roles IS 'The group roles this database grants to, and whether "
    "its migration created them (agentdb.access)'",
    "CREATE TABLE agentdb.access_revoked (privilege text PRIMARY KEY, revoked_at timestamptz NOT NULL DEFAULT now())",
    "COMMENT ON TABLE agentdb.access_revoked IS 'Default privileges agentdb revoked, restored by the downgrade'",
)

_CREATE_ROLES = """
DO $agentdb$
DECLARE
    wanted record;
    made boolean;
BEGIN
    FOR wanted IN SELECT * FROM unnest({purposes}, {names}, {comments}) AS w(purpose, role_name, note) LOOP
        made := false;
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = wanted.role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', wanted.role_name);
                EXECUTE format('COMMENT ON ROLE %I IS %L', wanted.role_name,
                               wanted.note || ' ' || {marker} || ' by migration 005 of database '
                               || current_database());
                made := true;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created at the same moment by the migration of another database
            END;
        END IF;
        INSERT INTO agentdb.access_roles (purpose, role_name, created_here)
        VALUES (wanted.purpose, wanted.role_name, made);
    END LOOP;
END
$agentdb$
"""

_REVOKE_PUBLIC_CREATE = """
DO $agentdb$
BEGIN
    IF EXISTS (
        SELECT FROM pg_catalog.pg_namespace AS n,
             LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) AS a
        WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE'
    ) THEN
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
        INSERT INTO agentdb.access_revoked (privilege) VALUES ('CREATE ON SCHEMA public FROM PUBLIC');
    END IF;
END
$agentdb$
"""

_GRANT_SCHEMA = """
DO $agentdb$
DECLARE
    r name;
BEGIN
    FOR r IN SELECT role_name FROM agentdb.access_roles LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', r);
    END LOOP;
END
$agentdb$
"""

_GRANT_TABLE = """
DO $agentdb$
DECLARE
    target regclass := to_regclass({qualified});
    app name := (SELECT role_name FROM agentdb.access_roles WHERE purpose = 'app');
    readonly name := (SELECT role_name FROM agentdb.access_roles WHERE purpose = 'readonly');
    analyst name := (SELECT role_name FROM agentdb.access_roles WHERE purpose = 'analyst');
    analyst_columns text[] := {columns};
    col text;
BEGIN
    IF target IS NULL THEN
        IF {missing_ok} THEN
            RETURN;
        END IF;
        RAISE EXCEPTION 'agentdb.access.grant_table: table % does not exist', {qualified};
    END IF;
    EXECUTE format('REVOKE ALL ON %s FROM %I, %I, %I', target, app, readonly, analyst);
    IF {append_only} THEN
        EXECUTE format('GRANT SELECT, INSERT ON %s TO %I', target, app);
        EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %s FROM PUBLIC', target);
    ELSE
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I', target, app);
    END IF;
    EXECUTE format('GRANT SELECT ON %s TO %I', target, readonly);
    FOREACH col IN ARRAY analyst_columns LOOP
        IF EXISTS (SELECT FROM pg_catalog.pg_attribute
                   WHERE attrelid = target AND attname = col AND attnum > 0 AND NOT attisdropped) THEN
            EXECUTE format('GRANT SELECT (%I) ON %s TO %I', col, target, analyst);
        END IF;
    END LOOP;
END
$agentdb$
"""

_REVOKE_ALL = """
DO $agentdb$
DECLARE
    r name;
BEGIN
    FOR r IN SELECT role_name FROM agentdb.access_roles
             WHERE EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name) LOOP
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %I', r);
        EXECUTE format('REVOKE ALL ON SCHEMA public FROM %I', r);
    END LOOP;
    IF EXISTS (SELECT FROM agentdb.access_revoked WHERE privilege = 'CREATE ON SCHEMA public FROM PUBLIC') THEN
        GRANT CREATE ON SCHEMA public TO PUBLIC;
    END IF;
END
$agentdb$
"""

_DROP_UNUSED_ROLES = """
DO $agentdb$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT a.role_name, o.oid FROM agentdb.access_roles AS a
             JOIN pg_catalog.pg_roles AS o ON o.rolname = a.role_name LOOP
        IF coalesce(shobj_description(r.oid, 'pg_authid'), '') NOT LIKE '%' || {marker} || '%' THEN
            RAISE NOTICE 'agentdb: keeping role %: not created by agentdb', r.role_name;
        ELSIF EXISTS (SELECT FROM pg_catalog.pg_shdepend
                      WHERE refclassid = 'pg_catalog.pg_authid'::regclass AND refobjid = r.oid) THEN
            RAISE NOTICE 'agentdb: keeping role %: another database still grants it privileges or it owns objects',
                r.role_name;
        ELSIF EXISTS (SELECT FROM pg_catalog.pg_auth_members WHERE roleid = r.oid) THEN
            RAISE NOTICE 'agentdb: keeping role %: it has members', r.role_name;
        ELSE
            EXECUTE format('DROP ROLE %I', r.role_name);
        END IF;
    END LOOP;
END
$agentdb$
"""


def install(op: _Op, *, prefix: str | None = None) -> None:
    """Create the roles (if missing), record them, and grant on every table of the schema that exists now."""
    from agentdb.schema import metadata

    names = role_names(prefix)
    op.execute(_TABLES_DDL)
    for statement in _TABLES_COMMENTS:
        op.execute(statement)
    op.execute(_s(sql.SQL(_CREATE_ROLES).format(
        purposes=_text_array(names), names=_text_array(names.values()),
        comments=_text_array(f"agentdb {purpose} role ({text})." for purpose, text in PURPOSES.items()),
        marker=sql.Literal(MARKER),
    )))
    op.execute(_REVOKE_PUBLIC_CREATE)
    op.execute(_GRANT_SCHEMA)
    for table in sorted(metadata.tables):
        grant_table(op, table, missing_ok=True)


def grant_table(op: _Op, table: str, *, missing_ok: bool = False) -> None:
    """Grant the three roles their privileges on ``public.<table>``; call it in every migration that creates a table.

    Re-running it re-applies the analyst column grants from the registry
    (after a column is added or its declaration changes).  Only columns that
    exist when it runs are granted, so a migration stays valid when later
    revisions add columns to the registry.
    """
    from agentdb.schema.personal_data import analyst_columns

    op.execute(_s(sql.SQL(_GRANT_TABLE).format(
        qualified=sql.Literal(f"public.{table}"),
        columns=_text_array(analyst_columns().get(table, [])),
        missing_ok=sql.Literal(missing_ok),
        append_only=sql.Literal(table in APPEND_ONLY),
    )))


def uninstall(op: _Op) -> None:
    """Revoke this database's grants, drop the roles no database uses any more, drop the records."""
    op.execute(_REVOKE_ALL)
    op.execute(_s(sql.SQL(_DROP_UNUSED_ROLES).format(marker=sql.Literal(MARKER))))
    op.execute("DROP TABLE agentdb.access_revoked")
    op.execute("DROP TABLE agentdb.access_roles")
