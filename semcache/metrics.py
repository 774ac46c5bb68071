"""Prometheus metrics, one registry per app instance (no process-wide globals)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

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
        self.wrong_hits = Counter(
            "semcache_wrong_hits_reported",
            "Wrong semantic hits reported by clients (each raises one entry's hit floor).",
            registry=self.registry,
        )
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

        self.cost_usd = Counter(
            "semcache_cost_usd", "USD spent upstream, by model.", ["model"], registry=self.registry
        )
        self.saved_usd = Counter(
            "semcache_saved_usd",
            "USD saved by cache hits (what the answers cost the first time), by model.",
            ["model"],
            registry=self.registry,
        )
        self.prompt_cache_saved_usd = Counter(
            "semcache_prompt_cache_saved_usd",
            "USD saved by provider prompt caching (cached input tokens), by model.",
            ["model"],
            registry=self.registry,
        )
        self.unpriced_requests = Counter(
            "semcache_unpriced_requests",
            "Upstream calls to models missing from the pricing table.",
            ["model"],
            registry=self.registry,
        )
        self.prompt_cache_breakpoints = Counter(
            "semcache_prompt_cache_breakpoints",
            "cache_control breakpoints semcache added to Anthropic requests.",
            registry=self.registry,
        )
        self.budget_alerts = Counter(
            "semcache_budget_alerts",
            "Soft spend limits reached, by scope kind and period.",
            ["scope", "period"],
            registry=self.registry,
        )

    def record_cost(
        self,
        model: str,
        status: str,
        spent: Decimal | None,
        saved: Decimal,
        prompt_cache_saved: Decimal | None,
    ) -> None:
        """Count one request's money."""
        if spent is None:
            self.unpriced_requests.labels(model).inc()
        elif spent:
            self.cost_usd.labels(model).inc(float(spent))
        if saved:
            self.saved_usd.labels(model).inc(float(saved))
        if prompt_cache_saved and prompt_cache_saved > 0:
            self.prompt_cache_saved_usd.labels(model).inc(float(prompt_cache_saved))

    def track_entries(self, count: Callable[[], int]) -> None:
        """Read the entry count at scrape time."""
        self.entries.set_function(count)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
