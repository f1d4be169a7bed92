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

* Security (:mod:`agentdb.access`, :mod:`agentdb.guards`): the group roles
  ``agentdb_app`` (data read/write, no DDL), ``agentdb_readonly`` and
  ``agentdb_analyst`` (column grants generated from the personal-data
  registry), created only if missing (roles are cluster-wide) and dropped by
  the downgrade only when agentdb created them and no database uses them any
  more; ``audit_log`` is append-only for them and PUBLIC.  The statement
  trigger ``guard_bulk_change`` refuses an UPDATE or DELETE touching more
  users' rows of ``users``, ``consent`` or ``audit_log`` than
  ``agentdb.bulk_change_limit`` unless the transaction does ``SET LOCAL
  agentdb.allow_bulk_change = on``.

.. warning::
   ``TRUNCATE`` is not audited (row triggers do not fire); do not grant it.

Revision ID: 005
Revises: 004
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from agentdb import access, guards

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

    guards.install(op)
    access.install(op)


def downgrade() -> None:
    access.uninstall(op)
    guards.uninstall(op)
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
