"""Prometheus metrics, one registry per app instance (no process-wide globals)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CacheMetrics"]


class CacheMetrics:
    """The cache's counters and histograms, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.lookups = Counter(
            "semcache_lookups",
            "Cache lookups by outcome (HIT-EXACT, HIT-SEMANTIC, MISS, BYPASS).",
            ["status"],
            registry=self.registry,
        )
        self.lookup_seconds = Histogram(
            "semcache_lookup_seconds",
            "Time to answer a lookup, embedding and search included.",
            ["status"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.stores = Counter("semcache_stores", "Entries stored.", registry=self.registry)
        self.store_failures = Counter(
            "semcache_store_failures",
            "Answers the proxy could not store (the client still got them).",
            registry=self.registry,
        )
        self.evictions = Counter(
            "semcache_evictions",
            "Entries removed by the cache itself: lru (tenant over its limit) or expired.",
            ["reason"],
            registry=self.registry,
        )
        self.entries = Gauge(
            "semcache_entries", "Entries currently held, all tenants.", registry=self.registry
        )

    def track_entries(self, count: Callable[[], int]) -> None:
        """Read the entry count at scrape time."""
        self.entries.set_function(count)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
