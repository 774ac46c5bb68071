"""Builds the FastAPI app from its parts; no logic of its own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import logging
import platform
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .api import cache_aside, dashboard, ops, proxy, usage
from .api.auth import KeyRing
from .api.deps import Services, principal_of
from .api.errors import install_error_handlers
from .api.requestlog import RequestLogMiddleware
from .cache.decision import HitDecision, ThresholdDecision
from .cache.results import CacheConfig
from .cache.service import CacheService
from .cache.verifier import VerifiedDecision
from .config import Settings
from .embed.batcher import MicroBatcher
from .embed.encoder import Encoder
from .errors import StorageError
from .levers.config import load_levers
from .levers.pricing import PricingTable
from .levers.tokens import TokenCounter
from .levers.usage import UsageService
from .metrics import CacheMetrics
from .proxy.call import ProxyConfig
from .proxy.flow import ProxyService
from .proxy.policy import Policy
from .store.base import CacheStore
from .store.factory import open_store
from .telemetry import build_tracing
from .upstream.client import ProviderEndpoint, UpstreamClient, UpstreamConfig
from .upstream.probe import UpstreamProbe
from .upstream.retry import RetryPolicy

__all__ = ["build_services", "create_app", "load_encoder"]

log = logging.getLogger(__name__)


def hit_decision(settings: Settings) -> tuple[HitDecision, float]:
    """The configured hit decision and the cosine threshold it works with."""
    if settings.hit_decision == "cosine":
        threshold = settings.threshold if settings.threshold is not None else 0.9
        return ThresholdDecision(), threshold
    verifier = VerifiedDecision(
        max_candidates=settings.verifier_max_candidates,
        score_threshold=settings.verifier_score_threshold,
        runtime=settings.inference_runtime,
        models_dir=settings.resolved_models_dir,
        threads=settings.embedding_threads or None,
        precision=settings.verifier_precision,
    )
    threshold = settings.threshold if settings.threshold is not None else verifier.cosine_floor
    return verifier, threshold


def load_encoder(settings: Settings) -> Encoder:
    """The configured encoder (model, runtime, threads, ONNX cache folder)."""
    return Encoder(
        settings.embedding_model or None,
        threads=settings.embedding_threads or None,
        runtime=settings.inference_runtime,
        models_dir=settings.resolved_models_dir,
        precision=settings.encoder_precision,
    )


def open_configured_store(settings: Settings, dim: int) -> CacheStore:
    """The store the settings name, for vectors of ``dim`` (``open_store``)."""
    return open_store(
        settings.resolved_database_url,
        data_dir=Path(settings.data_dir),
        dim=dim,
        write_timeout_s=settings.store_write_timeout_s,
        min_free_disk_mb=settings.min_free_disk_mb,
        pool_size=settings.database_pool_size,
        ef_search=settings.hnsw_ef_search,
        approximate_min_entries=settings.approximate_index_min_entries,
        approximate_ef_search=settings.approximate_index_ef_search,
        approximate_kind=settings.approximate_index,
        approximate_nprobe=settings.approximate_index_nprobe,
        rebuild_deleted_fraction=settings.index_rebuild_deleted_fraction,
    )


def cache_config(settings: Settings, threshold: float) -> CacheConfig:
    """The cache service's slice of the settings."""
    return CacheConfig(
        threshold=threshold,
        min_request_threshold=settings.min_request_threshold,
        default_ttl_s=settings.default_ttl_s,
        max_ttl_s=settings.max_ttl_s,
        max_entries_per_tenant=settings.max_entries_per_tenant,
        search_k=settings.search_k,
        max_query_chars=settings.max_query_chars,
        stale_retention_s=settings.stale_if_error_s,
        decision_batch_max_size=settings.batch_max_size,
    )


