"""The demo's plan and report: how big each table gets, and what a seeding did."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from agentdb.demo._vocabulary import _MODELS
from agentdb.errors import AgentdbError

#: Every demo timestamp is relative to this instant, so the same seed gives the same rows on any day.
ANCHOR = datetime(2026, 11, 1, tzinfo=UTC)
#: Analytics loads at least this big (into an empty table) drop and re-create the table's indexes.
BULK_INDEX_THRESHOLD = 200_000
ACTOR = "agentdb seed-demo"

# --------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class DemoScale:
    """How big the demo is: the number of users and analytics rows; every other table follows the users."""

    name: str
    users: int
    analytics_rows: int

    def __post_init__(self) -> None:
        if self.users < 10:
            raise AgentdbError(f"demo scale needs at least 10 users, got {self.users}")
        if self.analytics_rows < 0:
            raise AgentdbError(f"analytics rows cannot be negative, got {self.analytics_rows}")


#: The presets: ``small`` for tests, ``medium`` for a laptop demo, ``large`` for a million analytics rows.
SCALES: dict[str, DemoScale] = {
    "small": DemoScale("small", users=200, analytics_rows=5_000),
    "medium": DemoScale("medium", users=2_000, analytics_rows=100_000),
    "large": DemoScale("large", users=10_000, analytics_rows=1_000_000),
}

#: Load order (parents first).  ``collaboration_roles`` is not loaded: migration 004 seeds it and members use it.
TABLES: tuple[str, ...] = (
    "users", "artists", "albums", "tracks", "track_artists", "album_translations", "track_translations",
    "playlists", "playlist_tracks", "model_versions", "ai_content", "ai_content_versions", "recommendations",
    "ml_logs", "api_keys", "artist_matches", "collaborations", "collaboration_members", "collaboration_history",
    "consent", "analytics", "event_logs",
)
#: Tables filled by triggers, or seeded by a migration, counted in the report but not loaded here.
DERIVED: tuple[str, ...] = ("audit_log", "collaboration_roles")


@dataclass(frozen=True)
class DemoPlan:
    """What :func:`seed_demo` will do: the scale, the seed and the approximate rows per table, in load order."""

    scale: DemoScale
    seed: int
    expected_rows: dict[str, int]

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(self.expected_rows)


def plan_demo(
    scale: DemoScale | str = "small", *, users: int | None = None, analytics_rows: int | None = None, seed: int = 42,
) -> DemoPlan:
    """Resolve a preset (or a :class:`DemoScale`) and overrides into a plan; no database is touched."""
    if isinstance(scale, str):
        if scale not in SCALES:
            raise AgentdbError(f"unknown demo scale {scale!r}", hint=f"one of {', '.join(SCALES)}")
        base = SCALES[scale]
    else:
        base = scale
    if users is not None or analytics_rows is not None:
        base = DemoScale(
            base.name if users is None and analytics_rows is None else f"{base.name} (custom)",
            users=base.users if users is None else users,
            analytics_rows=base.analytics_rows if analytics_rows is None else analytics_rows,
        )
    u = base.users
    sizes = _Sizes.of(u)
    expected = {
        "users": u,
        "artists": sizes.artists,
        "albums": sizes.albums,
        "tracks": sizes.albums * 9,
        "track_artists": int(sizes.albums * 9 * 1.9),
        "album_translations": int(sizes.albums * 0.6),
        "track_translations": int(sizes.albums * 9 * 0.3),
        "playlists": int(u * 1.8),
        "playlist_tracks": int(u * 1.8 * 14),
        "model_versions": len(_MODELS),
        "ai_content": int(u * 0.4),
        "ai_content_versions": int(u * 0.4 * 1.8),
        "recommendations": u * 12,
        "ml_logs": u * 3 + 40,
        "api_keys": int(u * 0.12),
        "artist_matches": sizes.matches,
        "collaborations": int(sizes.matches * 0.3),
        "collaboration_members": int(sizes.matches * 0.3 * 3.5),
        "collaboration_history": int(sizes.matches * 0.3 * 6),
        "consent": u * 4,
        "analytics": base.analytics_rows,
        "event_logs": max(u * 5, base.analytics_rows // 20),
    }
    return DemoPlan(base, seed, expected)


@dataclass(frozen=True)
class _Sizes:
    artists: int
    albums: int
    matches: int

    @classmethod
    def of(cls, users: int) -> _Sizes:
        artists = max(8, users // 4)
        return cls(artists=artists, albums=max(10, int(artists * 1.6)), matches=max(4, int(artists * 1.2)))


# --------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class TableLoad:
    """One table of the seeding: rows added, seconds, and how (``copy``, ``insert-select``, ``trigger``...)."""

    table: str
    rows: int
    seconds: float
    method: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class DemoReport:
    """What :func:`seed_demo` did: the database (redacted), the plan, and every table loaded."""

    database: str
    scale: str
    users: int
    analytics_rows: int
    seed: int
    append: bool
    tables: list[TableLoad] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> dict[str, int]:
        """Rows added per table, audit rows written by the triggers included."""
        return {load.table: load.rows for load in self.tables}

    @property
    def total_rows(self) -> int:
        return sum(load.rows for load in self.tables if load.method != "migration")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tables"] = [{**asdict(t), "rows_per_second": round(t.rows_per_second)} if t.seconds > 0
                          else asdict(t) for t in self.tables]
        data["total_rows"] = self.total_rows
        return data


