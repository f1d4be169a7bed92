"""One loader per table: each draws its rows deterministically and writes them with COPY."""

from __future__ import annotations

import hashlib
import math
import random
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from agentdb.demo._vocabulary import (
    _ALL_MARKETS,
    _COUNTRIES,
    _DEVICES,
    _EVENTS,
    _FIRST,
    _GENRES,
    _LABELS,
    _LAST,
    _MODELS,
    _PURPOSES,
    _ROLES_FOR_ARTISTS,
    _ROLES_FOR_USERS,
    _SCOPES,
    _SOURCES,
    _TRANSLATION_LOCALES,
    _WORDS,
    _ascii,
    _b62,
    _between,
    _gtin_check,
    _in,
    _title,
    _weighted,
)
from agentdb.demo.plan import ANCHOR, BULK_INDEX_THRESHOLD, DemoPlan, _Sizes

# --------------------------------------------------------------------------------------------- state


@dataclass
class _User:
    id: int
    country: str
    locale: str
    created_at: datetime


@dataclass
class _Artist:
    id: int
    user_id: int | None
    country: str
    popularity: int
    created_at: datetime


@dataclass
class _Track:
    id: int
    album_id: int
    artist_id: int
    popularity: int
    duration_ms: int
    released: date
    created_at: datetime


@dataclass
class _Model:
    id: int
    name: str
    version: str
    status: str
    created_at: datetime


