"""Migration 004: collaborations, their roles and members, artist matching, and the collaboration history."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from agentdb.schema._base import created_at, id_column, metadata, updated_at
from agentdb.schema._pii import Category as C
from agentdb.schema._pii import Erasure as E
from agentdb.schema._pii import not_personal, personal

__all__ = [
    "COLLABORATION_EVENTS",
    "DEFAULT_ROLES",
    "ROLE_PERMISSIONS",
    "artist_matches",
    "collaboration_history",
    "collaboration_members",
    "collaboration_roles",
    "collaborations",
]

ENUM = "a value from a fixed list"
SHARED_WORK = ("belongs to all members of the collaboration; the creator link is cleared by "
               "created_by_user_id ON DELETE SET NULL")

ROLE_PERMISSIONS = ("view", "comment", "edit", "invite", "publish", "manage")
#: Rows inserted by migration 004; more can be added at run time.
DEFAULT_ROLES = ("owner", "producer", "songwriter", "vocalist", "instrumentalist", "mixer", "featured_artist")
COLLABORATION_EVENTS = (
    "created", "updated", "status_changed", "member_added", "member_removed", "role_changed", "file_shared", "comment",
)

collaborations = sa.Table(
    "collaborations",
    metadata,
    id_column(),
    sa.Column("title", sa.Text, nullable=False,
              info=personal(C.FREE_TEXT, E.KEEP, SHARED_WORK), comment="Name of the project"),
    sa.Column("description", sa.Text, nullable=True,
              info=personal(C.FREE_TEXT, E.KEEP, SHARED_WORK), comment="What the collaboration is about"),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'proposed'"),
              info=not_personal(ENUM), comment="proposed, active, completed or cancelled"),
    sa.Column(
        "created_by_user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True,
        comment="Who started it; SET NULL: the collaboration belongs to all members and outlives its creator",
    ),
    created_at(),
    updated_at(),
    sa.CheckConstraint("length(btrim(title)) BETWEEN 1 AND 200", name="title_length"),
    sa.CheckConstraint("length(description) <= 5000", name="description_length"),
    sa.CheckConstraint("status IN ('proposed', 'active', 'completed', 'cancelled')", name="status_valid"),
    sa.Index(None, "created_by_user_id"),
    comment="Music projects that artists and users work on together",
)

collaboration_roles = sa.Table(
    "collaboration_roles",
    metadata,
    id_column(),
    sa.Column("name", sa.Text, nullable=False, comment="Role name, a lower-case slug (producer, songwriter)"),
    sa.Column("description", sa.Text, nullable=True, comment="What a member with this role does"),
    sa.Column(
        "permissions", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{view}'::text[]"),
        comment="What the role may do, a subset of: " + ", ".join(ROLE_PERMISSIONS),
    ),
    created_at(),
    updated_at(),
    sa.UniqueConstraint("name"),
    sa.CheckConstraint("name ~ '^[a-z][a-z_]{1,49}$'", name="name_format"),
    sa.CheckConstraint(
        "permissions <@ ARRAY[" + ", ".join(f"'{p}'" for p in ROLE_PERMISSIONS) + "]::text[]",
        name="permissions_valid",
    ),
    comment="Lookup table of the roles a collaboration member can have",
)

collaboration_members = sa.Table(
    "collaboration_members",
    metadata,
    id_column(),
    sa.Column(
        "collaboration_id", sa.BigInteger, sa.ForeignKey("collaborations.id", ondelete="CASCADE"), nullable=False,
        comment="The collaboration; CASCADE: membership is part of the collaboration",
    ),
    sa.Column(
        "artist_id", sa.BigInteger, sa.ForeignKey("artists.id", ondelete="CASCADE"), nullable=True,
        comment="The member when it is an artist; CASCADE: the membership ends with the artist",
    ),
    sa.Column(
        "user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True,
        comment="The member when it is a user; CASCADE: erasing the user ends the membership",
    ),
    sa.Column(
        "role_id", sa.BigInteger, sa.ForeignKey("collaboration_roles.id", ondelete="RESTRICT"), nullable=False,
        comment="The member's role; RESTRICT: a role in use cannot be deleted",
    ),
    sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
              info=personal(C.BEHAVIOURAL, E.DELETE_ROW, analyst=True), comment="When the member joined"),
    sa.Column("left_at", sa.DateTime(timezone=True), nullable=True,
              info=personal(C.BEHAVIOURAL, E.DELETE_ROW, analyst=True),
              comment="When the member left; NULL while active"),
    created_at(),
    updated_at(),
    sa.UniqueConstraint("collaboration_id", "artist_id"),
    sa.UniqueConstraint("collaboration_id", "user_id"),
    sa.CheckConstraint("num_nonnulls(artist_id, user_id) = 1", name="one_member"),
    sa.CheckConstraint("left_at >= joined_at", name="left_after_joined"),
    sa.Index(None, "artist_id"),
    sa.Index(None, "user_id"),
    sa.Index(None, "role_id"),
    comment="Members of a collaboration: an artist or a user, each with one role",
)

artist_matches = sa.Table(
    "artist_matches",
    metadata,
    id_column(),
    sa.Column(
        "artist_id", sa.BigInteger, sa.ForeignKey("artists.id", ondelete="CASCADE"), nullable=False,
        comment="One artist of the pair; CASCADE: a match means nothing without both artists",
    ),
    sa.Column(
        "matched_artist_id", sa.BigInteger, sa.ForeignKey("artists.id", ondelete="CASCADE"), nullable=False,
        comment="The other artist of the pair; CASCADE: a match means nothing without both artists",
    ),
    sa.Column("score", sa.Double, nullable=False, info=not_personal("a model's score of two artist profiles"),
              comment="Match score, 0 to 1"),
    sa.Column(
        "model_version_id", sa.BigInteger, sa.ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=True,
        comment="The model version that proposed the match, NULL if made by hand; RESTRICT: provenance is kept",
    ),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'suggested'"),
              info=not_personal(ENUM), comment="suggested, accepted, declined or expired"),
    created_at(),
    updated_at(),
    sa.CheckConstraint("artist_id <> matched_artist_id", name="not_self"),
    sa.CheckConstraint("score BETWEEN 0 AND 1", name="score_range"),
    sa.CheckConstraint("status IN ('suggested', 'accepted', 'declined', 'expired')", name="status_valid"),
    sa.Index(None, "artist_id"),
    sa.Index(None, "matched_artist_id"),
    sa.Index(None, "model_version_id"),
    comment="Artist pairs proposed for a collaboration; a pair appears once, in either order",
)

#: A pair is unordered: (a, b) and (b, a) are the same match.
sa.Index(
    "artist_matches_pair_key",
    sa.func.least(artist_matches.c.artist_id, artist_matches.c.matched_artist_id),
    sa.func.greatest(artist_matches.c.artist_id, artist_matches.c.matched_artist_id),
    unique=True,
)

collaboration_history = sa.Table(
    "collaboration_history",
    metadata,
    id_column(),
    sa.Column(
        "collaboration_id", sa.BigInteger, sa.ForeignKey("collaborations.id", ondelete="CASCADE"), nullable=False,
        comment="The collaboration; CASCADE: the history goes only when the collaboration itself is deleted",
    ),
    sa.Column(
        "actor_user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True,
        comment="Who did it; SET NULL: the entry is kept, anonymised, when that user is erased",
    ),
    sa.Column("event_type", sa.Text, nullable=False,
              info=not_personal(ENUM), comment="What happened: " + ", ".join(COLLABORATION_EVENTS)),
    sa.Column(
        "details", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"),
        info=not_personal("ids, not names, by contract; the actor link is actor_user_id"),
        comment="Event details as a JSON object; ids, not names, so erasure needs no rewrite",
    ),
    created_at(),
    sa.CheckConstraint(
        "event_type IN (" + ", ".join(f"'{e}'" for e in COLLABORATION_EVENTS) + ")", name="event_type_valid",
    ),
    sa.CheckConstraint("jsonb_typeof(details) = 'object'", name="details_object"),
    sa.Index(None, "collaboration_id", "created_at"),
    sa.Index(None, "actor_user_id"),
    comment="Append-only log of what happened in a collaboration; only referential actions change it",
)
