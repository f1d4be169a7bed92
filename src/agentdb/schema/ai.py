"""Migration 003: the model registry, AI-generated content, recommendations, ML logs and API keys.

Every row an AI model produced points at the ``model_versions`` row that
produced it, with ``ON DELETE RESTRICT``: a model version that has produced
something is archived (``status = 'archived'``), never deleted, so provenance
cannot be lost.  Rows about a person go with that person (``CASCADE``) or are
kept without them (``SET NULL``) when they are operational records.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from agentdb.schema._base import created_at, id_column, in_check, metadata, updated_at
from agentdb.schema._pii import Category as C
from agentdb.schema._pii import Erasure as E
from agentdb.schema._pii import not_personal, personal

__all__ = [
    "API_KEY_SCOPES",
    "CONTENT_KINDS",
    "MODEL_FRAMEWORKS",
    "MODEL_STATUSES",
    "RECOMMENDATION_CONTEXTS",
    "ai_content",
    "ai_content_versions",
    "api_keys",
    "ml_logs",
    "model_versions",
    "recommendations",
]

ENUM = "a value from a fixed list"

MODEL_FRAMEWORKS = ("tensorflow", "pytorch", "huggingface", "scikit-learn", "onnx", "xgboost", "other")
MODEL_STATUSES = ("registered", "staging", "production", "archived", "failed")
CONTENT_KINDS = ("lyrics", "description", "artwork_prompt", "bio", "playlist_description", "summary", "translation")
RECOMMENDATION_CONTEXTS = ("home", "search", "playlist", "radio", "discover", "track", "collaboration")
API_KEY_SCOPES = (
    "ai:generate", "ai:read", "recommendations:read", "recommendations:write",
    "models:read", "models:write", "analytics:read",
)


def _object(column: str) -> str:
    return f"jsonb_typeof({column}) = 'object'"


model_versions = sa.Table(
    "model_versions",
    metadata,
    id_column(),
    sa.Column("name", sa.Text, nullable=False, comment="Model name, e.g. track-recommender"),
    sa.Column("version", sa.Text, nullable=False, comment="Version of that model, e.g. 1.4.0 or 2026-11-01"),
    sa.Column("framework", sa.Text, nullable=False, comment="Framework: " + ", ".join(MODEL_FRAMEWORKS)),
    sa.Column(
        "status", sa.Text, nullable=False, server_default=sa.text("'registered'"),
        comment="Lifecycle: " + ", ".join(MODEL_STATUSES) + "; at most one production version per name",
    ),
    sa.Column(
        "metrics", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"),
        comment="Evaluation metrics as a JSON object (metric name to value)",
    ),
    sa.Column("artifact_uri", sa.Text, nullable=True, comment="Where the trained artifact is stored (s3://, gs://, hf://)"),
    sa.Column("description", sa.Text, nullable=True, comment="What changed in this version"),
    sa.Column("trained_at", sa.DateTime(timezone=True), nullable=True, comment="When training finished"),
    created_at(),
    updated_at(),
    sa.UniqueConstraint("name", "version"),
    sa.CheckConstraint("name ~ '^[a-z0-9][a-z0-9_.-]{0,99}$'", name="name_format"),
    sa.CheckConstraint("version ~ '^[0-9A-Za-z][0-9A-Za-z_.+-]{0,49}$'", name="version_format"),
    sa.CheckConstraint(in_check("framework", MODEL_FRAMEWORKS), name="framework_valid"),
    sa.CheckConstraint(in_check("status", MODEL_STATUSES), name="status_valid"),
    sa.CheckConstraint(_object("metrics"), name="metrics_object"),
    sa.CheckConstraint("artifact_uri ~ '^[a-z][a-z0-9+.-]*://.+$'", name="artifact_uri_format"),
    sa.Index(
        "model_versions_one_production_idx", "name", unique=True, postgresql_where=sa.text("status = 'production'"),
    ),
    comment="Model registry: one row per model name and version",
)

ai_content = sa.Table(
    "ai_content",
    metadata,
    id_column(),
    sa.Column(
        "user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
        comment="The user who asked for the content; CASCADE: it is erased with the account",
    ),
    sa.Column(
        "artist_id", sa.BigInteger, sa.ForeignKey("artists.id", ondelete="CASCADE"), nullable=True,
        comment="The artist the content is about, if any; CASCADE: it means nothing without the artist",
    ),
    sa.Column(
        "track_id", sa.BigInteger, sa.ForeignKey("tracks.id", ondelete="CASCADE"), nullable=True,
        comment="The track the content is about, if any; CASCADE: it means nothing without the track",
    ),
    sa.Column("kind", sa.Text, nullable=False,
              info=not_personal(ENUM), comment="What it is: " + ", ".join(CONTENT_KINDS)),
    sa.Column("locale", sa.Text, nullable=False, server_default=sa.text("'en'"),
              info=not_personal("language of the generated content, not of a person"),
              comment="Language of the content, as a BCP 47 tag"),
    sa.Column("title", sa.Text, nullable=True,
              info=personal(C.FREE_TEXT, E.DELETE_ROW), comment="Short title shown in lists"),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'draft'"),
              info=not_personal(ENUM), comment="draft, published or archived"),
    created_at(),
    updated_at(),
    sa.CheckConstraint(in_check("kind", CONTENT_KINDS), name="kind_valid"),
    sa.CheckConstraint("locale ~ '^[a-z]{2,3}(-[A-Z]{2})?$'", name="locale_format"),
    sa.CheckConstraint("length(title) <= 300", name="title_length"),
    sa.CheckConstraint("status IN ('draft', 'published', 'archived')", name="status_valid"),
    sa.Index(None, "user_id"),
    sa.Index(None, "artist_id"),
    sa.Index(None, "track_id"),
    comment="AI-generated content (lyrics, descriptions, artwork prompts); the text is in ai_content_versions",
)

ai_content_versions = sa.Table(
    "ai_content_versions",
    metadata,
    id_column(),
    sa.Column(
        "content_id", sa.BigInteger, sa.ForeignKey("ai_content.id", ondelete="CASCADE"), nullable=False,
        comment="The content this is a version of; CASCADE: versions are part of the content",
    ),
    sa.Column("version", sa.Integer, nullable=False, info=not_personal("a version number"),
              comment="Version number, from 1, per content"),
    sa.Column("body", sa.Text, nullable=False,
              info=personal(C.FREE_TEXT, E.DELETE_ROW), comment="The generated or edited text"),
    sa.Column("prompt", sa.Text, nullable=True,
              info=personal(C.FREE_TEXT, E.DELETE_ROW), comment="The prompt that produced it, if generated"),
    sa.Column(
        "parameters", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"),
        info=not_personal("generation settings (temperature, seed), by contract no personal data"),
        comment="Generation parameters (temperature, seed...) as a JSON object",
    ),
    sa.Column(
        "model_version_id", sa.BigInteger, sa.ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=True,
        comment="The model version that generated it, NULL for a human edit; RESTRICT: provenance is kept",
    ),
    sa.Column(
        "edited_by_user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True,
        comment="The user who edited it by hand; SET NULL: the version stays when that user is erased",
    ),
    created_at(),
    sa.UniqueConstraint("content_id", "version"),
    sa.CheckConstraint("version >= 1", name="version_positive"),
    sa.CheckConstraint("length(body) BETWEEN 1 AND 100000", name="body_length"),
    sa.CheckConstraint(_object("parameters"), name="parameters_object"),
    sa.Index(None, "model_version_id"),
    sa.Index(None, "edited_by_user_id"),
    comment="Version history of AI-generated content; a new version is a new row",
)

recommendations = sa.Table(
    "recommendations",
    metadata,
    id_column(),
    sa.Column(
        "user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
        comment="The user the track was recommended to; CASCADE: personal data, erased with the account",
    ),
    sa.Column(
        "track_id", sa.BigInteger, sa.ForeignKey("tracks.id", ondelete="CASCADE"), nullable=False,
        comment="The recommended track; CASCADE: a recommendation of a removed track is worthless",
    ),
    sa.Column(
        "model_version_id", sa.BigInteger, sa.ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=False,
        comment="The model version that scored it; RESTRICT: provenance is kept",
    ),
    sa.Column("score", sa.Double, nullable=False, info=personal(C.BEHAVIOURAL, E.DELETE_ROW, analyst=True),
              comment="Model score, 0 to 1"),
    sa.Column("rank", sa.SmallInteger, nullable=True, info=personal(C.BEHAVIOURAL, E.DELETE_ROW, analyst=True),
              comment="Position in the list shown, from 1"),
    sa.Column("context", sa.Text, nullable=False,
              info=personal(C.BEHAVIOURAL, E.DELETE_ROW),
              comment="Where it was shown: " + ", ".join(RECOMMENDATION_CONTEXTS)),
    sa.Column("reason", sa.Text, nullable=True,
              info=personal(C.BEHAVIOURAL, E.DELETE_ROW), comment="Explanation shown to the user"),
    sa.Column("served_at", sa.DateTime(timezone=True), nullable=True,
              info=personal(C.BEHAVIOURAL, E.DELETE_ROW),
              comment="When it was shown to the user; NULL while not served"),
    sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=True,
              info=personal(C.BEHAVIOURAL, E.DELETE_ROW), comment="When the user clicked it; NULL while not clicked"),
    created_at(),
    sa.CheckConstraint("score BETWEEN 0 AND 1", name="score_range"),
    sa.CheckConstraint("rank >= 1", name="rank_positive"),
    sa.CheckConstraint(in_check("context", RECOMMENDATION_CONTEXTS), name="context_valid"),
    sa.CheckConstraint("length(reason) <= 500", name="reason_length"),
    sa.CheckConstraint("clicked_at IS NULL OR (served_at IS NOT NULL AND clicked_at >= served_at)",
                       name="clicked_after_served"),
    sa.Index(None, "user_id", "created_at"),
    sa.Index(None, "track_id"),
    sa.Index(None, "model_version_id"),
    comment="Tracks recommended to users, with the model version, score and outcome",
)

ml_logs = sa.Table(
    "ml_logs",
    metadata,
    id_column(),
    sa.Column(
        "model_version_id", sa.BigInteger, sa.ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=False,
        comment="The model version concerned; RESTRICT: provenance is kept",
    ),
    sa.Column("event_type", sa.Text, nullable=False,
              info=not_personal(ENUM), comment="training, evaluation or inference"),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'ok'"),
              info=not_personal(ENUM), comment="ok or error"),
    sa.Column("latency_ms", sa.Double, nullable=True, info=not_personal("a duration"),
              comment="Duration of the event in milliseconds"),
    sa.Column(
        "user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True,
        comment="The user an inference was for; SET NULL: the log is kept, anonymised, when the user is erased",
    ),
    sa.Column("request_id", sa.Text, nullable=True,
              info=personal(C.PSEUDONYMOUS, E.NULLIFY), comment="Request or job id, to correlate with event_logs"),
    sa.Column(
        "details", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"),
        info=not_personal("metrics, hyper-parameters and input sizes; by contract no personal data"),
        comment="Event details (metrics, hyper-parameters, input sizes) as a JSON object; no personal data",
    ),
    sa.Column("error", sa.Text, nullable=True,
              # PSEUDONYMIZE, not NULLIFY: the error_iff_failed CHECK needs a message on a failed event.
              info=personal(C.FREE_TEXT, E.PSEUDONYMIZE), comment="Error message when status is error"),
    created_at(),
    sa.CheckConstraint("event_type IN ('training', 'evaluation', 'inference')", name="event_type_valid"),
    sa.CheckConstraint("status IN ('ok', 'error')", name="status_valid"),
    sa.CheckConstraint("latency_ms >= 0", name="latency_ms_nonnegative"),
    sa.CheckConstraint(_object("details"), name="details_object"),
    sa.CheckConstraint("(status = 'error') = (error IS NOT NULL)", name="error_iff_failed"),
    sa.Index(None, "model_version_id", "created_at"),
    sa.Index(None, "user_id"),
    comment="Training, evaluation and inference events of the models, with latency",
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    id_column(),
    sa.Column(
        "user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
        comment="The key's owner; CASCADE: a user's keys are erased with the account",
    ),
    sa.Column("name", sa.Text, nullable=False,
              info=personal(C.FREE_TEXT, E.DELETE_ROW), comment="Label given by the owner"),
    sa.Column("key_prefix", sa.Text, nullable=False,
              info=personal(C.CREDENTIAL, E.DELETE_ROW),
              comment="First characters of the key, shown to identify it; not a secret"),
    sa.Column(
        "key_hash", sa.Text, nullable=False,
        info=personal(C.CREDENTIAL, E.DELETE_ROW),
        comment="SHA-256 of the whole key, lower-case hex; the key itself is never stored. Secret: never audited",
    ),
    sa.Column(
        "scopes", pg.ARRAY(sa.Text), nullable=False,
        info=not_personal("a subset of a fixed list of scopes"),
        comment="What the key may do, a non-empty subset of: " + ", ".join(API_KEY_SCOPES),
    ),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True,
              info=personal(C.CREDENTIAL, E.DELETE_ROW, analyst=True),
              comment="When the key stops working; NULL: never"),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True,
              info=personal(C.CREDENTIAL, E.DELETE_ROW, analyst=True), comment="When the key was revoked"),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True,
              info=personal(C.BEHAVIOURAL, E.DELETE_ROW, analyst=True), comment="Last successful use"),
    created_at(),
    updated_at(),
    sa.UniqueConstraint("key_prefix"),
    sa.UniqueConstraint("key_hash"),
    sa.CheckConstraint("length(btrim(name)) BETWEEN 1 AND 100", name="name_length"),
    sa.CheckConstraint("key_prefix ~ '^[A-Za-z0-9_]{8,16}$'", name="key_prefix_format"),
    sa.CheckConstraint("key_hash ~ '^[0-9a-f]{64}$'", name="key_hash_format"),
    sa.CheckConstraint(
        "cardinality(scopes) >= 1 AND scopes <@ ARRAY[" + ", ".join(f"'{s}'" for s in API_KEY_SCOPES) + "]::text[]",
        name="scopes_valid",
    ),
    sa.CheckConstraint("expires_at > created_at", name="expires_after_created"),
    sa.CheckConstraint("revoked_at >= created_at", name="revoked_after_created"),
    sa.Index(None, "user_id"),
    comment="API keys for the AI features, stored only as hashes, with scopes, expiry and revocation",
)