@dataclass
class _Context:
    """What the loaders share: the connection, the plan, and the ids and facts of rows loaded so far."""

    conn: psycopg.Connection[Any]
    plan: DemoPlan
    salt: int = 0
    users: list[_User] = field(default_factory=list)
    artists: list[_Artist] = field(default_factory=list)
    albums: list[tuple[int, date, str, int]] = field(default_factory=list)  # id, released, album_type, n tracks
    album_titles: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    track_titles: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    tracks: list[_Track] = field(default_factory=list)
    playlists: list[tuple[int, int, bool, datetime]] = field(default_factory=list)  # id, owner, collaborative, at
    models: list[_Model] = field(default_factory=list)
    matches: list[tuple[int, int, datetime]] = field(default_factory=list)  # accepted pairs, when
    collaborations: list[tuple[int, int | None, str, datetime]] = field(default_factory=list)
    members: list[tuple[int, int | None, int | None, int, datetime]] = field(default_factory=list)
    roles: dict[str, int] = field(default_factory=dict)
    content_versions: list[tuple[int, int, str, datetime, int]] = field(default_factory=list)

    def rng(self, table: str) -> random.Random:
        return random.Random(f"{self.plan.seed}:{self.salt}:{table}")

    def reserve(self, table: str, n: int) -> list[int]:
        """Take ``n`` ids from the table's identity sequence, so children can point at rows before COPY."""
        if n == 0:
            return []
        rows = self.conn.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", (f"public.{table}", n)
        ).fetchall()
        return [int(r[0]) for r in rows]

    def model(self, name: str, status: str = "production") -> _Model:
        return next(m for m in self.models if m.name == name and m.status == status)

    def copy(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier("public", table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        count = 0
        with self.conn.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count


# --------------------------------------------------------------------------------------------- loaders


def _load_users(ctx: _Context) -> int:
    n = ctx.plan.scale.users
    ids = ctx.reserve("users", n)
    ctx.salt = ids[0]
    rng = ctx.rng("users")
    countries = [c for c, _, _ in _COUNTRIES]
    weights = [w for _, w, _ in _COUNTRIES]
    locales = {c: loc for c, _, loc in _COUNTRIES}
    rows = []
    for uid in ids:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        country = rng.choices(countries, weights)[0]
        locale = locales[country] if rng.random() < 0.8 else locales[country][:2]
        created = _between(rng, ANCHOR - timedelta(days=730), ANCHOR - timedelta(days=2))
        status = rng.choices(("active", "suspended", "deleted"), (95, 4, 1))[0]
        last_login = _between(rng, created, ANCHOR) if status == "active" and rng.random() < 0.9 else None
        updated = last_login or created
        email = f"{_ascii(first)}.{_ascii(last)}.{uid}@{rng.choice(('example.com', 'example.org', 'example.net'))}"
        spotify = _b62(rng, 28).lower() if rng.random() < 0.75 else None
        display = f"{first} {last}" if rng.random() < 0.7 else f"{first} {last[0]}."
        rows.append((uid, email, display, spotify, country, locale, status, last_login, created, updated))
        ctx.users.append(_User(uid, country, locale, created))
    return ctx.copy("users", ("id", "email", "display_name", "spotify_user_id", "country", "locale", "status",
                              "last_login_at", "created_at", "updated_at"), rows)


def _artist_name(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.35:
        return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    if pick < 0.6:
        return "The " + " ".join(w["en"] for w in _title(rng, 2))
    if pick < 0.75:
        return "DJ " + rng.choice(_WORDS)["en"]
    return _in("en", _title(rng, rng.choice((1, 2))))


def _load_artists(ctx: _Context) -> int:
    sizes = _Sizes.of(ctx.plan.scale.users)
    ids = ctx.reserve("artists", sizes.artists)
    rng = ctx.rng("artists")
    managers = rng.sample(ctx.users, k=min(len(ctx.users), max(1, len(ids) // 5)))
    rows = []
    for i, aid in enumerate(ids):
        manager = managers[i] if i < len(managers) else None
        country = manager.country if manager else rng.choices([c for c, _, _ in _COUNTRIES],
                                                               [w for _, w, _ in _COUNTRIES])[0]
        popularity = min(100, int(rng.betavariate(2, 4) * 100))
        followers = int(10 ** (1 + popularity / 100 * 6.5) * rng.uniform(0.5, 1.5))
        genres = rng.sample(_GENRES, rng.randint(1, 3))
        created = manager.created_at + timedelta(hours=rng.randint(1, 240)) if manager else _between(
            rng, ANCHOR - timedelta(days=900), ANCHOR - timedelta(days=30))
        name = _artist_name(rng)
        bio = (f"{name} makes {genres[0]} from {country}." if rng.random() < 0.6 else None)
        verified = popularity > 55 or rng.random() < 0.1
        rows.append((aid, manager.id if manager else None, name, _b62(rng), genres, country, popularity, followers,
                     verified, bio, created, created))
        ctx.artists.append(_Artist(aid, manager.id if manager else None, country, popularity, created))
    return ctx.copy("artists", ("id", "user_id", "name", "spotify_artist_id", "genres", "country", "popularity",
                                "followers", "verified", "bio", "created_at", "updated_at"), rows)


def _release(rng: random.Random) -> tuple[date, str]:
    year = min(2026, int(rng.triangular(1965, 2026, 2024)))
    last = date(2026, 10, 31)
    day = date(year, 1, 1) + timedelta(days=rng.randint(0, 364))
    day = min(day, last)
    if year < 1990 and rng.random() < 0.5:
        return date(year, 1, 1), "year"
    if rng.random() < 0.04:
        return day.replace(day=1), "month"
    return day, "day"


def _markets(rng: random.Random) -> list[str]:
    pick = rng.random()
    if pick < 0.7:
        return list(_ALL_MARKETS)
    if pick < 0.95:
        return sorted(rng.sample(_ALL_MARKETS, rng.randint(1, len(_ALL_MARKETS) - 1)))
    return []


def _load_albums(ctx: _Context) -> int:
    sizes = _Sizes.of(ctx.plan.scale.users)
    ids = ctx.reserve("albums", sizes.albums)
    rng = ctx.rng("albums")
    rows = []
    for aid in ids:
        album_type = rng.choices(("album", "single", "ep", "compilation"), (45, 35, 15, 5))[0]
        n_tracks = {"album": rng.randint(8, 16), "single": rng.randint(1, 3), "ep": rng.randint(4, 6),
                    "compilation": rng.randint(12, 20)}[album_type]
        released, precision = _release(rng)
        title = _title(rng, rng.randint(1, 3))
        digits = "".join(rng.choices(string.digits, k=11 if rng.random() < 0.7 else 12))
        upc = digits + _gtin_check(digits)
        popularity = min(100, max(0, int(rng.gauss(40, 20))))
        created = _between(rng, ANCHOR - timedelta(days=900), ANCHOR - timedelta(days=20))
        rows.append((aid, _b62(rng), _in("en", title), album_type, upc, rng.choice(_LABELS), released, precision,
                     n_tracks, popularity, _markets(rng), created, created))
        ctx.albums.append((aid, released, album_type, n_tracks))
        ctx.album_titles[aid] = title
    return ctx.copy("albums", ("id", "spotify_album_id", "title", "album_type", "upc", "label", "release_date",
                               "release_date_precision", "total_tracks", "popularity", "available_markets",
                               "created_at", "updated_at"), rows)


def _load_tracks(ctx: _Context) -> int:
    rng = ctx.rng("tracks")
    total = sum(a[3] for a in ctx.albums)
    ids = iter(ctx.reserve("tracks", total))
    by_popularity = sorted(ctx.artists, key=lambda a: -a.popularity)
    registrants: dict[int, str] = {}
    rows = []
    album_rows = {a[0]: a for a in ctx.albums}
    for album_id, released, _album_type, n_tracks in ctx.albums:
        artist = by_popularity[min(len(by_popularity) - 1, int(len(by_popularity) * rng.random() ** 1.5))]
        registrant = registrants.setdefault(artist.id, "".join(rng.choices(string.ascii_uppercase + string.digits,
                                                                           k=3)))
        markets = _markets(rng)
        explicit_album = rng.random() < 0.2
        language = {"DE": "de", "FR": "fr", "ES": "es", "MX": "es", "BR": "pt", "JP": "ja", "KR": "ko",
                    "IT": "it", "SE": "sv", "PL": "pl", "NL": "nl"}.get(artist.country, "en")
        discs = 2 if n_tracks >= 18 else 1
        per_disc = math.ceil(n_tracks / discs)
        base_pop = min(100, max(0, artist.popularity + int(rng.gauss(0, 12))))
        for i in range(n_tracks):
            tid = next(ids)
            title = _title(rng, rng.randint(1, 3))
            duration = int(min(900_000, max(45_000, rng.gauss(215_000, 45_000))))
            isrc = (artist.country + registrant + f"{released.year % 100:02d}" + f"{rng.randint(0, 99999):05d}")
            popularity = min(100, max(0, base_pop + int(rng.gauss(0, 8)) - i))
            created = _between(rng, ANCHOR - timedelta(days=900), ANCHOR - timedelta(days=20))
            rows.append((tid, _b62(rng), album_id, _in("en", title), isrc, i // per_disc + 1, i % per_disc + 1,
                         duration, explicit_album and rng.random() < 0.7, popularity, language, markets, created,
                         created))
            ctx.tracks.append(_Track(tid, album_id, artist.id, popularity, duration, album_rows[album_id][1], created))
            ctx.track_titles[tid] = title
    return ctx.copy("tracks", ("id", "spotify_track_id", "album_id", "title", "isrc", "disc_number", "track_number",
                               "duration_ms", "explicit", "popularity", "language", "available_markets",
                               "created_at", "updated_at"), rows)


def _load_track_artists(ctx: _Context) -> int:
    rng = ctx.rng("track_artists")
    artist_ids = [a.id for a in ctx.artists]

    def rows() -> Iterable[Sequence[object]]:
        for track in ctx.tracks:
            credits = [(track.artist_id, "main")]
            if rng.random() < 0.25:
                credits.append((rng.choice(artist_ids), "featured"))
            credits.append((track.artist_id if rng.random() < 0.5 else rng.choice(artist_ids), "composer"))
            if rng.random() < 0.4:
                credits.append((rng.choice(artist_ids), "producer"))
            if rng.random() < 0.05:
                credits.append((rng.choice(artist_ids), "remixer"))
            seen: set[tuple[int, str]] = set()
            position = 0
            for artist_id, role in credits:
                if (artist_id, role) in seen or (role == "featured" and artist_id == track.artist_id):
                    continue
                seen.add((artist_id, role))
                position += 1
                yield (track.id, artist_id, role, position, track.created_at)

    return ctx.copy("track_artists", ("track_id", "artist_id", "role", "position", "created_at"), rows())


def _load_album_translations(ctx: _Context) -> int:
    rng = ctx.rng("album_translations")
    rows = []
    for album_id, title in ctx.album_titles.items():
        if rng.random() < 0.35:
            for locale in rng.sample(_TRANSLATION_LOCALES, rng.randint(1, 3)):
                rows.append((album_id, locale, _in(locale, title), ANCHOR - timedelta(days=rng.randint(1, 300))))
    return ctx.copy("album_translations", ("album_id", "locale", "title", "created_at"), rows)


def _load_track_translations(ctx: _Context) -> int:
    rng = ctx.rng("track_translations")

    def rows() -> Iterable[Sequence[object]]:
        for track_id, title in ctx.track_titles.items():
            if rng.random() < 0.2:
                for locale in rng.sample(_TRANSLATION_LOCALES, rng.randint(1, 2)):
                    yield (track_id, locale, _in(locale, title), ANCHOR - timedelta(days=rng.randint(1, 300)))

    return ctx.copy("track_translations", ("track_id", "locale", "title", "created_at"), rows())


def _load_playlists(ctx: _Context) -> int:
    rng = ctx.rng("playlists")
    owners = [(u, k) for u in ctx.users for k in range(rng.choices((0, 1, 2, 3, 5), (15, 30, 25, 20, 10))[0])]
    ids = ctx.reserve("playlists", len(owners))
    moods = ("Workout", "Focus", "Chill", "Road Trip", "Party", "Sleep", "Cooking", "Rainy Day", "Throwbacks",
             "Discoveries")
    rows = []
    for pid, (user, _k) in zip(ids, owners, strict=True):
        collaborative = rng.random() < 0.1
        public = not collaborative and rng.random() < 0.5
        name = f"{rng.choice(moods)} {rng.choice(_WORDS)['en']}" if rng.random() < 0.7 else rng.choice(moods)
        created = _between(rng, user.created_at, ANCHOR - timedelta(days=1))
        description = f"{name}: picked by the agent for {rng.choice(moods).lower()}." if rng.random() < 0.5 else None
        rows.append((pid, user.id, _b62(rng) if rng.random() < 0.6 else None, name, description, public,
                     collaborative, created, created))
        ctx.playlists.append((pid, user.id, collaborative, created))
    return ctx.copy("playlists", ("id", "owner_user_id", "spotify_playlist_id", "name", "description", "is_public",
                                  "collaborative", "created_at", "updated_at"), rows)


def _load_playlist_tracks(ctx: _Context) -> int:
    rng = ctx.rng("playlist_tracks")
    tracks = sorted(ctx.tracks, key=lambda t: -t.popularity)
    user_ids = [u.id for u in ctx.users]

    def rows() -> Iterable[Sequence[object]]:
        for pid, owner, collaborative, created in ctx.playlists:
            n = max(1, int(rng.expovariate(1 / 14)))
            n = min(n, 300, len(tracks))
            picked = dict.fromkeys(tracks[int(len(tracks) * rng.random() ** 2)].id for _ in range(n))
            at = created
            for position, track_id in enumerate(picked):
                at = _between(rng, at, min(ANCHOR, at + timedelta(days=7)))
                added_by = rng.choice(user_ids) if collaborative and rng.random() < 0.4 else owner
                yield (pid, track_id, position, added_by, at)

    return ctx.copy("playlist_tracks", ("playlist_id", "track_id", "position", "added_by_user_id", "added_at"),
                    rows())


def _load_model_versions(ctx: _Context) -> int:
    rng = ctx.rng("model_versions")
    # The registry is shared: with append=True the versions a previous seeding registered are reused.
    existing = {(str(n), str(v)): (int(i), str(st), c) for i, n, v, st, c in ctx.conn.execute(
        "SELECT id, name, version, status, created_at FROM public.model_versions").fetchall()}
    for name, version, *_rest in _MODELS:
        if (name, version) in existing:
            mid, status, created = existing[name, version]
            ctx.models.append(_Model(mid, name, version, status, created))
    missing = [m for m in _MODELS if (m[0], m[1]) not in existing]
    ids = ctx.reserve("model_versions", len(missing))
    rows = []
    for mid, (name, version, framework, status, days) in zip(ids, missing, strict=True):
        trained = ANCHOR - timedelta(days=days, hours=rng.randint(0, 23))
        created = trained + timedelta(hours=rng.randint(1, 12))
        metrics: dict[str, float] = (
            {"ndcg@10": round(rng.uniform(0.25, 0.45), 4), "recall@50": round(rng.uniform(0.4, 0.7), 4)}
            if "recommender" in name or "matcher" in name else
            {"accuracy": round(rng.uniform(0.8, 0.95), 4), "f1": round(rng.uniform(0.75, 0.92), 4)}
            if "classifier" in name or "predictor" in name else
            {"perplexity": round(rng.uniform(8, 20), 2), "rouge_l": round(rng.uniform(0.3, 0.5), 4)}
        )
        uri = f"s3://spotify-ai-agent-models/{name}/{version}/model.tar.gz" if status != "failed" else None
        description = f"{name} {version}: " + {"production": "serving", "staging": "canary before promotion",
                                               "archived": "replaced by a newer version", "failed": "training diverged",
                                               "registered": "first experiment"}[status]
        rows.append((mid, name, version, framework, status, Jsonb(metrics if status != "failed" else {}), uri,
                     description, trained, created, created))
        ctx.models.append(_Model(mid, name, version, status, created))
    return ctx.copy("model_versions", ("id", "name", "version", "framework", "status", "metrics", "artifact_uri",
                                       "description", "trained_at", "created_at", "updated_at"), rows)


def _load_ai_content(ctx: _Context) -> int:
    rng = ctx.rng("ai_content")
    n = int(len(ctx.users) * 0.4)
    ids = ctx.reserve("ai_content", n)
    lyrics = ctx.model("lyrics-generator")
    managed = {a.user_id: a for a in ctx.artists if a.user_id is not None}
    rows = []
    versions: list[tuple[int, int, str, datetime, int]] = []
    for cid in ids:
        user = rng.choice(ctx.users)
        kind = rng.choices(("lyrics", "description", "artwork_prompt", "bio", "playlist_description", "summary",
                            "translation"), (30, 20, 15, 10, 15, 5, 5))[0]
        artist_id = track_id = None
        if kind == "bio":
            artist_id = (managed.get(user.id) or rng.choice(ctx.artists)).id
        elif kind != "playlist_description":
            track = rng.choice(ctx.tracks)
            track_id, artist_id = track.id, track.artist_id
        created = _between(rng, max(user.created_at, lyrics.created_at), ANCHOR - timedelta(days=1))
        status = rng.choices(("draft", "published", "archived"), (40, 50, 10))[0]
        title = f"{kind.replace('_', ' ').capitalize()}: {rng.choice(_WORDS)['en']}"
        rows.append((cid, user.id, artist_id, track_id, kind, user.locale, title, status, created, created))
        versions.append((cid, user.id, kind, created, rng.choices((1, 2, 3), (45, 35, 20))[0]))
    ctx.content_versions = versions
    return ctx.copy("ai_content", ("id", "user_id", "artist_id", "track_id", "kind", "locale", "title", "status",
                                   "created_at", "updated_at"), rows)


def _load_ai_content_versions(ctx: _Context) -> int:
    rng = ctx.rng("ai_content_versions")
    versions = ctx.content_versions
    lyrics, describer = ctx.model("lyrics-generator"), ctx.model("playlist-describer")

    def rows() -> Iterable[Sequence[object]]:
        for cid, user_id, kind, created, count in versions:
            model = describer if kind in {"playlist_description", "description", "summary"} else lyrics
            at = created
            for version in range(1, count + 1):
                human = version > 1 and rng.random() < 0.5
                words = " ".join(w["en"].lower() for w in _title(rng, 6))
                body = (f"[{kind} v{version}] {words.capitalize()}.\n" + words + " " + words + ".")
                yield (cid, version, body, None if human else f"Write a {kind.replace('_', ' ')} about {words}",
                       Jsonb({} if human else {"temperature": round(rng.uniform(0.5, 1.1), 2),
                                               "seed": rng.randint(0, 2**31 - 1), "max_tokens": 512}),
                       None if human else model.id, user_id if human else None, at)
                at = _between(rng, at, min(ANCHOR, at + timedelta(days=3)))

    return ctx.copy("ai_content_versions", ("content_id", "version", "body", "prompt", "parameters",
                                            "model_version_id", "edited_by_user_id", "created_at"), rows())


def _load_recommendations(ctx: _Context) -> int:
    rng = ctx.rng("recommendations")
    recommenders = sorted((m for m in ctx.models if m.name == "track-recommender" and m.status != "staging"),
                          key=lambda m: m.created_at)
    tracks = sorted(ctx.tracks, key=lambda t: -t.popularity)
    contexts = (("home", 40), ("discover", 20), ("radio", 10), ("playlist", 12), ("search", 8), ("track", 8),
                ("collaboration", 2))
    reasons = ("Because you listened to {}", "Popular in {}", "New release you may like", "Similar to your likes",
               None)

    def rows() -> Iterable[Sequence[object]]:
        for user in ctx.users:
            batches = rng.randint(0, 3)
            for _ in range(batches):
                created = _between(rng, max(user.created_at, recommenders[0].created_at), ANCHOR - timedelta(hours=1))
                model = [m for m in recommenders if m.created_at <= created][-1]
                where = _weighted(rng, contexts)
                for rank in range(1, rng.randint(3, 6) + 1):
                    track = tracks[int(len(tracks) * rng.random() ** 1.5)]
                    score = round(max(0.0, min(1.0, 0.95 - rank * 0.07 + rng.gauss(0, 0.05))), 4)
                    served = created + timedelta(seconds=rng.randint(1, 600)) if rng.random() < 0.9 else None
                    clicked = (served + timedelta(seconds=rng.randint(2, 3600))
                               if served is not None and rng.random() < 0.15 else None)
                    reason = rng.choice(reasons)
                    yield (user.id, track.id, model.id, score, rank, where,
                           reason.format(user.country) if reason else None, served, clicked, created)

    return ctx.copy("recommendations", ("user_id", "track_id", "model_version_id", "score", "rank", "context",
                                        "reason", "served_at", "clicked_at", "created_at"), rows())


def _load_ml_logs(ctx: _Context) -> int:
    rng = ctx.rng("ml_logs")
    serving = [m for m in ctx.models if m.status in {"production", "staging"}]
    errors = ("timeout after 2000 ms", "CUDA out of memory", "input longer than 4096 tokens",
              "feature store unavailable")

    def rows() -> Iterable[Sequence[object]]:
        for m in ctx.models:
            trained = m.created_at - timedelta(hours=2)
            failed = m.status == "failed"
            setup = {"epochs": rng.randint(5, 50), "gpus": rng.choice((1, 4, 8))}
            yield (m.id, "training", "error" if failed else "ok", rng.uniform(3.6e6, 3.6e7), None,
                   f"job-{rng.getrandbits(40):010x}", Jsonb(setup),
                   "loss became NaN at epoch 7" if failed else None, trained)
            if not failed:
                yield (m.id, "evaluation", "ok", rng.uniform(6e4, 9e5), None, f"job-{rng.getrandbits(40):010x}",
                       Jsonb({"dataset": "holdout-2026", "rows": rng.randint(10_000, 500_000)}), None, m.created_at)
        for _ in range(len(ctx.users) * 3):
            m = rng.choice(serving)
            user = rng.choice(ctx.users)
            error = rng.choice(errors) if rng.random() < 0.015 else None
            at = _between(rng, max(m.created_at, user.created_at), ANCHOR)
            latency = rng.lognormvariate(3.5, 0.6) * (4 if "generator" in m.name or "describer" in m.name else 1)
            yield (m.id, "inference", "error" if error else "ok", round(latency, 2),
                   user.id if rng.random() < 0.9 else None, f"req_{rng.getrandbits(64):016x}",
                   Jsonb({"batch_size": rng.choice((1, 8, 32)), "cache_hit": rng.random() < 0.3}), error, at)

    return ctx.copy("ml_logs", ("model_version_id", "event_type", "status", "latency_ms", "user_id", "request_id",
                                "details", "error", "created_at"), rows())


def _load_api_keys(ctx: _Context) -> int:
    rng = ctx.rng("api_keys")
    names = ("CI pipeline", "Home studio", "Mobile app", "Label dashboard", "Notebook", "Discord bot")
    rows = []
    for user in ctx.users:
        if rng.random() >= 0.1:
            continue
        for _ in range(rng.choice((1, 1, 2))):
            key = "sk_live_" + _b62(rng, 40)  # generated, hashed, forgotten: never stored
            created = _between(rng, user.created_at, ANCHOR - timedelta(days=1))
            expires = created + timedelta(days=365) if rng.random() < 0.7 else None
            revoked = _between(rng, created, ANCHOR) if rng.random() < 0.15 else None
            last_used = _between(rng, created, revoked or ANCHOR) if rng.random() < 0.8 else None
            scopes = sorted(rng.sample(_SCOPES, rng.randint(1, 4)))
            rows.append((user.id, rng.choice(names), key[:16], hashlib.sha256(key.encode()).hexdigest(), scopes,
                         expires, revoked, last_used, created, revoked or created))
    return ctx.copy("api_keys", ("user_id", "name", "key_prefix", "key_hash", "scopes", "expires_at", "revoked_at",
                                 "last_used_at", "created_at", "updated_at"), rows)


def _load_artist_matches(ctx: _Context) -> int:
    rng = ctx.rng("artist_matches")
    sizes = _Sizes.of(ctx.plan.scale.users)
    matcher = sorted((m for m in ctx.models if m.name == "artist-matcher"), key=lambda m: m.created_at)
    ids = [a.id for a in ctx.artists]
    pairs: set[tuple[int, int]] = set()
    limit = len(ids) * (len(ids) - 1) // 2
    while len(pairs) < min(sizes.matches, limit):
        a, b = rng.sample(ids, 2)
        pairs.add((min(a, b), max(a, b)))
    rows = []
    for a, b in sorted(pairs):
        first, second = (a, b) if rng.random() < 0.5 else (b, a)  # stored in either order, unique as a pair
        created = _between(rng, matcher[0].created_at, ANCHOR - timedelta(days=2))
        model = [m for m in matcher if m.created_at <= created][-1] if rng.random() < 0.9 else None
        status = rng.choices(("suggested", "accepted", "declined", "expired"), (40, 30, 20, 10))[0]
        updated = _between(rng, created, ANCHOR) if status != "suggested" else created
        rows.append((first, second, round(rng.uniform(0.35, 0.99), 4), model.id if model else None, status, created,
                     updated))
        if status == "accepted":
            ctx.matches.append((first, second, updated))
    return ctx.copy("artist_matches", ("artist_id", "matched_artist_id", "score", "model_version_id", "status",
                                       "created_at", "updated_at"), rows)


def _load_collaborations(ctx: _Context) -> int:
    rng = ctx.rng("collaborations")
    ids = ctx.reserve("collaborations", len(ctx.matches))
    by_id = {a.id: a for a in ctx.artists}
    rows = []
    for cid, (a, b, accepted) in zip(ids, ctx.matches, strict=True):
        creator = by_id[a].user_id or by_id[b].user_id or rng.choice(ctx.users).id
        status = rng.choices(("proposed", "active", "completed", "cancelled"), (15, 50, 25, 10))[0]
        created = _between(rng, accepted, min(ANCHOR, accepted + timedelta(days=10)))
        title = f"{_in('en', _title(rng, 2))} ({status if status == 'completed' else 'session'})"
        rows.append((cid, title, f"Joint project of artists {a} and {b}." if rng.random() < 0.6 else None, status,
                     creator, created, created))
        ctx.collaborations.append((cid, creator, status, created))
    return ctx.copy("collaborations", ("id", "title", "description", "status", "created_by_user_id", "created_at",
                                       "updated_at"), rows)


def _load_collaboration_members(ctx: _Context) -> int:
    rng = ctx.rng("collaboration_members")
    ctx.roles = {str(name): int(rid) for rid, name in
                 ctx.conn.execute("SELECT id, name FROM public.collaboration_roles").fetchall()}
    user_ids = [u.id for u in ctx.users]
    rows = []
    for (cid, creator, _status, created), (a, b, _at) in zip(ctx.collaborations, ctx.matches, strict=True):
        members: list[tuple[int | None, int | None, str]] = [(None, creator, "owner"), (a, None, "")]
        members.append((b, None, ""))
        for uid in rng.sample(user_ids, rng.randint(0, 2)):
            if uid != creator:
                members.append((None, uid, rng.choice(_ROLES_FOR_USERS)))
        for artist_id, user_id, role in members:
            role = role or rng.choice(_ROLES_FOR_ARTISTS)
            if role not in ctx.roles:
                role = "producer"
            joined = _between(rng, created, min(ANCHOR, created + timedelta(days=14)))
            left = _between(rng, joined, ANCHOR) if role != "owner" and rng.random() < 0.1 else None
            rows.append((cid, artist_id, user_id, ctx.roles[role], joined, left, joined, left or joined))
            ctx.members.append((cid, artist_id, user_id, ctx.roles[role], joined))
    return ctx.copy("collaboration_members", ("collaboration_id", "artist_id", "user_id", "role_id", "joined_at",
                                              "left_at", "created_at", "updated_at"), rows)


def _load_collaboration_history(ctx: _Context) -> int:
    rng = ctx.rng("collaboration_history")
    members: dict[int, list[tuple[int | None, int | None, int, datetime]]] = {}
    for cid, artist_id, user_id, role_id, joined in ctx.members:
        members.setdefault(cid, []).append((artist_id, user_id, role_id, joined))
    rows = []
    for cid, creator, status, created in ctx.collaborations:
        rows.append((cid, creator, "created", Jsonb({"status": "proposed"}), created))
        last = created
        for artist_id, user_id, role_id, joined in members.get(cid, []):
            who = {"artist_id": artist_id} if artist_id else {"user_id": user_id}
            rows.append((cid, creator, "member_added", Jsonb({**who, "role_id": role_id}), joined))
            last = max(last, joined)
        if status != "proposed":
            last = _between(rng, last, ANCHOR)
            rows.append((cid, creator, "status_changed", Jsonb({"from": "proposed", "to": status}), last))
        for _ in range(rng.randint(0, 4)):
            actor = rng.choice(members[cid])
            event = rng.choice(("comment", "file_shared"))
            details = ({"comment_length": rng.randint(5, 400)} if event == "comment"
                       else {"file": rng.choice(("stems.zip", "demo_v2.wav", "lyrics.txt", "mix_final.wav"))})
            rows.append((cid, actor[1], event, Jsonb(details), _between(rng, created, ANCHOR)))
    return ctx.copy("collaboration_history", ("collaboration_id", "actor_user_id", "event_type", "details",
                                              "created_at"), rows)


def _load_consent(ctx: _Context) -> int:
    rng = ctx.rng("consent")

    def rows() -> Iterable[Sequence[object]]:
        for user in ctx.users:
            for purpose in _PURPOSES:
                at_signup = purpose in {"analytics", "personalization"}
                if not at_signup and rng.random() < 0.4:
                    continue  # never asked
                answered = user.created_at if at_signup else _between(rng, user.created_at, ANCHOR)
                yes = {"analytics": 0.85, "personalization": 0.9, "marketing": 0.35, "ai_training": 0.5,
                       "collaboration_matching": 0.6, "third_party_sharing": 0.15}[purpose]
                source = "signup" if at_signup else rng.choice(("settings", "banner", "api", "support"))
                policy = "2025-01" if answered < ANCHOR - timedelta(days=300) else "2026-05"
                granted_at = revoked_at = None
                if rng.random() < yes:
                    granted, granted_at = True, answered
                    if rng.random() < 0.15:  # granted, then withdrawn
                        granted, revoked_at = False, _between(rng, answered, ANCHOR)
                else:
                    granted = False  # declined: never granted
                yield (user.id, purpose, granted, policy, source, granted_at, revoked_at, answered,
                       revoked_at or answered)

    return ctx.copy("consent", ("user_id", "purpose", "granted", "policy_version", "source", "granted_at",
                                "revoked_at", "created_at", "updated_at"), rows())


#: One server-side statement: row ``g`` belongs to session ``g / 16``; every choice is a hash of (g or the session,
#: seed), so the rows do not depend on the order PostgreSQL evaluates them in.
_ANALYTICS_SQL = """
INSERT INTO public.analytics (user_id, event_type, track_id, properties, country, device, session_id, created_at)
SELECT (%(user_ids)s::bigint[])[ui], e.event_type,
       CASE WHEN e.event_type = 'search' THEN NULL ELSE (%(track_ids)s::bigint[])[ti] END,
       CASE e.event_type
           WHEN 'play' THEN jsonb_build_object(
               'ms_played', ((%(durations)s::int[])[ti] * (0.55 + (hx & 1023)::float8 / 2300))::int,
               'source', (%(sources)s::text[])[1 + (hx >> 10 & 7) %% 6])
           WHEN 'skip' THEN jsonb_build_object('ms_played', 1000 + (hx & 32767),
                                               'source', (%(sources)s::text[])[1 + (hx >> 10 & 7) %% 6])
           WHEN 'search' THEN jsonb_build_object('query_length', 2 + (hx & 31), 'results', hx >> 5 & 63)
           ELSE jsonb_build_object('source', (%(sources)s::text[])[1 + (hx >> 10 & 7) %% 6])
       END,
       (%(country_codes)s::text[])[(%(countries)s::int[])[ui]],
       (%(devices)s::text[])[1 + (hs >> 20 & 127) %% 100],
       md5(%(seed)s::text || ':' || s::text)::uuid,
       since + (%(anchor)s::timestamptz - interval '1 hour' - since) * ((hs >> 30 & 1048575)::float8 / 1048576)
             + make_interval(secs => k * 200 + (hx >> 16 & 127))
FROM generate_series(0, %(rows)s - 1) AS g,
     LATERAL (SELECT g / 16 AS s, g %% 16 AS k) AS sk,
     LATERAL (SELECT hashint8extended(sk.s, %(seed)s) AS hs, hashint8extended(g, %(seed)s + 1) AS hx) AS h,
     LATERAL (SELECT 1 + least(%(n_users)s - 1, floor(%(n_users)s * ((hs & 1048575)::float8 / 1048576) ^ 2)::int) AS ui,
                     1 + least(%(n_tracks)s - 1,
                               floor(%(n_tracks)s * ((hx >> 40 & 1048575)::float8 / 1048576) ^ 2)::int) AS ti,
                     (%(events)s::text[])[1 + (hx >> 32 & 127) %% 100] AS event_type) AS e,
     LATERAL (SELECT (%(since)s::timestamptz[])[ui] AS since) AS us
"""


def _load_analytics(ctx: _Context) -> int:
    n = ctx.plan.scale.analytics_rows
    if n == 0:
        return 0
    params = _analytics_params(ctx)
    empty = ctx.conn.execute("SELECT NOT EXISTS (SELECT FROM public.analytics)").fetchone()
    if n >= BULK_INDEX_THRESHOLD and empty and empty[0]:
        with _IndexesRebuilt(ctx.conn, "analytics"):
            ctx.conn.execute(_ANALYTICS_SQL, params)
    else:
        ctx.conn.execute(_ANALYTICS_SQL, params)
    return n


def _analytics_params(ctx: _Context) -> dict[str, Any]:
    """The parameters of :data:`_ANALYTICS_SQL` for this run's users and tracks (the benchmark reuses them)."""
    users = sorted(ctx.users, key=lambda u: random.Random(f"{ctx.plan.seed}:{u.id}").random())  # activity order
    tracks = sorted(ctx.tracks, key=lambda t: -t.popularity)
    codes = sorted({u.country for u in users})
    # Countries as indexes into a short array: subscripting a long text[] walks it from the start every time.
    return {
        "user_ids": [u.id for u in users], "countries": [codes.index(u.country) + 1 for u in users],
        "country_codes": codes,
        "since": [u.created_at for u in users],
        "track_ids": [t.id for t in tracks], "durations": [t.duration_ms for t in tracks],
        "events": [name for name, share in _EVENTS for _ in range(share)],
        "devices": [name for name, share in _DEVICES for _ in range(share)],
        "sources": list(_SOURCES), "seed": ctx.plan.seed, "rows": ctx.plan.scale.analytics_rows, "anchor": ANCHOR,
        "n_users": len(users), "n_tracks": len(tracks),
    }


def _load_event_logs(ctx: _Context) -> int:
    rng = ctx.rng("event_logs")
    n = ctx.plan.expected_rows["event_logs"]
    kinds = (
        ("api", "request.completed", "info", 55), ("api", "request.failed", "error", 3),
        ("api", "rate_limit.exceeded", "warning", 4), ("worker", "job.finished", "info", 12),
        ("worker", "job.retried", "warning", 4), ("spotify-sync", "spotify.sync", "info", 8),
        ("spotify-sync", "spotify.token_refresh_failed", "warning", 2), ("scheduler", "schedule.triggered", "debug", 8),
        ("db", "db.slow_query", "warning", 3), ("api", "deploy.finished", "info", 1),
    )
    weights = [k[3] for k in kinds]
    paths = ("/v1/recommendations", "/v1/ai/lyrics", "/v1/playlists", "/v1/artists/match", "/v1/search")

    def rows() -> Iterable[Sequence[object]]:
        for _ in range(n):
            source, event, level, _w = rng.choices(kinds, weights)[0]
            if rng.random() < 0.002:
                level = "critical"
            user = rng.choice(ctx.users) if source == "api" and rng.random() < 0.8 else None
            since = ANCHOR - timedelta(days=90)
            at = _between(rng, max(since, user.created_at) if user else since, ANCHOR)
            details: dict[str, object] = {"duration_ms": round(rng.lognormvariate(4, 0.8), 1)}
            if source == "api":
                details |= {"path": rng.choice(paths), "status": 500 if level in {"error", "critical"} else
                            429 if event.startswith("rate_limit") else 200}
            message = {"info": None, "debug": None}.get(level, f"{event.replace('.', ' ')} in {source}")
            yield (level, source, event, message, Jsonb(details), user.id if user else None,
                   f"req_{rng.getrandbits(64):016x}", at)

    return ctx.copy("event_logs", ("level", "source", "event_type", "message", "details", "user_id", "request_id",
                                   "created_at"), rows())


#: table -> loader; the order of :data:`TABLES`.  Tests replace an entry to inject a failure.
_LOADERS: dict[str, Callable[[_Context], int]] = {
    "users": _load_users, "artists": _load_artists, "albums": _load_albums, "tracks": _load_tracks,
    "track_artists": _load_track_artists, "album_translations": _load_album_translations,
    "track_translations": _load_track_translations, "playlists": _load_playlists,
    "playlist_tracks": _load_playlist_tracks, "model_versions": _load_model_versions,
    "ai_content": _load_ai_content, "ai_content_versions": _load_ai_content_versions,
    "recommendations": _load_recommendations, "ml_logs": _load_ml_logs, "api_keys": _load_api_keys,
    "artist_matches": _load_artist_matches, "collaborations": _load_collaborations,
    "collaboration_members": _load_collaboration_members, "collaboration_history": _load_collaboration_history,
    "consent": _load_consent, "analytics": _load_analytics, "event_logs": _load_event_logs,
}
_METHODS = {"analytics": "insert-select"}


# --------------------------------------------------------------------------------------------- bulk indexes


class _IndexesRebuilt:
    """Drop a table's indexes and foreign/unique/primary keys, and re-create them from the catalogue on exit.

    .. warning::
       Takes ACCESS EXCLUSIVE on the table until the transaction ends.  The
       definitions are read with ``pg_get_indexdef`` / ``pg_get_constraintdef``
       so whatever later migrations add is restored as it was, comments included.
       Runs under a SAVEPOINT: if anything depends on a constraint (so it cannot
       be dropped), the savepoint is rolled back and the load runs with the
       indexes in place.
    """

    def __init__(self, conn: psycopg.Connection[Any], table: str) -> None:
        self.conn, self.table = conn, table
        self.constraints: list[tuple[str, str, str | None]] = []
        self.indexes: list[tuple[str, str, str | None]] = []
        self.active = False

    def __enter__(self) -> None:
        relation = f"public.{self.table}"
        self.constraints = [(str(n), str(d), c) for n, d, c in self.conn.execute(
            "SELECT conname, pg_get_constraintdef(oid), obj_description(oid, 'pg_constraint') FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f', 'x') "
            "ORDER BY array_position(ARRAY['f', 'x', 'u', 'p']::\"char\"[], contype), conname",
            (relation,)).fetchall()]
        self.indexes = [(str(n), str(d), c) for n, d, c in self.conn.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid), obj_description(i.indexrelid, 'pg_class') "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = %s::regclass "
            "AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)"
            " ORDER BY c.relname", (relation,)).fetchall()]
        self.conn.execute("SAVEPOINT agentdb_seed_indexes")
        try:
            for name, _definition, _comment in self.constraints:
                self.conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier("public", self.table), sql.Identifier(name)))
            for name, _definition, _comment in self.indexes:
                self.conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier("public", name)))
        except psycopg.errors.DependentObjectsStillExist:
            self.conn.execute("ROLLBACK TO SAVEPOINT agentdb_seed_indexes")
            return
        self.conn.execute("RELEASE SAVEPOINT agentdb_seed_indexes")
        self.active = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.active or exc_type is not None:
            return  # the transaction is rolled back anyway
        self.conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for name, definition, comment in reversed(self.constraints):  # primary key first, foreign keys last
            self.conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.Identifier("public", self.table), sql.Identifier(name), sql.SQL(definition)))
            if comment is not None:
                self.conn.execute(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                    sql.Identifier(name), sql.Identifier("public", self.table), sql.Literal(comment)))
        for name, definition, comment in self.indexes:
            # A partitioned table's definition says ON ONLY: as written it would build no partition's index
            # and leave the parent's invalid; without ONLY it is built on every partition.
            self.conn.execute(sql.SQL(definition.replace(" ON ONLY ", " ON ", 1)))
            if comment is not None:
                self.conn.execute(sql.SQL("COMMENT ON INDEX {} IS {}").format(
                    sql.Identifier("public", name), sql.Literal(comment)))
