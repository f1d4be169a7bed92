"""Names, places and words the demo data is drawn from, and the small helpers that draw them."""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from datetime import datetime, timedelta

# --------------------------------------------------------------------------------------------- vocabulary

_B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_FIRST = ("Emma", "Liam", "Olivia", "Noah", "Mia", "Lukas", "Léa", "Hugo", "Sofia", "Mateo", "Yuki", "Haruto",
          "Ji-woo", "Min-jun", "Ananya", "Arjun", "Freja", "Oscar", "Lucía", "Diego", "Chloé", "Jonas", "Ava",
          "Ethan", "Amara", "Chidi", "Zofia", "Jakub", "Giulia", "Marco", "Ingrid", "Lars", "Aisha", "Omar",
          "Camila", "Gabriel", "Hannah", "Felix", "Sakura", "Kenji")
_LAST = ("Smith", "Müller", "Martin", "García", "Rossi", "Tanaka", "Kim", "Sharma", "Andersson", "Kowalski",
         "Silva", "Dubois", "Schmidt", "Johnson", "Lopez", "Nakamura", "Park", "Patel", "Nilsson", "Nowak",
         "Santos", "Bernard", "Fischer", "Brown", "Hernández", "Ricci", "Suzuki", "Lee", "Okafor", "Jansen")
_ASCII = str.maketrans("éüáíóúñøåäöłçšž", "euaiounoaaolcsz")
#: country, weight, locale, ISRC registrant country
_COUNTRIES = (("US", 22, "en-US"), ("GB", 8, "en-GB"), ("DE", 9, "de-DE"), ("FR", 7, "fr-FR"), ("ES", 5, "es-ES"),
              ("MX", 6, "es-MX"), ("BR", 8, "pt-BR"), ("SE", 3, "sv-SE"), ("JP", 6, "ja-JP"), ("KR", 4, "ko-KR"),
              ("IN", 6, "en-IN"), ("NL", 3, "nl-NL"), ("IT", 4, "it-IT"), ("CA", 4, "en-CA"), ("AU", 3, "en-AU"),
              ("PL", 3, "pl-PL"), ("NG", 2, "en-NG"))
_ALL_MARKETS = sorted({c for c, _, _ in _COUNTRIES} | {
    "AR", "AT", "BE", "CH", "CL", "CO", "CZ", "DK", "FI", "GR", "HU", "ID", "IE", "IL", "NO", "NZ", "PE", "PH",
    "PT", "RO", "SG", "TH", "TR", "TW", "UA", "ZA"})
_GENRES = ("pop", "indie pop", "rock", "indie rock", "hip hop", "trap", "r&b", "soul", "jazz", "electronic",
           "house", "techno", "ambient", "classical", "k-pop", "j-pop", "reggaeton", "latin pop", "afrobeats",
           "folk", "metal", "punk", "lo-fi", "synthwave", "country")
_LABELS = ("Northern Lights Records", "Blue Harbor Music", "Neon Alley", "Atlas Sound", "Koi Records",
           "Sol y Sombra", "Lagos Beat", "Polar Tapes", "Midnight Bloom", "Independent")
