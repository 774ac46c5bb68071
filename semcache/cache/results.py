"""What the cache service takes and answers: its settings, a lookup's result, an answer to
store (as given, and once checked)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..store.base import Entry, Partition
from .keys import RequestKeys
from .status import CacheStatus, outcome_headers

__all__ = ["CacheConfig", "LookupResult", "PreparedStore", "StoreItem"]


@dataclass(frozen=True)
class CacheConfig:
    """The settings the cache service acts on."""

    threshold: float = 0.9
    min_request_threshold: float = 0.5
    default_ttl_s: int = 86400
    max_ttl_s: int = 30 * 86400
    max_entries_per_tenant: int = 100_000
    search_k: int = 16
    max_query_chars: int = 16_384
    # Expired entries are kept this long for stale-if-error before the sweeper deletes them.
    stale_retention_s: float = 0.0
    # Most lookups one batched hit decision (a verifier pass) decides.
    decision_batch_max_size: int = 64


@dataclass(frozen=True)
class LookupResult:
    """What a lookup found: a status, the entry served (if any) and its similarity."""

    status: CacheStatus
    entry: Entry | None = None
    similarity: float | None = None
    keys: RequestKeys | None = None
    # The query's embedding when the semantic layer computed one; a store after a miss reuses
    # it instead of embedding the same text twice.
    vector: np.ndarray | None = None
    # Why a lookup missed (``MissReason``); None on a hit.
    miss_reason: str | None = None
    # The verifier's best hit probability when it rejected the candidates.
    verifier_score: float | None = None

    @property
    def hit(self) -> bool:
        return self.entry is not None

    def headers(self, now: float) -> dict[str, str]:
        """The X-Semcache-* headers and ``Age`` of this outcome (with the miss reason and the
        verifier's score on a miss)."""
        headers = outcome_headers(self.status, self.entry, self.similarity, now)
        if self.entry is None and self.miss_reason is not None:
            headers["X-Semcache-Miss-Reason"] = self.miss_reason
        if self.entry is None and self.verifier_score is not None:
            headers["X-Semcache-Verifier-Score"] = f"{self.verifier_score:.4f}"
        return headers


@dataclass(frozen=True)
class StoreItem:
    """One answer to store, as ``CacheService.store`` takes it."""

    partition: Partition
    request: Mapping[str, Any]
    response: Any
    ttl_s: float | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PreparedStore:
    """A ``StoreItem`` that passed the store's checks, with its keys and TTL in seconds."""

    item: StoreItem
    keys: RequestKeys
    ttl_s: float
