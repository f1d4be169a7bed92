"""Migration 002: the catalogue's constraints accept Spotify's data and reject malformed rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import psycopg
import pytest
from _model_db import connect, insert, make_artist, make_track, make_user, rejected, spotify_id
from psycopg import errors


@pytest.fixture
def db(migrated_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with connect(migrated_url) as conn:
        yield conn


def test_valid_album_track_credits_and_playlist_are_accepted(db: psycopg.Connection[Any]) -> None:
    album = insert(db, "albums", spotify_album_id=spotify_id(), title="Discovery", upc="724384960650",
                   release_date=date(2001, 3, 12), release_date_precision="day", total_tracks=14,
                   popularity=80, available_markets=["DE", "FR", "US"])
    track = make_track(db, spotify_track_id=spotify_id(), album_id=album, isrc="GBDUW0000059",
                       duration_ms=320_357, popularity=85, track_number=1, available_markets=["DE"])
    artist = make_artist(db)
    insert(db, "track_artists", track_id=track, artist_id=artist, role="main")
    insert(db, "track_artists", track_id=track, artist_id=artist, role="producer", position=2)
    insert(db, "track_translations", track_id=track, locale="de-DE", title="Noch einmal")
    user = make_user(db)
    playlist = insert(db, "playlists", owner_user_id=user, name="Focus", spotify_playlist_id=spotify_id())
    insert(db, "playlist_tracks", playlist_id=playlist, track_id=track, position=0, added_by_user_id=user)
    insert(db, "playlist_tracks", playlist_id=playlist, track_id=track, position=1)

    row = db.execute("SELECT count(*) FROM tracks WHERE available_markets @> '{DE}'").fetchone()
    assert row == (1,)


@pytest.mark.parametrize("isrc", ["us-rc1-76-07839", "USRC17607839X", "usrc17607839", "USRC1760783", "US-RC17607839"])
def test_malformed_isrc_is_rejected(db: psycopg.Connection[Any], isrc: str) -> None:
    with rejected(errors.CheckViolation, "tracks_isrc_format_check"):
        make_track(db, isrc=isrc)


def test_same_isrc_on_two_releases_is_accepted(db: psycopg.Connection[Any]) -> None:
    make_track(db, isrc="USRC17607839")
    make_track(db, isrc="USRC17607839")


@pytest.mark.parametrize("upc", ["12345678901", "12345678901234", "12345678901A", " 123456789012"])
def test_malformed_upc_is_rejected(db: psycopg.Connection[Any], upc: str) -> None:
    with rejected(errors.CheckViolation, "albums_upc_format_check"):
        insert(db, "albums", title="X", upc=upc)


def test_upc_of_12_or_13_digits_is_accepted_once(db: psycopg.Connection[Any]) -> None:
    insert(db, "albums", title="UPC-A", upc="036000291452")
    insert(db, "albums", title="EAN-13", upc="4006381333931")
    with rejected(errors.UniqueViolation, "albums_upc_key"):
        insert(db, "albums", title="Again", upc="036000291452")


def test_spotify_ids_must_be_22_base62_characters_and_unique(db: psycopg.Connection[Any]) -> None:
    with rejected(errors.CheckViolation, "tracks_spotify_track_id_format_check"):
        make_track(db, spotify_track_id="spotify:track:4uLU6hMC")
    with rejected(errors.CheckViolation, "albums_spotify_album_id_format_check"):
        insert(db, "albums", title="X", spotify_album_id="0" * 21)
    known = spotify_id()
    make_track(db, spotify_track_id=known)
    with rejected(errors.UniqueViolation, "tracks_spotify_track_id_key"):
        make_track(db, spotify_track_id=known)


@pytest.mark.parametrize(("column", "value", "constraint"), [
    ("duration_ms", 0, "tracks_duration_ms_range_check"),
    ("duration_ms", 86_400_001, "tracks_duration_ms_range_check"),
    ("popularity", -1, "tracks_popularity_range_check"),
    ("popularity", 101, "tracks_popularity_range_check"),
    ("track_number", 0, "tracks_track_number_positive_check"),
])
def test_track_numbers_out_of_range_are_rejected(
    db: psycopg.Connection[Any], column: str, value: int, constraint: str,
) -> None:
    with rejected(errors.CheckViolation, constraint):
        make_track(db, **{column: value})


@pytest.mark.parametrize(("released", "precision"), [
    (date(2019, 1, 1), "year"), (date(2019, 5, 1), "month"), (date(2019, 5, 17), "day"),
])
def test_release_date_padded_to_its_precision_is_accepted(
    db: psycopg.Connection[Any], released: date, precision: str,
) -> None:
    insert(db, "albums", title="X", release_date=released, release_date_precision=precision)


@pytest.mark.parametrize(("released", "precision", "constraint"), [
    (date(2019, 5, 1), "year", "albums_release_date_precision_valid_check"),
    (date(2019, 5, 17), "month", "albums_release_date_precision_valid_check"),
    (date(2019, 5, 17), "week", "albums_release_date_precision_valid_check"),
    (date(2019, 5, 17), None, "albums_release_date_precision_present_check"),
    (None, "day", "albums_release_date_precision_present_check"),
])
def test_release_date_inconsistent_with_precision_is_rejected(
    db: psycopg.Connection[Any], released: date | None, precision: str | None, constraint: str,
) -> None:
    with rejected(errors.CheckViolation, constraint):
        insert(db, "albums", title="X", release_date=released, release_date_precision=precision)


@pytest.mark.parametrize("markets", [["de"], ["DEU"], ["DE", None], ["D"], ["DE,FR"], [""], ["DE", ""]])
def test_market_that_is_not_an_alpha2_code_is_rejected(db: psycopg.Connection[Any], markets: list[str]) -> None:
    with rejected(errors.CheckViolation, "tracks_available_markets_format_check"):
        make_track(db, available_markets=markets)
    with rejected(errors.CheckViolation, "albums_available_markets_format_check"):
        insert(db, "albums", title="X", available_markets=markets)


def test_duplicate_playlist_position_is_rejected(db: psycopg.Connection[Any]) -> None:
    track = make_track(db)
    playlist = insert(db, "playlists", owner_user_id=make_user(db), name="Mix")
    insert(db, "playlist_tracks", playlist_id=playlist, track_id=track, position=0)
    with rejected(errors.UniqueViolation, "playlist_tracks_playlist_id_position_key"):
        insert(db, "playlist_tracks", playlist_id=playlist, track_id=track, position=0)
    with rejected(errors.CheckViolation, "playlist_tracks_position_nonnegative_check"):
        insert(db, "playlist_tracks", playlist_id=playlist, track_id=track, position=-1)


def test_playlist_positions_can_be_shifted_in_one_deferred_statement(db: psycopg.Connection[Any]) -> None:
    playlist = insert(db, "playlists", owner_user_id=make_user(db), name="Mix")
    for position in range(3):
        insert(db, "playlist_tracks", playlist_id=playlist, track_id=make_track(db), position=position)
    with db.transaction():
        db.execute("SET CONSTRAINTS playlist_tracks_playlist_id_position_key DEFERRED")
        db.execute("UPDATE playlist_tracks SET position = position + 1 WHERE playlist_id = %s", [playlist])
    rows = db.execute("SELECT position FROM playlist_tracks WHERE playlist_id = %s ORDER BY 1", [playlist]).fetchall()
    assert rows == [(1,), (2,), (3,)]


def test_credit_role_must_be_known_and_unique_per_track_and_artist(db: psycopg.Connection[Any]) -> None:
    track, artist = make_track(db), make_artist(db)
    with rejected(errors.CheckViolation, "track_artists_role_valid_check"):
        insert(db, "track_artists", track_id=track, artist_id=artist, role="drummer-ish")
    insert(db, "track_artists", track_id=track, artist_id=artist, role="featured")
    with rejected(errors.UniqueViolation, "track_artists_track_id_artist_id_role_key"):
        insert(db, "track_artists", track_id=track, artist_id=artist, role="featured")


def test_title_translation_is_one_per_locale_with_a_valid_tag(db: psycopg.Connection[Any]) -> None:
    album = insert(db, "albums", title="Homework")
    insert(db, "album_translations", album_id=album, locale="fr", title="Devoirs")
    with rejected(errors.UniqueViolation, "album_translations_album_id_locale_key"):
        insert(db, "album_translations", album_id=album, locale="fr", title="Travail")
    with rejected(errors.CheckViolation, "album_translations_locale_format_check"):
        insert(db, "album_translations", album_id=album, locale="French", title="Devoirs")


def test_erasing_a_user_deletes_their_playlists_and_keeps_entries_they_added_elsewhere(
    db: psycopg.Connection[Any],
) -> None:
    owner, guest = make_user(db), make_user(db)
    track = make_track(db)
    own = insert(db, "playlists", owner_user_id=guest, name="Mine")
    shared = insert(db, "playlists", owner_user_id=owner, name="Shared", collaborative=True)
    insert(db, "playlist_tracks", playlist_id=own, track_id=track, position=0, added_by_user_id=guest)
    entry = insert(db, "playlist_tracks", playlist_id=shared, track_id=track, position=0, added_by_user_id=guest)

    db.execute("DELETE FROM users WHERE id = %s", [guest])

    assert db.execute("SELECT count(*) FROM playlists WHERE id = %s", [own]).fetchone() == (0,)
    assert db.execute("SELECT added_by_user_id FROM playlist_tracks WHERE id = %s", [entry]).fetchone() == (None,)


def test_catalogue_rows_others_depend_on_cannot_be_deleted(db: psycopg.Connection[Any]) -> None:
    album = insert(db, "albums", title="Homework")
    track = make_track(db, album_id=album)
    artist = make_artist(db)
    insert(db, "track_artists", track_id=track, artist_id=artist)
    with rejected(errors.ForeignKeyViolation, "tracks_album_id_fkey"):
        db.execute("DELETE FROM albums WHERE id = %s", [album])
    with rejected(errors.ForeignKeyViolation, "track_artists_artist_id_fkey"):
        db.execute("DELETE FROM artists WHERE id = %s", [artist])
    db.execute("DELETE FROM tracks WHERE id = %s", [track])  # credits go with the track
    assert db.execute("SELECT count(*) FROM track_artists").fetchone() == (0,)


def test_updated_at_is_maintained_on_catalogue_tables(db: psycopg.Connection[Any]) -> None:
    track = make_track(db)
    with db.transaction():
        before = db.execute("SELECT updated_at FROM tracks WHERE id = %s", [track]).fetchone()
    db.execute("UPDATE tracks SET title = 'Renamed' WHERE id = %s", [track])
    after = db.execute("SELECT updated_at FROM tracks WHERE id = %s", [track]).fetchone()
    assert before is not None and after is not None and after[0] > before[0]