#: English word and its translations: titles are built from these so a translation really translates.
_WORDS: tuple[dict[str, str], ...] = (
    {"en": "Midnight", "de": "Mitternacht", "fr": "Minuit", "es": "Medianoche", "ja": "真夜中"},
    {"en": "City", "de": "Stadt", "fr": "Ville", "es": "Ciudad", "ja": "街"},
    {"en": "Dreams", "de": "Träume", "fr": "Rêves", "es": "Sueños", "ja": "夢"},
    {"en": "Summer", "de": "Sommer", "fr": "Été", "es": "Verano", "ja": "夏"},
    {"en": "Rain", "de": "Regen", "fr": "Pluie", "es": "Lluvia", "ja": "雨"},
    {"en": "Fire", "de": "Feuer", "fr": "Feu", "es": "Fuego", "ja": "炎"},
    {"en": "Ocean", "de": "Ozean", "fr": "Océan", "es": "Océano", "ja": "海"},
    {"en": "Stars", "de": "Sterne", "fr": "Étoiles", "es": "Estrellas", "ja": "星"},
    {"en": "Heart", "de": "Herz", "fr": "Cœur", "es": "Corazón", "ja": "心"},
    {"en": "Road", "de": "Straße", "fr": "Route", "es": "Camino", "ja": "道"},
    {"en": "Light", "de": "Licht", "fr": "Lumière", "es": "Luz", "ja": "光"},
    {"en": "Shadows", "de": "Schatten", "fr": "Ombres", "es": "Sombras", "ja": "影"},
    {"en": "Gold", "de": "Gold", "fr": "Or", "es": "Oro", "ja": "金"},
    {"en": "Echoes", "de": "Echos", "fr": "Échos", "es": "Ecos", "ja": "こだま"},
    {"en": "Wild", "de": "Wild", "fr": "Sauvage", "es": "Salvaje", "ja": "ワイルド"},
    {"en": "Home", "de": "Zuhause", "fr": "Maison", "es": "Hogar", "ja": "家"},
    {"en": "Tonight", "de": "Heute Nacht", "fr": "Ce soir", "es": "Esta noche", "ja": "今夜"},
    {"en": "Blue", "de": "Blau", "fr": "Bleu", "es": "Azul", "ja": "青"},
    {"en": "Neon", "de": "Neon", "fr": "Néon", "es": "Neón", "ja": "ネオン"},
    {"en": "Forever", "de": "Für immer", "fr": "Pour toujours", "es": "Para siempre", "ja": "永遠"},
    {"en": "Moon", "de": "Mond", "fr": "Lune", "es": "Luna", "ja": "月"},
    {"en": "Waves", "de": "Wellen", "fr": "Vagues", "es": "Olas", "ja": "波"},
    {"en": "Electric", "de": "Elektrisch", "fr": "Électrique", "es": "Eléctrico", "ja": "エレクトリック"},
    {"en": "Paradise", "de": "Paradies", "fr": "Paradis", "es": "Paraíso", "ja": "楽園"},
)
_TRANSLATION_LOCALES = ("de", "fr", "es", "ja")
#: name, version, framework, status, trained (days before ANCHOR)
_MODELS: tuple[tuple[str, str, str, str, int], ...] = (
    ("track-recommender", "1.0.0", "pytorch", "archived", 730),
    ("track-recommender", "1.1.0", "pytorch", "archived", 450),
    ("track-recommender", "1.2.0", "pytorch", "production", 180),
    ("track-recommender", "1.3.0-rc1", "pytorch", "staging", 12),
    ("artist-matcher", "0.9.0", "tensorflow", "archived", 400),
    ("artist-matcher", "1.0.0", "tensorflow", "production", 200),
    ("lyrics-generator", "2025-09", "huggingface", "archived", 420),
    ("lyrics-generator", "2026-03", "huggingface", "production", 240),
    ("playlist-describer", "1.0.0", "huggingface", "production", 300),
    ("genre-classifier", "3.2.1", "scikit-learn", "production", 500),
    ("genre-classifier", "3.3.0", "scikit-learn", "failed", 30),
    ("churn-predictor", "0.1.0", "xgboost", "registered", 5),
)
_ROLES_FOR_ARTISTS = ("producer", "songwriter", "vocalist", "instrumentalist", "featured_artist")
_ROLES_FOR_USERS = ("mixer", "instrumentalist", "songwriter", "producer")
_PURPOSES = ("analytics", "personalization", "marketing", "ai_training", "collaboration_matching",
             "third_party_sharing")
_SCOPES = ("ai:generate", "ai:read", "recommendations:read", "recommendations:write", "models:read",
           "models:write", "analytics:read")
#: analytics event types and their share of events (percent, sums to 100)
_EVENTS = (("play", 50), ("skip", 18), ("like", 6), ("search", 8), ("playlist.add", 5),
           ("recommendation.impression", 8), ("recommendation.click", 3), ("share", 2))
_DEVICES = (("mobile", 55), ("desktop", 18), ("web", 10), ("tablet", 5), ("speaker", 5), ("tv", 3), ("car", 3),
            ("console", 1))
_SOURCES = ("album", "playlist", "radio", "search", "recommendation", "artist")


def _ascii(text: str) -> str:
    return text.translate(_ASCII).lower().replace(" ", "").replace("-", "")


def _b62(rng: random.Random, n: int = 22) -> str:
    return "".join(rng.choices(_B62, k=n))


def _weighted(rng: random.Random, items: Sequence[tuple[str, int]]) -> str:
    return rng.choices([i[0] for i in items], weights=[i[1] for i in items])[0]


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    if end <= start:
        return start
    span = (end - start).total_seconds()
    return start + timedelta(seconds=int(rng.random() * span))


def _gtin_check(digits: str) -> str:
    """The GS1 check digit, so a UPC-A (12) or EAN-13 passes a scanner's check."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


def _title(rng: random.Random, words: int) -> list[dict[str, str]]:
    return rng.sample(_WORDS, words)


def _in(locale: str, parts: list[dict[str, str]]) -> str:
    sep = "" if locale == "ja" else " "
    return sep.join(p[locale] for p in parts)


