"""What a request's cache outcome is called, and the headers that say it (one place for both)."""

from __future__ import annotations

from enum import StrEnum

from ..store.base import Entry

__all__ = ["CacheStatus", "outcome_headers"]


class CacheStatus(StrEnum):
    """``X-Semcache-Status`` values (docs/ARCHITECTURE.md, "Headers")."""

    HIT_EXACT = "HIT-EXACT"
    HIT_SEMANTIC = "HIT-SEMANTIC"
    MISS = "MISS"
    # The proxy's own outcomes: the cache was not consulted, or was told to refresh.
    BYPASS = "BYPASS"
    REFRESH = "REFRESH"


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
