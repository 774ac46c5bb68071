"""What a request's cache outcome is called, and the headers that say it (one place for both)."""

from __future__ import annotations

from enum import StrEnum

from ..store.base import Entry

__all__ = ["CacheStatus", "MissReason", "outcome_headers"]


class CacheStatus(StrEnum):
    """``X-Semcache-Status`` values (docs/ARCHITECTURE.md, "Headers")."""

    HIT_EXACT = "HIT-EXACT"
    HIT_SEMANTIC = "HIT-SEMANTIC"
    MISS = "MISS"
    # The proxy's own outcomes: the cache was not consulted, or was told to refresh.
    BYPASS = "BYPASS"
    REFRESH = "REFRESH"


class MissReason(StrEnum):
    """Why a request was not served from the cache: ``X-Semcache-Miss-Reason`` and the lookup
    JSON's ``miss_reason``."""

    NO_CANDIDATE = "no-candidate"  # nothing in the partition near the query
    BELOW_THRESHOLD = "below-threshold"  # the best candidate's cosine is under the threshold
    VERIFIER_REJECTED = "verifier-rejected"  # candidates passed the floor, the verifier said no
    HIT_FLOOR = "hit-floor"  # the nearest entry's wrong-hit floor excludes the query
    CONTEXT_DIFFERS = "context-differs"  # a near entry exists only under another context hash
    EXPIRED = "expired"  # the near entry had expired
    MAX_AGE = "max-age"  # a hit older than the request's Cache-Control max-age
    NO_CACHE = "no-cache"  # Cache-Control: no-cache (REFRESH)
    N_GT_1 = "n-gt-1"  # n > 1 asks for several answers (BYPASS)
    TEMPERATURE = "temperature"  # temperature over the ceiling (BYPASS)
    SERVER_STATE = "server-state"  # what the upstream stores decides the answer (BYPASS)


def outcome_headers(
    status: CacheStatus, entry: Entry | None, similarity: float | None, now: float
) -> dict[str, str]:
    """``X-Semcache-Status``, ``-Similarity``, ``-Entry-Id`` and ``Age`` of one outcome."""
    headers = {"X-Semcache-Status": str(status)}
    if similarity is not None:
        headers["X-Semcache-Similarity"] = f"{similarity:.4f}"
    if entry is not None:
        headers["X-Semcache-Entry-Id"] = entry.entry_id
        headers["Age"] = str(max(0, int(now - entry.created_at)))
    return headers
