"""Keys, the hit decision and the lookup/store service."""

from __future__ import annotations

from .decision import HitDecision, ThresholdDecision
from .keys import Partition, RequestKeys, request_keys
from .results import CacheConfig, LookupResult
from .service import HIT_EXACT, HIT_SEMANTIC, MISS, CacheService

__all__ = [
    "HIT_EXACT",
    "HIT_SEMANTIC",
    "MISS",
    "CacheConfig",
    "CacheService",
    "HitDecision",
    "LookupResult",
    "Partition",
    "RequestKeys",
    "ThresholdDecision",
    "request_keys",
]
