"""Migration 001: the base of the model, users and the artists they manage."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from agentdb.schema._base import created_at, id_column, metadata, updated_at
from agentdb.schema._pii import Category as C
from agentdb.schema._pii import Erasure as E
from agentdb.schema._pii import not_personal, personal

__all__ = ["artists", "users"]

PUBLIC_ARTIST = "public artist profile, catalogue data; the person behind it is linked only by user_id"

users = sa.Table(
    "users",
    metadata,
    id_column(),
    sa.Column("email", sa.Text, nullable=False,
              info=personal(C.CONTACT, E.DELETE_ROW), comment="Login e-mail address, stored in lower case"),
    sa.Column("display_name", sa.Text, nullable=False,
              info=personal(C.IDENTIFIER, E.DELETE_ROW), comment="Name shown to other users"),
    sa.Column("spotify_user_id", sa.Text, nullable=True,
              info=personal(C.IDENTIFIER, E.DELETE_ROW), comment="The user's Spotify account id, once linked"),
    sa.Column("country", sa.Text, nullable=True,
              info=personal(C.LOCATION, E.DELETE_ROW), comment="ISO 3166-1 alpha-2 country code of the account"),
    sa.Column(
        "locale", sa.Text, nullable=False, server_default=sa.text("'en'"),
        info=personal(C.PREFERENCE, E.DELETE_ROW), comment="Preferred language, as a BCP 47 tag (en, de-DE)",
    ),
    sa.Column(
        "status", sa.Text, nullable=False, server_default=sa.text("'active'"),
        info=personal(C.PREFERENCE, E.DELETE_ROW), comment="Account state: active, suspended or deleted",
    ),
    sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True,
              info=personal(C.BEHAVIOURAL, E.DELETE_ROW), comment="Time of the last sign-in"),
    created_at(),
    updated_at(),
    sa.UniqueConstraint("email"),
    sa.UniqueConstraint("spotify_user_id"),
    sa.CheckConstraint("email = lower(email) AND email ~ '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$' "
                       "AND length(email) <= 320", name="email_format"),
    sa.CheckConstraint("length(btrim(display_name)) BETWEEN 1 AND 100", name="display_name_length"),
    sa.CheckConstraint("length(spotify_user_id) BETWEEN 1 AND 128", name="spotify_user_id_length"),
    sa.CheckConstraint("country ~ '^[A-Z]{2}$'", name="country_format"),
    sa.CheckConstraint("locale ~ '^[a-z]{2,3}(-[A-Z]{2})?$'", name="locale_format"),
    sa.CheckConstraint("status IN ('active', 'suspended', 'deleted')", name="status_valid"),
    comment="People who use the Spotify AI Agent",
)

artists = sa.Table(
    "artists",
    metadata,
    id_column(),
    sa.Column(
        "user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True,
        comment="The user who manages this artist profile; kept NULL when that account is deleted",
    ),
    sa.Column("name", sa.Text, nullable=False, info=not_personal(PUBLIC_ARTIST), comment="Artist or band name"),
    sa.Column("spotify_artist_id", sa.Text, nullable=True,
              info=not_personal(PUBLIC_ARTIST), comment="Spotify artist id (22 base-62 characters)"),
    sa.Column(
        "genres", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]"),
        info=not_personal(PUBLIC_ARTIST), comment="Genres, most specific first",
    ),
    sa.Column("country", sa.Text, nullable=True,
              info=not_personal(PUBLIC_ARTIST), comment="ISO 3166-1 alpha-2 country of origin"),
    sa.Column("popularity", sa.SmallInteger, nullable=True,
              info=not_personal(PUBLIC_ARTIST), comment="Spotify popularity, 0 to 100"),
    sa.Column(
        "followers", sa.BigInteger, nullable=False, server_default=sa.text("0"),
        info=not_personal(PUBLIC_ARTIST), comment="Follower count",
    ),
    sa.Column(
        "verified", sa.Boolean, nullable=False, server_default=sa.false(),
        info=not_personal(PUBLIC_ARTIST), comment="Whether the profile is verified",
    ),
    sa.Column("bio", sa.Text, nullable=True,
              info=personal(C.FREE_TEXT, E.KEEP, PUBLIC_ARTIST), comment="Biography shown on the profile"),
    created_at(),
    updated_at(),
    sa.UniqueConstraint("spotify_artist_id"),
    sa.CheckConstraint("length(btrim(name)) BETWEEN 1 AND 200", name="name_length"),
    sa.CheckConstraint("spotify_artist_id ~ '^[0-9A-Za-z]{22}$'", name="spotify_artist_id_format"),
    sa.CheckConstraint("country ~ '^[A-Z]{2}$'", name="country_format"),
    sa.CheckConstraint("popularity BETWEEN 0 AND 100", name="popularity_range"),
    sa.CheckConstraint("followers >= 0", name="followers_nonnegative"),
    sa.CheckConstraint("length(bio) <= 5000", name="bio_length"),
    sa.Index(None, "user_id"),
    comment="Artist profiles: Spotify artists and the artists who use the agent",
)
