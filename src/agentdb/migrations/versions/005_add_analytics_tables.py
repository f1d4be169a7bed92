"""Add analytics, event logs, the trigger-filled audit log, consent, access roles and the bulk-change guard.

Why: the product needs usage analytics (the largest table), operational
event logs, a trustworthy record of who changed personal and security data
(GDPR, SOC 2), the users' consent per purpose, and the security around them:
least-privilege roles and a guard against mass changes of personal data.

Decisions:

* ``analytics`` has PRIMARY KEY (id, created_at): migration 007 partitions it
  by RANGE (created_at), and a partitioned table's unique constraints must
  contain the partition key; declaring it now means 007 changes no key and no
  reader.  ``id`` alone stays unique in practice (identity), ``created_at`` is
  NOT NULL, and a BRIN index serves month ranges until partitions exist.
  The identity column is kept: PostgreSQL 16 accepts it on a partitioned
  parent.
* ``analytics.user_id`` / ``event_logs.user_id`` are ON DELETE SET NULL:
  deleting a user keeps the events for aggregates without the link.  The
  other pseudonymous columns (``session_id``, ``country``) are left to the
  erasure feature, which must run *before* the user row is deleted.
* ``audit_log`` has no foreign key (it records deletions too).  The trigger
  function ``public.audit_row_change(entity_type, subject_column,
  excluded...)`` is attached to users, artists, consent,
  collaboration_members, collaboration_roles and api_keys; the table name to
  entity type mapping is explicit (``users`` -> ``user``).  It stores the
  actor (``agentdb.actor`` setting, else ``current_user``), the changed
  columns (keys whose JSON value differs between OLD and NEW, ``updated_at``
  ignored), old and new rows, ``txid_current()`` and ``subject_user_id``, the
  user the row is about, so erasure finds every audit row holding someone's
  data with one index.  ``api_keys.key_hash`` is never copied, and an
  update that only touches ``last_used_at`` writes no audit row.
* ``consent`` keeps the current answer per (user, purpose); the trigger
  ``consent_track_times`` stamps ``granted_at`` when consent is given and
  ``revoked_at`` when it is withdrawn, so no writer can forget; history is in
  ``audit_log``.  ON DELETE CASCADE: consent goes with the account.

* Security: the group roles
  ``agentdb_app`` (data read/write, no DDL), ``agentdb_readonly`` and
  ``agentdb_analyst`` (column grants generated from the personal-data
  registry), created only if missing (roles are cluster-wide) and dropped by
  the downgrade only when agentdb created them and no database uses them any
  more; ``audit_log`` is append-only for them and PUBLIC.  The statement
  trigger ``guard_bulk_change`` refuses an UPDATE or DELETE touching more
  users' rows of ``users``, ``consent`` or ``audit_log`` than
  ``agentdb.bulk_change_limit`` unless the transaction does ``SET LOCAL
  agentdb.allow_bulk_change = on``.
* This file is self-contained: the guard function, the role creation and
  every grant (the analyst columns as the personal-data registry generated
  them at this revision) are written out below, so what it does is what its
  sha256 covers.  Their current definitions live in
  :mod:`agentdb.schema.entities`; a change there is carried by a new
  migration (``agentdb new --autogenerate``), never by editing this one.

.. warning::
   ``TRUNCATE`` is not audited (row triggers do not fire); do not grant it.

Revision ID: 005
Revises: 004
Create Date: 2026-11-21
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from alembic import op
from psycopg import sql
from sqlalchemy.dialects import postgresql as pg

revision: str = "005"
down_revision: str | None = "004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: table -> (entity_type, subject column or '', excluded columns...), frozen at this revision.
_AUDITED: dict[str, tuple[str, ...]] = {
    "users": ("user", "id"),
    "artists": ("artist", "user_id"),
    "consent": ("consent", "user_id"),
    "collaboration_members": ("collaboration_member", "user_id"),
    "collaboration_roles": ("collaboration_role", ""),
    "api_keys": ("api_key", "user_id", "key_hash", "last_used_at"),
}
_ENTITY_TYPES = "'user', 'artist', 'consent', 'collaboration_member', 'collaboration_role', 'api_key'"
_DEVICES = "'mobile', 'desktop', 'tablet', 'web', 'tv', 'speaker', 'car', 'console', 'other'"
_PURPOSES = ("'analytics', 'personalization', 'marketing', 'ai_training', 'collaboration_matching', "
             "'third_party_sharing'")
_SOURCES = "'signup', 'settings', 'banner', 'api', 'support', 'import'"

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


# --- the bulk-change guard, as of this revision ------------------------------------------------------------------

#: table -> the column naming the user a row is about.
_GUARDED = {"users": "id", "consent": "user_id", "audit_log": "subject_user_id"}

_GUARD_BULK_CHANGE = """
CREATE FUNCTION public.guard_bulk_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    subject text := TG_ARGV[0];
    configured text := nullif(current_setting('agentdb.bulk_change_limit', true), '');
    max_users bigint := 100;
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
        USING ERRCODE = 'YB001', DETAIL = detail, SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME,
              HINT = 'to mean it, run it in a transaction that first does SET LOCAL agentdb.allow_bulk_change = on';
