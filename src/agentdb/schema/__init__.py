"""The application schema, declared once as SQLAlchemy Core tables.

Migrations are written by hand (they describe *changes*), and the test suite
proves that ``alembic upgrade head`` produces exactly these tables: Alembic's
autogenerate comparison must find no difference.  Later capabilities (the
personal-data registry, analyst grants, erasure, export) read this
declaration instead of repeating it.

One module per migration: :mod:`~agentdb.schema.core` (001),
:mod:`~agentdb.schema.catalog` (002), :mod:`~agentdb.schema.ai` (003),
:mod:`~agentdb.schema.collaboration` (004), :mod:`~agentdb.schema.analytics` (005).
What is not a table -- trigger functions, triggers, views, grants -- is
declared in :mod:`~agentdb.schema.entities` and compared the same way.
"""

from agentdb.schema._base import metadata
from agentdb.schema.ai import (
    ai_content,
    ai_content_versions,
    api_keys,
    ml_logs,
    model_versions,
    recommendations,
)
from agentdb.schema.analytics import analytics, audit_log, consent, event_logs
from agentdb.schema.catalog import (
    album_translations,
    albums,
    playlist_tracks,
    playlists,
    track_artists,
    track_translations,
    tracks,
)
from agentdb.schema.collaboration import (
    artist_matches,
    collaboration_history,
    collaboration_members,
    collaboration_roles,
    collaborations,
)
from agentdb.schema.core import artists, users

__all__ = [
    "ai_content",
    "ai_content_versions",
    "album_translations",
    "albums",
    "analytics",
    "api_keys",
    "artist_matches",
    "artists",
    "audit_log",
    "collaboration_history",
    "collaboration_members",
    "collaboration_roles",
    "collaborations",
    "consent",
    "event_logs",
    "metadata",
    "ml_logs",
    "model_versions",
    "playlist_tracks",
    "playlists",
    "recommendations",
    "track_artists",
    "track_translations",
    "tracks",
    "users",
]
