"""Migration 003: the model registry, AI content, recommendations, ML logs and API keys."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from _model_db import connect, insert, make_model_version, make_track, make_user, rejected
from psycopg import errors
from psycopg.types.json import Jsonb


@pytest.fixture
def db(migrated_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with connect(migrated_url) as conn:
        yield conn


def _recommend(db: psycopg.Connection[Any], **values: Any) -> int:
    defaults = {"user_id": make_user(db), "track_id": make_track(db), "model_version_id": make_model_version(db),
                "score": 0.5, "context": "home"}
    return insert(db, "recommendations", **{**defaults, **values})


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_model_version_is_unique_per_name_and_version(db: psycopg.Connection[Any]) -> None:
    make_model_version(db, name="lyrics-gen", version="1.0.0", metrics=Jsonb({"bleu": 0.31}),
                       artifact_uri="s3://models/lyrics-gen/1.0.0")
    make_model_version(db, name="lyrics-gen", version="1.1.0")
    with rejected(errors.UniqueViolation, "model_versions_name_version_key"):
        make_model_version(db, name="lyrics-gen", version="1.0.0")


def test_only_one_production_version_per_model_name(db: psycopg.Connection[Any]) -> None:
    make_model_version(db, name="recommender", version="1", status="production")
    make_model_version(db, name="other-model", version="1", status="production")
    old = make_model_version(db, name="recommender", version="2", status="staging")
    with rejected(errors.UniqueViolation, "model_versions_one_production_idx"):
        db.execute("UPDATE model_versions SET status = 'production' WHERE id = %s", [old])


@pytest.mark.parametrize(("column", "value", "constraint"), [
    ("framework", "caffe-ish", "model_versions_framework_valid_check"),
    ("status", "live", "model_versions_status_valid_check"),
    ("metrics", [1, 2], "model_versions_metrics_object_check"),
    ("artifact_uri", "/tmp/model.bin", "model_versions_artifact_uri_format_check"),
    ("name", "Track Recommender", "model_versions_name_format_check"),
])
def test_malformed_model_version_is_rejected(
    db: psycopg.Connection[Any], column: str, value: Any, constraint: str,
) -> None:
    with rejected(errors.CheckViolation, constraint):
        make_model_version(db, **{column: Jsonb(value) if column == "metrics" else value})


@pytest.mark.parametrize("score", [-0.001, 1.001, float("nan")])
def test_recommendation_score_outside_0_to_1_is_rejected(db: psycopg.Connection[Any], score: float) -> None:
    with rejected(errors.CheckViolation, "recommendations_score_range_check"):
        _recommend(db, score=score)


@pytest.mark.parametrize("score", [0.0, 1.0, 0.734])
def test_recommendation_score_within_0_to_1_is_accepted(db: psycopg.Connection[Any], score: float) -> None:
    _recommend(db, score=score, reason="Because you liked Daft Punk")


def test_click_needs_an_earlier_serve(db: psycopg.Connection[Any]) -> None:
    with rejected(errors.CheckViolation, "recommendations_clicked_after_served_check"):
        _recommend(db, clicked_at="2026-01-01T10:00:00Z")
    with rejected(errors.CheckViolation, "recommendations_clicked_after_served_check"):
        _recommend(db, served_at="2026-01-01T10:00:00Z", clicked_at="2026-01-01T09:59:00Z")
    _recommend(db, served_at="2026-01-01T10:00:00Z", clicked_at="2026-01-01T10:00:05Z")


def test_unknown_recommendation_context_is_rejected(db: psycopg.Connection[Any]) -> None:
    with rejected(errors.CheckViolation, "recommendations_context_valid_check"):
        _recommend(db, context="billboard")


def test_model_version_that_produced_rows_cannot_be_deleted(db: psycopg.Connection[Any]) -> None:
    model = make_model_version(db)
    _recommend(db, model_version_id=model)
    with rejected(errors.ForeignKeyViolation, "recommendations_model_version_id_fkey"):
        db.execute("DELETE FROM model_versions WHERE id = %s", [model])
    db.execute("UPDATE model_versions SET status = 'archived' WHERE id = %s", [model])


def test_ai_content_keeps_numbered_versions_with_their_model(db: psycopg.Connection[Any]) -> None:
    user, model = make_user(db), make_model_version(db, name="lyrics-gen")
    content = insert(db, "ai_content", user_id=user, kind="lyrics", locale="fr", track_id=make_track(db))
    insert(db, "ai_content_versions", content_id=content, version=1, body="La la la", model_version_id=model,
           prompt="a chorus about summer")
    insert(db, "ai_content_versions", content_id=content, version=2, body="La la lo", edited_by_user_id=user)
    with rejected(errors.UniqueViolation, "ai_content_versions_content_id_version_key"):
        insert(db, "ai_content_versions", content_id=content, version=2, body="again")
    with rejected(errors.CheckViolation, "ai_content_kind_valid_check"):
        insert(db, "ai_content", user_id=user, kind="podcast")


def test_ml_log_records_latency_and_requires_an_error_message_on_failure(db: psycopg.Connection[Any]) -> None:
    model = make_model_version(db)
    insert(db, "ml_logs", model_version_id=model, event_type="inference", latency_ms=12.5)
    insert(db, "ml_logs", model_version_id=model, event_type="training", status="error", error="OOM")
    with rejected(errors.CheckViolation, "ml_logs_error_iff_failed_check"):
        insert(db, "ml_logs", model_version_id=model, event_type="evaluation", status="error")
    with rejected(errors.CheckViolation, "ml_logs_latency_ms_nonnegative_check"):
        insert(db, "ml_logs", model_version_id=model, event_type="inference", latency_ms=-1)
    with rejected(errors.CheckViolation, "ml_logs_event_type_valid_check"):
        insert(db, "ml_logs", model_version_id=model, event_type="deployment")


def test_api_key_is_stored_as_a_sha256_hash_with_known_scopes(db: psycopg.Connection[Any]) -> None:
    user = make_user(db)
    insert(db, "api_keys", user_id=user, name="studio", key_prefix="ak_3f9a2b", key_hash=_key_hash("ak_3f9a2b.secret"),
           scopes=["ai:generate", "recommendations:read"], expires_at="2099-01-01T00:00:00Z")
    with rejected(errors.CheckViolation, "api_keys_key_hash_format_check"):
        insert(db, "api_keys", user_id=user, name="plain", key_prefix="ak_plain1", key_hash="ak_plain1.secret",
               scopes=["ai:read"])
    with rejected(errors.UniqueViolation, "api_keys_key_hash_key"):
        insert(db, "api_keys", user_id=user, name="copy", key_prefix="ak_other1",
               key_hash=_key_hash("ak_3f9a2b.secret"), scopes=["ai:read"])
    for scopes in ([], ["ai:read", "root"]):
        with rejected(errors.CheckViolation, "api_keys_scopes_valid_check"):
            insert(db, "api_keys", user_id=user, name="bad", key_prefix="ak_bad001", key_hash=_key_hash("x"),
                   scopes=scopes)
    with rejected(errors.CheckViolation, "api_keys_expires_after_created_check"):
        insert(db, "api_keys", user_id=user, name="old", key_prefix="ak_old001", key_hash=_key_hash("y"),
               scopes=["ai:read"], expires_at="2000-01-01T00:00:00Z")


def test_erasing_a_user_removes_their_ai_data_and_anonymises_ml_logs(db: psycopg.Connection[Any]) -> None:
    user, model = make_user(db), make_model_version(db)
    _recommend(db, user_id=user, model_version_id=model)
    content = insert(db, "ai_content", user_id=user, kind="bio")
    insert(db, "api_keys", user_id=user, name="k", key_prefix="ak_erase1", key_hash=_key_hash("z"), scopes=["ai:read"])
    log = insert(db, "ml_logs", model_version_id=model, event_type="inference", user_id=user, latency_ms=3)
    other = make_user(db)
    edited = insert(db, "ai_content", user_id=other, kind="bio")
    version = insert(db, "ai_content_versions", content_id=edited, version=1, body="x", edited_by_user_id=user)

    db.execute("DELETE FROM users WHERE id = %s", [user])

    counts = db.execute(
        "SELECT (SELECT count(*) FROM recommendations WHERE user_id = %(u)s),"
        " (SELECT count(*) FROM ai_content WHERE id = %(c)s),"
        " (SELECT count(*) FROM api_keys WHERE user_id = %(u)s)", {"u": user, "c": content},
    ).fetchone()
    assert counts == (0, 0, 0)
    assert db.execute("SELECT user_id FROM ml_logs WHERE id = %s", [log]).fetchone() == (None,)
    row = db.execute("SELECT edited_by_user_id FROM ai_content_versions WHERE id = %s", [version]).fetchone()
    assert row == (None,)