def build_services(
    settings: Settings,
    *,
    encoder: Encoder | None = None,
    decision: tuple[HitDecision, float] | None = None,
) -> Services:
    """Open the store, load the encoder and wire the cache service. Raises ``SemcacheError``.

    ``decision`` (a hit decision and its cosine threshold) replaces the one the settings
    name; benchmarks pass one that records its scores.
    """
    # Everything a typo can break is read before the model loads, so it fails in a second.
    keyring = KeyRing.from_settings(settings.api_keys, settings.api_keys_file)
    levers = load_levers(settings.levers_file)
    pricing = PricingTable.load(settings.pricing_file or None)
    tracing = build_tracing(settings)
    encoder = encoder or load_encoder(settings)
    store = open_configured_store(settings, encoder.dim)
    metrics = CacheMetrics()
    metrics.track_entries(store.count_entries)
    batcher = MicroBatcher(
        encoder.encode,
        max_size=settings.batch_max_size,
        max_wait_s=settings.batch_max_wait_ms / 1000,
    )
    chosen, threshold = decision or hit_decision(settings)
    cache = CacheService(
        cache_config(settings, threshold),
        store,
        batcher,
        decision=chosen,
        metrics=metrics,
        tracing=tracing,
    )
    # The loaded verifier's precision (fp32 on torch whatever the setting says); none: cosine.
    verifier_precision = str(getattr(chosen, "precision", "none"))
    track_store(metrics, store, settings, encoder.precision, verifier_precision)
    upstream = UpstreamClient(upstream_config(settings), observer=metrics)
    attribution = store.attribution()
    # On a shared store (PostgreSQL) rate limits and spend budgets hold for every replica.
    shared_buckets = getattr(store, "shared_buckets", None)
    spend_ledger = getattr(store, "spend_ledger", None)
    policy = Policy(
        levers,
        pricing,
        TokenCounter(),
        attribution,
        metrics,
        buckets=shared_buckets() if shared_buckets else None,
        ledger=spend_ledger() if spend_ledger else None,
    )
    policy.seed_spend()
    proxy = ProxyService(
        ProxyConfig(
            max_temperature=settings.cache_max_temperature,
            stale_if_error_s=settings.stale_if_error_s,
        ),
        cache,
        upstream,
        policy,
        tracing=tracing,
    )
    usage = UsageService(attribution, levers, policy.flush)
    probe = None
    if settings.upstream_probe_interval_s > 0 and configured_upstreams(settings):
        probe = UpstreamProbe(
            configured_upstreams(settings),
            interval_s=settings.upstream_probe_interval_s,
            timeout_s=min(settings.upstream_connect_timeout_s, 5.0),
        )
    return Services(
        settings,
        keyring,
        encoder,
        store,
        batcher,
        metrics,
        cache,
        upstream,
        proxy,
        usage,
        probe=probe,
        tracing=tracing,
    )


def configured_upstreams(settings: Settings) -> dict[str, str]:
    """The upstreams semcache is set up to call: a key or a base URL of its own given, or
    every one when clients send their own keys. These are the ones /readyz probes."""
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    out: dict[str, str] = {}
    for name in ("openai", "anthropic"):
        url = getattr(settings, f"{name}_base_url")
        key = getattr(settings, f"{name}_api_key")
        if key or url != defaults[f"{name}_base_url"] or settings.forward_client_key:
            out[name] = url
    return out


def track_store(
    metrics: CacheMetrics,
    store: CacheStore,
    settings: Settings,
    encoder_precision: str,
    verifier_precision: str = "none",
) -> None:
    """Index gauges and build info for ``/metrics`` (``encoder_precision``: the loaded
    encoder's, fp32 on torch whatever the setting says; ``verifier_precision`` likewise the
    loaded verifier's, none without one)."""
    backend = "postgres" if settings.resolved_database_url.startswith("postgresql") else "faiss"
    faiss_dir = Path(settings.data_dir) / "faiss"

    def size() -> float:
        if backend == "faiss":
            return float(sum(f.stat().st_size for f in faiss_dir.rglob("*") if f.is_file()))
        measure = getattr(store, "index_size_bytes", None)
        return float(measure()) if callable(measure) else float("nan")

    metrics.track_index(backend, store.count_entries, size)
    metrics.build.info(
        {
            "version": _version(),
            "python": platform.python_version(),
            "runtime": settings.inference_runtime,
            "encoder_precision": encoder_precision,
            "verifier_precision": verifier_precision,
            "store": backend,
            "hit_decision": settings.hit_decision,
        }
    )


