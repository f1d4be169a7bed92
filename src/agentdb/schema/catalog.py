"""Migration 002: the Spotify catalogue, albums, tracks, credits and playlists.

Catalogue rows are not personal data; playlists are (they belong to a user).
Foreign keys between catalogue tables are ``RESTRICT`` where a delete would
silently lose links others depend on, ``CASCADE`` where the child is a part of
its parent (a credit of a track, a translation of a title, an entry of a
playlist).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from agentdb.schema._base import created_at, id_column, metadata, updated_at
from agentdb.schema._pii import Category as C
from agentdb.schema._pii import Erasure as E
from agentdb.schema._pii import not_personal, personal

__all__ = [
    "CREDIT_ROLES",
    "album_translations",
    "albums",
    "playlist_tracks",
    "playlists",
    "track_artists",
    "track_translations",
    "tracks",
]

ENUM = "a value from a fixed list"
ADDED_TO_OTHERS = ("goes with the owner's playlist; in another person's playlist the entry stays, anonymous once "
                   "added_by_user_id is cleared")

#: Roles a credit can have; a CHECK constraint, not an enum type, so adding one is a one-line migration.
CREDIT_ROLES = ("main", "featured", "producer", "composer", "lyricist", "remixer", "performer", "mixer")

SPOTIFY_ID_CHECK = "~ '^[0-9A-Za-z]{22}$'"
LOCALE_CHECK = "locale ~ '^[a-z]{2,3}(-[A-Z]{2})?$'"


def markets_check(column: str) -> str:
    """Every element an ISO 3166-1 alpha-2 code, no NULL element, at most 250 of them.

    The joined string must be ``XX,YY,...`` *and* exactly ``3n - 1`` long, which
    rules out an element that itself contains a comma (``'DE,FR'``) or is empty.
    """
    return (
        f"array_position({column}, NULL) IS NULL "
        f"AND array_to_string({column}, ',') ~ '^([A-Z]{{2}}(,[A-Z]{{2}})*)?$' "
        f"AND length(array_to_string({column}, ',')) = greatest(3 * cardinality({column}) - 1, 0) "
        f"AND cardinality({column}) <= 250"
    )


def markets_column() -> sa.Column[Any]:
    return sa.Column(
        "available_markets", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]"),
        comment="ISO 3166-1 alpha-2 codes of the countries where Spotify offers it; empty when unknown",
    )


albums = sa.Table(
    "albums",
    metadata,
    id_column(),
    sa.Column("spotify_album_id", sa.Text, nullable=True, comment="Spotify album id (22 base-62 characters)"),
    sa.Column("title", sa.Text, nullable=False, comment="Title in its original language"),
    sa.Column(
        "album_type", sa.Text, nullable=False, server_default=sa.text("'album'"),
        comment="Spotify album type: album, single, compilation or ep",
    ),
    sa.Column("upc", sa.Text, nullable=True, comment="Universal Product Code: 12 digits (UPC-A) or 13 (EAN-13)"),
    sa.Column("label", sa.Text, nullable=True, comment="Record label"),
    sa.Column(
        "release_date", sa.Date, nullable=True,
        comment="Release date; only as precise as release_date_precision says (the rest is 01)",
    ),
    sa.Column(
        "release_date_precision", sa.Text, nullable=True,
        comment="How precise release_date is, as Spotify gives it: day, month or year",
    ),
    sa.Column("total_tracks", sa.SmallInteger, nullable=True, comment="Number of tracks on the album"),
    sa.Column("popularity", sa.SmallInteger, nullable=True, comment="Spotify popularity, 0 to 100"),
    markets_column(),
    created_at(),
    updated_at(),
    sa.UniqueConstraint("spotify_album_id"),
    sa.UniqueConstraint("upc"),
    sa.CheckConstraint("spotify_album_id " + SPOTIFY_ID_CHECK, name="spotify_album_id_format"),
    sa.CheckConstraint("length(btrim(title)) BETWEEN 1 AND 500", name="title_length"),
    sa.CheckConstraint("album_type IN ('album', 'single', 'compilation', 'ep')", name="album_type_valid"),
    sa.CheckConstraint("upc ~ '^[0-9]{12,13}$'", name="upc_format"),
    sa.CheckConstraint(
        "(release_date IS NULL) = (release_date_precision IS NULL)", name="release_date_precision_present",
    ),
    sa.CheckConstraint(
        "release_date_precision = 'day' "
        "OR (release_date_precision = 'month' AND extract(day FROM release_date) = 1) "
        "OR (release_date_precision = 'year' AND extract(day FROM release_date) = 1 "
        "AND extract(month FROM release_date) = 1)",
        name="release_date_precision_valid",
    ),
    sa.CheckConstraint("total_tracks >= 0", name="total_tracks_nonnegative"),
    sa.CheckConstraint("popularity BETWEEN 0 AND 100", name="popularity_range"),
    sa.CheckConstraint(markets_check("available_markets"), name="available_markets_format"),
    sa.Index(None, "available_markets", postgresql_using="gin"),
    comment="Albums, singles and compilations of the Spotify catalogue",
)

tracks = sa.Table(
    "tracks",
    metadata,
    id_column(),
    sa.Column("spotify_track_id", sa.Text, nullable=True, comment="Spotify track id (22 base-62 characters)"),
    sa.Column(
        "album_id", sa.BigInteger, sa.ForeignKey("albums.id", ondelete="RESTRICT"), nullable=True,
        comment="The album the track appears on; RESTRICT: an album is deleted only after its tracks",
    ),
    sa.Column("title", sa.Text, nullable=False, comment="Title in its original language"),
    sa.Column(
        "isrc", sa.Text, nullable=True,
        comment="International Standard Recording Code (CC-XXX-YY-NNNNN, stored without dashes); "
        "not unique: the same recording appears on several releases",
    ),
    sa.Column("disc_number", sa.SmallInteger, nullable=False, server_default=sa.text("1"),
              comment="Disc of the album, from 1"),
    sa.Column("track_number", sa.SmallInteger, nullable=True, comment="Position on the disc, from 1"),
    sa.Column("duration_ms", sa.Integer, nullable=False, comment="Length in milliseconds, 1 ms to 24 h"),
    sa.Column("explicit", sa.Boolean, nullable=False, server_default=sa.false(),
              comment="Whether the track has explicit lyrics"),
    sa.Column("popularity", sa.SmallInteger, nullable=True, comment="Spotify popularity, 0 to 100"),
    sa.Column("language", sa.Text, nullable=True, comment="Language of the lyrics, ISO 639 code (en, de, fr)"),
    markets_column(),
    created_at(),
    updated_at(),
    sa.UniqueConstraint("spotify_track_id"),
    sa.CheckConstraint("spotify_track_id " + SPOTIFY_ID_CHECK, name="spotify_track_id_format"),
    sa.CheckConstraint("length(btrim(title)) BETWEEN 1 AND 500", name="title_length"),
    sa.CheckConstraint("isrc ~ '^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$'", name="isrc_format"),
    sa.CheckConstraint("disc_number >= 1", name="disc_number_positive"),
    sa.CheckConstraint("track_number >= 1", name="track_number_positive"),
    sa.CheckConstraint("duration_ms BETWEEN 1 AND 86400000", name="duration_ms_range"),
    sa.CheckConstraint("popularity BETWEEN 0 AND 100", name="popularity_range"),
    sa.CheckConstraint("language ~ '^[a-z]{2,3}$'", name="language_format"),
    sa.CheckConstraint(markets_check("available_markets"), name="available_markets_format"),
    sa.Index(None, "album_id"),
    sa.Index(None, "isrc"),
    sa.Index(None, "available_markets", postgresql_using="gin"),
    comment="Recordings of the Spotify catalogue",
)

track_artists = sa.Table(
    "track_artists",
    metadata,
    id_column(),
    sa.Column(
        "track_id", sa.BigInteger, sa.ForeignKey("tracks.id", ondelete="CASCADE"), nullable=False,
        comment="The credited track; CASCADE: a credit is part of its track",
    ),
    sa.Column(
        "artist_id", sa.BigInteger, sa.ForeignKey("artists.id", ondelete="RESTRICT"), nullable=False,
        comment="The credited artist; RESTRICT: an artist with credits is not deleted by accident",
    ),
    sa.Column("role", sa.Text, nullable=False, server_default=sa.text("'main'"),
              info=not_personal(ENUM), comment="What the artist did: " + ", ".join(CREDIT_ROLES)),
    sa.Column("position", sa.SmallInteger, nullable=False, server_default=sa.text("1"),
              info=not_personal("order of a credit in the catalogue"),
              comment="Order of the credit as displayed, from 1"),
    created_at(),
    sa.UniqueConstraint("track_id", "artist_id", "role"),
    sa.CheckConstraint("role IN (" + ", ".join(f"'{r}'" for r in CREDIT_ROLES) + ")", name="role_valid"),
    sa.CheckConstraint("position >= 1", name="position_positive"),
    sa.Index(None, "artist_id"),
    comment="Credits: which artist took part in which track, and in which role",
)


def _translations(name: str, parent: str, what: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        id_column(),
        sa.Column(
            f"{parent}_id", sa.BigInteger, sa.ForeignKey(f"{parent}s.id", ondelete="CASCADE"), nullable=False,
            comment=f"The translated {parent}; CASCADE: a translation is part of its {parent}",
        ),
        sa.Column("locale", sa.Text, nullable=False, comment="Language of the title, as a BCP 47 tag (en, de-DE)"),
        sa.Column("title", sa.Text, nullable=False, comment="The title in that language"),
        created_at(),
        updated_at(),
        sa.UniqueConstraint(f"{parent}_id", "locale"),
        sa.CheckConstraint(LOCALE_CHECK, name="locale_format"),
        sa.CheckConstraint("length(btrim(title)) BETWEEN 1 AND 500", name="title_length"),
        comment=f"The title of {what} in other languages, one row per locale",
    )


album_translations = _translations("album_translations", "album", "an album")
track_translations = _translations("track_translations", "track", "a track")

playlists = sa.Table(
    "playlists",
    metadata,
    id_column(),
    sa.Column(
        "owner_user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
        comment="The user who owns the playlist; CASCADE: a user's playlists are erased with the account",
    ),
    sa.Column("spotify_playlist_id", sa.Text, nullable=True,
              info=personal(C.IDENTIFIER, E.DELETE_ROW),
              comment="Spotify playlist id (22 base-62 characters), once synced"),
    sa.Column("name", sa.Text, nullable=False, info=personal(C.FREE_TEXT, E.DELETE_ROW), comment="Playlist name"),
    sa.Column("description", sa.Text, nullable=True,
              info=personal(C.FREE_TEXT, E.DELETE_ROW), comment="Playlist description"),
    sa.Column("is_public", sa.Boolean, nullable=False, server_default=sa.false(),
              info=personal(C.PREFERENCE, E.DELETE_ROW, analyst=True),
              comment="Whether other users can see the playlist"),
    sa.Column("collaborative", sa.Boolean, nullable=False, server_default=sa.false(),
              info=personal(C.PREFERENCE, E.DELETE_ROW, analyst=True), comment="Whether other users can add tracks"),
    created_at(),
    updated_at(),
    sa.UniqueConstraint("spotify_playlist_id"),
    sa.CheckConstraint("spotify_playlist_id " + SPOTIFY_ID_CHECK, name="spotify_playlist_id_format"),
    sa.CheckConstraint("length(btrim(name)) BETWEEN 1 AND 200", name="name_length"),
    sa.CheckConstraint("length(description) <= 2000", name="description_length"),
    sa.CheckConstraint("NOT (is_public AND collaborative)", name="collaborative_not_public"),
    sa.Index(None, "owner_user_id"),
    comment="Playlists of the users, synced with Spotify or created by the agent",
)

playlist_tracks = sa.Table(
    "playlist_tracks",
    metadata,
    id_column(),
    sa.Column(
        "playlist_id", sa.BigInteger, sa.ForeignKey("playlists.id", ondelete="CASCADE"), nullable=False,
        comment="The playlist; CASCADE: an entry is part of its playlist",
    ),
    sa.Column(
        "track_id", sa.BigInteger, sa.ForeignKey("tracks.id", ondelete="RESTRICT"), nullable=False,
        comment="The track; RESTRICT: a track that is in playlists is not deleted from the catalogue",
    ),
    sa.Column("position", sa.Integer, nullable=False, info=not_personal("an order within a playlist"),
              comment="Position in the playlist, from 0"),
    sa.Column(
        "added_by_user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True,
        comment="Who added the track; SET NULL: the entry stays in the owner's playlist when that user is erased",
    ),
    sa.Column("added_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
              info=personal(C.BEHAVIOURAL, E.KEEP, ADDED_TO_OTHERS, analyst=True), comment="When the track was added"),
    sa.UniqueConstraint("playlist_id", "position", deferrable=True, initially="IMMEDIATE"),
    sa.CheckConstraint("position >= 0", name="position_nonnegative"),
    sa.Index(None, "track_id"),
    sa.Index(None, "added_by_user_id"),
    comment="The ordered tracks of a playlist; a track may appear more than once",
)
