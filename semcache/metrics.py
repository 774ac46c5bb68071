"""Prometheus metrics, one registry per app instance (no process-wide globals)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from .requestlog import add_upstream_time

__all__ = ["CacheMetrics"]

_UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


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

        self.upstream_seconds = Histogram(
            "semcache_upstream_request_seconds",
            "Upstream call attempts: time to the answer's headers (its body too when not "
            "streamed), by provider, model and status (the HTTP status, timeout or "
            "connect_error).",
            ["provider", "model", "status"],
            buckets=_UPSTREAM_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "semcache_upstream_errors",
            "Upstream call attempts that failed (not 200), by provider, model and status.",
            ["provider", "model", "status"],
            registry=self.registry,
        )
        self.upstream_retries = Counter(
            "semcache_upstream_retries",
            "Upstream retries, by provider, model and the status that caused them.",
            ["provider", "model", "status"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "semcache_rejected_requests",
            "Proxy requests refused before an answer: rate_limit (RPM/TPM), budget (a hard "
            "spend limit) or client_error (another 4xx).",
            ["reason"],
            registry=self.registry,
        )
        self.hit_decisions = Counter(
            "semcache_hit_decisions",
            "Semantic candidates over the threshold judged by the hit decision: decision "
            "verified (the verifier) or cosine; outcome accept or reject.",
            ["decision", "outcome"],
            registry=self.registry,
        )
        self.index_entries = Gauge(
            "semcache_index_entries",
            "Entries in the vector index, by store backend.",
            ["backend"],
            registry=self.registry,
        )
        self.index_bytes = Gauge(
            "semcache_index_size_bytes",
            "Size of the vector index, by store backend: the FAISS files on disk, or "
            "PostgreSQL's HNSW index (pg_relation_size).",
            ["backend"],
            registry=self.registry,
        )
        self.build = Info(
            "semcache_build", "semcache's version and what it runs on.", registry=self.registry
        )

    # -- the upstream client's observer (upstream.client.UpstreamObserver) ----------------------

    def upstream_attempt(self, provider: str, model: str, status: str, seconds: float) -> None:
        """One upstream call attempt ended with ``status`` after ``seconds``."""
        self.upstream_seconds.labels(provider, model, status).observe(seconds)
        if status != "200":
            self.upstream_errors.labels(provider, model, status).inc()
        add_upstream_time(seconds)

    def upstream_retry(self, provider: str, model: str, status: str) -> None:
        self.upstream_retries.labels(provider, model, status).inc()

    def track_index(
        self, backend: str, entries: Callable[[], int], size: Callable[[], float]
    ) -> None:
        """Read the index's entry count and size at scrape time."""
        self.index_entries.labels(backend).set_function(entries)
        self.index_bytes.labels(backend).set_function(size)

    def upstream_summary(self) -> list[dict[str, Any]]:
        """Per (provider, model, status): attempts, mean and ~p95 ms (for the dashboard)."""
        counts: dict[tuple[str, str, str], float] = {}
        sums: dict[tuple[str, str, str], float] = {}
        buckets: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
        for metric in self.upstream_seconds.collect():
            for sample in metric.samples:
                labels = sample.labels
                key = (labels["provider"], labels["model"], labels["status"])
                if sample.name.endswith("_count"):
                    counts[key] = sample.value
                elif sample.name.endswith("_sum"):
                    sums[key] = sample.value
                elif sample.name.endswith("_bucket"):
                    buckets.setdefault(key, []).append((float(labels["le"]), sample.value))
        rows = []
        for key, count in sorted(counts.items()):
            if not count:
                continue
            rows.append(
                {
                    "provider": key[0],
                    "model": key[1],
                    "status": key[2],
                    "count": int(count),
                    "mean_ms": round(sums.get(key, 0.0) / count * 1000, 2),
                    "p95_ms": _quantile(sorted(buckets.get(key, [])), count, 0.95),
                }
            )
        return rows

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


def _quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket holding quantile ``q``."""
    if not count:
        return None
    for bound, cumulative in buckets:
        if cumulative >= q * count:
            return None if bound == float("inf") else round(bound * 1000, 2)
    return None