def _version() -> str:
    try:
        return importlib.metadata.version("semcache")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def upstream_config(settings: Settings) -> UpstreamConfig:
    """The upstream client's slice of the settings."""
    return UpstreamConfig(
        openai=ProviderEndpoint(
            settings.openai_base_url,
            settings.openai_api_key,
            settings.openai_read_timeout_s or None,
        ),
        anthropic=ProviderEndpoint(
            settings.anthropic_base_url,
            settings.anthropic_api_key,
            settings.anthropic_read_timeout_s or None,
        ),
        forward_headers=tuple(
            h.strip().lower() for h in settings.upstream_forward_headers.split(",") if h.strip()
        ),
        connect_timeout_s=settings.upstream_connect_timeout_s,
        read_timeout_s=settings.upstream_read_timeout_s,
        retry=RetryPolicy(
            max_retries=settings.upstream_max_retries,
            base_s=settings.upstream_backoff_base_s,
            max_s=settings.upstream_backoff_max_s,
            retry_after_max_s=settings.retry_after_max_s,
        ),
    )


async def _every(interval_s: float, job: Callable[[], Awaitable[object]], name: str) -> None:
    """Run ``job`` every ``interval_s`` until cancelled; a failed round never stops the loop."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await job()
        except StorageError as exc:
            # Expected while the store is busy or down: the next round retries, and /readyz
            # reports the store.
            log.warning("%s failed: %s", name, exc.message)
        except Exception:
            # A bug: say so loudly, with the traceback, and keep sweeping and flushing.
            log.exception("%s failed unexpectedly; retrying in %gs", name, interval_s)


def create_app(services: Services) -> FastAPI:
    """The ASGI app over already-built services."""
    settings = services.settings

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks = [
            *([asyncio.create_task(services.probe.run())] if services.probe else []),
            asyncio.create_task(_every(settings.sweep_interval_s, services.cache.sweep, "sweep")),
            asyncio.create_task(_every(1.0, services.cache.flush_hits, "hit flush")),
            asyncio.create_task(_every(1.0, services.proxy.policy.flush, "attribution flush")),
            asyncio.create_task(
                _every(
                    settings.index_save_interval_s,
                    lambda: asyncio.to_thread(services.store.flush),
                    "index save",
                )
            ),
            # Entries another process stored (`semcache import` beside this server).
            asyncio.create_task(
                _every(1.0, lambda: asyncio.to_thread(services.store.catch_up), "catch-up")
            ),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await services.proxy.drain()
            await services.proxy.policy.drain()
            await services.cache.flush_hits()
            await services.proxy.policy.flush()
            await services.batcher.close()
            await services.cache.stop_batching()
            await services.upstream.aclose()
            await asyncio.to_thread(services.cache.close)
            await asyncio.to_thread(services.store.close)
            # Last, so the spans of the stores drained above go out too.
            await asyncio.to_thread(services.tracing.shutdown)

    guarded = not services.keyring.open
    app = FastAPI(
        title="semcache",
        summary="A semantic cache and cost-control tier for LLM traffic",
        lifespan=lifespan,
        # With keys configured the API description is for key holders only: /openapi.json
        # asks for a key (below), and the docs pages, which a browser cannot send a key from
        # and which load their scripts from a CDN, are not served.
        openapi_url=None if guarded else "/openapi.json",
        docs_url=None if guarded else "/docs",
        redoc_url=None if guarded else "/redoc",
        # FastAPI's own OpenTelemetry, which reads the global providers (and the environment)
        # on every request: semcache's spans come from its own provider (telemetry.py), and
        # the check alone was a few percent of an exact hit's CPU time.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    if guarded:

        @app.get("/openapi.json", include_in_schema=False)
        async def openapi(request: Request) -> JSONResponse:
            principal_of(request)
            return JSONResponse(app.openapi())

    install_error_handlers(app)
    app.add_middleware(
        RequestLogMiddleware,
        journal=services.journal,
        enabled=settings.log_requests,
        log_prompts=settings.log_prompts,
        tracing=services.tracing,
    )
    app.include_router(ops.router)
    app.include_router(cache_aside.router)
    app.include_router(proxy.router)
    app.include_router(usage.router)
    app.include_router(dashboard.router)
    app.mount("/dashboard/static", dashboard.static_files(), name="dashboard-static")
    return app