END
$$
"""


def _install_guard() -> None:
    op.execute(_GUARD_BULK_CHANGE)
    op.execute(
        "COMMENT ON FUNCTION public.guard_bulk_change() IS 'Trigger function: refuses (SQLSTATE "
        "YB001) a statement changing more users'' rows than agentdb.bulk_change_limit (default "
        "100) unless SET LOCAL agentdb.allow_bulk_change = on. Argument: the subject user column'"
    )
    for table, subject in _GUARDED.items():
        # One trigger per event: PostgreSQL refuses transition tables on a trigger with several events.
        for event in ("update", "delete"):
            op.execute(
                f"CREATE TRIGGER {table}_guard_bulk_{event} AFTER {event.upper()} ON public.{table} "
                f"REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
                f"EXECUTE FUNCTION public.guard_bulk_change('{subject}')"
            )
        op.execute(
            f"CREATE TRIGGER {table}_guard_truncate BEFORE TRUNCATE ON public.{table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION public.guard_bulk_change('{subject}')"
        )


def _uninstall_guard() -> None:
    for table in _GUARDED:
        op.execute(f"DROP TRIGGER {table}_guard_truncate ON public.{table}")
        op.execute(f"DROP TRIGGER {table}_guard_bulk_delete ON public.{table}")
        op.execute(f"DROP TRIGGER {table}_guard_bulk_update ON public.{table}")
    op.execute("DROP FUNCTION public.guard_bulk_change()")


# --- the group roles and their grants, as of this revision -------------------------------------------------------
#
# Roles are cluster-wide: each is created only if missing, marked with _MARKER in its COMMENT when this migration
# creates it, and recorded in agentdb.access_roles (name, and whether this database created it).  The names are
# <AGENTDB_ROLE_PREFIX or agentdb>_<purpose> when this runs; every later statement reads them from access_roles.
# The downgrade drops a role only when it carries the marker, pg_shdepend shows no database still using it, and it
# has no members.  PostgreSQL 14 and older grant CREATE on schema public to PUBLIC: revoked here, restored on
# downgrade.

#: purpose -> what the role is for (its COMMENT).
_ROLE_PURPOSES = {
    "app": "application: reads and writes data, no DDL",
    "readonly": "read-only: SELECT on every application table",
    "analyst": "analysts: analytics and the columns the personal-data registry lets them read",
}
_MARKER = "[created by agentdb]"
_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
#: Tables no role but the owner may UPDATE, DELETE or TRUNCATE.
_APPEND_ONLY = frozenset({"audit_log"})
#: table -> the columns the analyst role may SELECT: agentdb.schema.personal_data.analyst_columns() at this
#: revision, written out.  Every table of the schema at this revision, in name order.
_ANALYST_COLUMNS: dict[str, tuple[str, ...]] = {
    "ai_content": ("id", "artist_id", "track_id", "kind", "locale", "status", "created_at", "updated_at"),
    "ai_content_versions": ("id", "content_id", "version", "parameters", "model_version_id", "created_at"),
    "album_translations": ("id", "album_id", "locale", "title", "created_at", "updated_at"),
    "albums": ("id", "spotify_album_id", "title", "album_type", "upc", "label", "release_date",
        "release_date_precision", "total_tracks", "popularity", "available_markets", "created_at", "updated_at"),
    "analytics": ("id", "user_id", "event_type", "track_id", "properties", "country", "device", "session_id",
        "created_at"),
    "api_keys": ("id", "scopes", "expires_at", "revoked_at", "last_used_at", "created_at", "updated_at"),
    "artist_matches": ("id", "artist_id", "matched_artist_id", "score", "model_version_id", "status", "created_at",
        "updated_at"),
    "artists": ("id", "name", "spotify_artist_id", "genres", "country", "popularity", "followers", "verified",
        "created_at", "updated_at"),
    "audit_log": ("id", "entity_type", "entity_id", "action", "changed_columns", "transaction_id", "created_at"),
    "collaboration_history": ("id", "collaboration_id", "event_type", "details", "created_at"),
    "collaboration_members": ("id", "collaboration_id", "artist_id", "role_id", "joined_at", "left_at", "created_at",
        "updated_at"),
    "collaboration_roles": ("id", "name", "description", "permissions", "created_at", "updated_at"),
    "collaborations": ("id", "status", "created_at", "updated_at"),
    "consent": ("id", "created_at", "updated_at"),
    "event_logs": ("id", "level", "source", "event_type", "message", "details", "created_at"),
    "ml_logs": ("id", "model_version_id", "event_type", "status", "latency_ms", "details", "created_at"),
    "model_versions": ("id", "name", "version", "framework", "status", "metrics", "artifact_uri", "description",
        "trained_at", "created_at", "updated_at"),
    "playlist_tracks": ("id", "playlist_id", "track_id", "position", "added_at"),
    "playlists": ("id", "is_public", "collaborative", "created_at", "updated_at"),
    "recommendations": ("id", "track_id", "model_version_id", "score", "rank", "created_at"),
    "track_artists": ("id", "track_id", "artist_id", "role", "position", "created_at"),
    "track_translations": ("id", "track_id", "locale", "title", "created_at", "updated_at"),
    "tracks": ("id", "spotify_track_id", "album_id", "title", "isrc", "disc_number", "track_number", "duration_ms",
        "explicit", "popularity", "language", "available_markets", "created_at", "updated_at"),
    "users": ("id", "created_at", "updated_at"),
}


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

# One block per table.  Its text is byte for byte what this revision ran when it called the package's
# agentdb.access.grant_table() (hence the message naming it, and missing_ok, always true here).
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


def _role_names() -> dict[str, str]:
    prefix = os.environ.get("AGENTDB_ROLE_PREFIX") or "agentdb"
    if not _PREFIX.match(prefix):
        raise ValueError(f"AGENTDB_ROLE_PREFIX {prefix!r} must match {_PREFIX.pattern}")
    return {purpose: f"{prefix}_{purpose}" for purpose in _ROLE_PURPOSES}


def _text_array(values: Iterable[str]) -> sql.Composable:
    return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(sql.Literal(v) for v in values))


def _install_access() -> None:
    names = _role_names()
    op.execute(_TABLES_DDL)
    for statement in _TABLES_COMMENTS:
        op.execute(statement)
    op.execute(sql.SQL(_CREATE_ROLES).format(
        purposes=_text_array(names), names=_text_array(names.values()),
        comments=_text_array(f"agentdb {purpose} role ({text})." for purpose, text in _ROLE_PURPOSES.items()),
        marker=sql.Literal(_MARKER),
    ).as_string(None))
    op.execute(_REVOKE_PUBLIC_CREATE)
    op.execute(_GRANT_SCHEMA)
    for table, columns in _ANALYST_COLUMNS.items():
        op.execute(sql.SQL(_GRANT_TABLE).format(
            qualified=sql.Literal(f"public.{table}"), columns=_text_array(columns),
            missing_ok=sql.Literal(True), append_only=sql.Literal(table in _APPEND_ONLY),
        ).as_string(None))


def _uninstall_access() -> None:
    op.execute(_REVOKE_ALL)
    op.execute(sql.SQL(_DROP_UNUSED_ROLES).format(marker=sql.Literal(_MARKER)).as_string(None))
    op.execute("DROP TABLE agentdb.access_revoked")
    op.execute("DROP TABLE agentdb.access_roles")


def _id() -> sa.Column[object]:
    return sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False,
                     comment="Surrogate key, generated by the database")


def _created_at() -> sa.Column[object]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
                     comment="When the row was created")


def _jsonb(name: str, comment: str) -> sa.Column[object]:
    return sa.Column(name, pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"), comment=comment)


def upgrade() -> None:
    op.create_table(
        "analytics",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False,
                  comment="Surrogate key, generated by the database; unique together with created_at"),
        sa.Column("user_id", sa.BigInteger, nullable=True,
                  comment="Who did it; SET NULL: erasing the user keeps the event, anonymised, for aggregates"),
        sa.Column("event_type", sa.Text, nullable=False,
                  comment="What happened, a lower-case dotted name (play, skip, search, recommendation.click)"),
        sa.Column("track_id", sa.BigInteger, nullable=True,
                  comment="The track concerned, if any; SET NULL: the event still counts when the track leaves "
                  "the catalogue"),
        _jsonb("properties", "Event properties as a JSON object; no direct identifiers (e-mail, name)"),
        sa.Column("country", sa.Text, nullable=True, comment="ISO 3166-1 alpha-2 country the event came from"),
        sa.Column("device", sa.Text, nullable=True, comment="Device class: " + _DEVICES.replace("'", "")),
        sa.Column("session_id", pg.UUID(as_uuid=True), nullable=True,
                  comment="Client session, random per session; pseudonymous, cleared by erasure"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
                  comment="When the event happened; the future partition key"),
        sa.PrimaryKeyConstraint("id", "created_at", name=op.f("analytics_pkey")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL", name=op.f("analytics_user_id_fkey")),
        sa.ForeignKeyConstraint(["track_id"], ["tracks.id"], ondelete="SET NULL",
                                name=op.f("analytics_track_id_fkey")),
        sa.CheckConstraint("event_type ~ '^[a-z][a-z0-9_.]{0,63}$'", name=op.f("analytics_event_type_format_check")),
        sa.CheckConstraint("jsonb_typeof(properties) = 'object'", name=op.f("analytics_properties_object_check")),
        sa.CheckConstraint("country ~ '^[A-Z]{2}$'", name=op.f("analytics_country_format_check")),
        sa.CheckConstraint(f"device IN ({_DEVICES})", name=op.f("analytics_device_valid_check")),
        comment="Product analytics events (plays, skips, searches); the largest table, partitioned later by created_at",
    )
    op.create_index(op.f("analytics_user_id_idx"), "analytics", ["user_id"])
    op.create_index(op.f("analytics_track_id_idx"), "analytics", ["track_id"])
    op.create_index(op.f("analytics_created_at_idx"), "analytics", ["created_at"], postgresql_using="brin")

    op.create_table(
        "event_logs",
        _id(),
        sa.Column("level", sa.Text, nullable=False, server_default=sa.text("'info'"),
                  comment="debug, info, warning, error or critical"),
        sa.Column("source", sa.Text, nullable=False, comment="Component that logged it (api, worker, scheduler, db)"),
        sa.Column("event_type", sa.Text, nullable=False, comment="What happened, a lower-case dotted name"),
        sa.Column("message", sa.Text, nullable=True, comment="Human-readable message; no personal data"),
        _jsonb("details", "Structured details as a JSON object"),
        sa.Column("user_id", sa.BigInteger, nullable=True,
                  comment="The user whose request it was, if any; SET NULL: logs are kept, anonymised, after erasure"),
        sa.Column("request_id", sa.Text, nullable=True, comment="Request or trace id, to correlate entries"),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("event_logs_pkey")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL", name=op.f("event_logs_user_id_fkey")),
        sa.CheckConstraint("level IN ('debug', 'info', 'warning', 'error', 'critical')",
                           name=op.f("event_logs_level_valid_check")),
        sa.CheckConstraint("source ~ '^[a-z][a-z0-9_.-]{0,63}$'", name=op.f("event_logs_source_format_check")),
        sa.CheckConstraint("event_type ~ '^[a-z][a-z0-9_.]{0,63}$'", name=op.f("event_logs_event_type_format_check")),
        sa.CheckConstraint("jsonb_typeof(details) = 'object'", name=op.f("event_logs_details_object_check")),
        comment="Application and system events (errors, jobs, deployments)",
    )
    op.create_index(op.f("event_logs_user_id_idx"), "event_logs", ["user_id"])
    op.create_index(op.f("event_logs_created_at_idx"), "event_logs", ["created_at"], postgresql_using="brin")

    op.create_table(
        "audit_log",
        _id(),
        sa.Column("entity_type", sa.Text, nullable=False,
                  comment="Kind of row changed: " + _ENTITY_TYPES.replace("'", "")),
        sa.Column("entity_id", sa.BigInteger, nullable=False, comment="id of the changed row; no foreign key"),
        sa.Column("action", sa.Text, nullable=False, comment="insert, update or delete"),
        sa.Column("actor", sa.Text, nullable=False,
                  comment="Who changed it: the agentdb.actor setting of the session, else the database role"),
        sa.Column("changed_columns", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]"),
                  comment="Columns whose value differs between old and new (all non-NULL ones for insert "
                  "and delete)"),
        sa.Column("old_values", pg.JSONB, nullable=True, comment="The row before the change; NULL for insert"),
        sa.Column("new_values", pg.JSONB, nullable=True, comment="The row after the change; NULL for delete"),
        sa.Column("subject_user_id", sa.BigInteger, nullable=True,
                  comment="The user whose personal data the row holds, for erasure; no foreign key, "
                  "it outlives the user"),
        sa.Column("transaction_id", sa.BigInteger, nullable=False,
                  comment="txid_current() of the changing transaction, to group changes"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
                  comment="When the change was made (start of its transaction)"),
        sa.PrimaryKeyConstraint("id", name=op.f("audit_log_pkey")),
        sa.CheckConstraint(f"entity_type IN ({_ENTITY_TYPES})", name=op.f("audit_log_entity_type_valid_check")),
        sa.CheckConstraint("action IN ('insert', 'update', 'delete')", name=op.f("audit_log_action_valid_check")),
        sa.CheckConstraint(
            "(old_values IS NULL) = (action = 'insert') AND (new_values IS NULL) = (action = 'delete')",
            name=op.f("audit_log_values_match_action_check"),
        ),
        comment="Who changed what and when, written by the audit_row_change trigger; secrets are never copied",
    )
    op.create_index(op.f("audit_log_entity_type_entity_id_idx"), "audit_log", ["entity_type", "entity_id"])
    op.create_index(op.f("audit_log_subject_user_id_idx"), "audit_log", ["subject_user_id"],
                    postgresql_where=sa.text("subject_user_id IS NOT NULL"))
    op.create_index(op.f("audit_log_transaction_id_idx"), "audit_log", ["transaction_id"])
    op.create_index(op.f("audit_log_created_at_idx"), "audit_log", ["created_at"], postgresql_using="brin")

    op.create_table(
        "consent",
        _id(),
        sa.Column("user_id", sa.BigInteger, nullable=False,
                  comment="Whose consent; CASCADE: erased with the account (its history stays in audit_log)"),
        sa.Column("purpose", sa.Text, nullable=False, comment="What it is for: " + _PURPOSES.replace("'", "")),
        sa.Column("granted", sa.Boolean, nullable=False, comment="Whether consent is currently given"),
        sa.Column("policy_version", sa.Text, nullable=False,
                  comment="Version of the privacy policy the user answered, e.g. 2026-05 or 3.1"),
        sa.Column("source", sa.Text, nullable=False, comment="Where it was answered: " + _SOURCES.replace("'", "")),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=True,
                  comment="When it was last granted; set by the consent_track_times trigger"),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True,
                  comment="When it was revoked; set by the consent_track_times trigger, NULL while granted"),
        _created_at(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
                  comment="When the row last changed; maintained by the set_updated_at trigger"),
        sa.PrimaryKeyConstraint("id", name=op.f("consent_pkey")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE", name=op.f("consent_user_id_fkey")),
        sa.UniqueConstraint("user_id", "purpose", name=op.f("consent_user_id_purpose_key")),
        sa.CheckConstraint(f"purpose IN ({_PURPOSES})", name=op.f("consent_purpose_valid_check")),
        sa.CheckConstraint(f"source IN ({_SOURCES})", name=op.f("consent_source_valid_check")),
        sa.CheckConstraint("policy_version ~ '^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$'",
                           name=op.f("consent_policy_version_format_check")),
        sa.CheckConstraint("NOT granted OR (granted_at IS NOT NULL AND revoked_at IS NULL)",
                           name=op.f("consent_granted_times_check")),
        sa.CheckConstraint("revoked_at IS NULL OR (granted_at IS NOT NULL AND revoked_at >= granted_at)",
                           name=op.f("consent_revoked_after_granted_check")),
        comment="The current consent of each user per purpose; its history is in audit_log",
    )

    op.execute(_CONSENT_TRACK_TIMES)
    op.execute(
        "COMMENT ON FUNCTION public.consent_track_times() IS "
        "'Trigger function: stamps consent.granted_at when granted and revoked_at when revoked'"
    )
    op.execute(
        "CREATE TRIGGER consent_track_times BEFORE INSERT OR UPDATE ON public.consent "
        "FOR EACH ROW EXECUTE FUNCTION public.consent_track_times()"
    )
    op.execute(
        "CREATE TRIGGER consent_set_updated_at BEFORE UPDATE ON public.consent "
        "FOR EACH ROW EXECUTE FUNCTION public.set_updated_at()"
    )

    op.execute(_AUDIT_ROW_CHANGE)
    op.execute(
        "COMMENT ON FUNCTION public.audit_row_change() IS "
        "'Trigger function: writes one audit_log row per changed row. "
        "Arguments: entity_type, subject user column (or empty), columns never copied'"
    )
    for table, arguments in _AUDITED.items():
        literals = ", ".join("'" + argument + "'" for argument in arguments)
        op.execute(
            f"CREATE TRIGGER {table}_audit AFTER INSERT OR UPDATE OR DELETE ON public.{table} "
            f"FOR EACH ROW EXECUTE FUNCTION public.audit_row_change({literals})"
        )

    _install_guard()
    _install_access()


def downgrade() -> None:
    _uninstall_access()
    _uninstall_guard()
    for table in _AUDITED:
        op.execute(f"DROP TRIGGER {table}_audit ON public.{table}")
    op.drop_table("consent")
    op.drop_table("audit_log")
    op.drop_table("event_logs")
    op.drop_table("analytics")
    op.execute("DROP FUNCTION public.audit_row_change()")
    op.execute("DROP FUNCTION public.consent_track_times()")


if __name__ == "__main__":
    from agentdb.runtime.script import main

    main(__file__)
