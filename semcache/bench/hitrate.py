"""Hit quality through the real cache code path (docs/ARCHITECTURE.md, "Measuring hit quality").

Every labelled pair gets its own partition (namespace = the pair's index), so pairs never see
each other's entries. For each pair the cached query ``a`` is stored as a one-message chat
request and the new query ``b`` is looked up, both through ``CacheService`` over a
``SqlFaissStore`` in a temporary folder, with the bundled encoder behind a ``MicroBatcher``:
the same wiring ``semcache serve`` builds (``semcache.app.build_services``), so the verdict
recorded is the one the shipped hit decision at the configured threshold gives. Pairs run
concurrently (a window of ``concurrency`` at a time) so lookups share encoder calls.

Each lookup also records the best candidate's cosine similarity (1.0 for an exact-layer hit,
None when the partition has no candidate at all, e.g. a different context). Threshold sweeps
are computed offline from that similarity; for the cosine-only ``ThresholdDecision`` the sweep
at the default threshold is exactly the recorded verdict.

The metrics and the report are in ``semcache.bench.rates`` (re-exported here).
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..cache.service import CacheService
from ..config import Settings, load_settings
from ..embed.encoder import Encoder
from ..errors import ClientError, InvalidRequest
from ..store.base import Partition
from .datasets import ContextCase, LabelledPair
from .rates import (
    DEFAULT_OPERATING_POINTS,
    SKIPPED,
    Outcome,
    Rates,
    build_report,
    default_rates,
    lowest_threshold_within,
    rates_at,
    sweep_thresholds,
)

if TYPE_CHECKING:
    from ..api.deps import Services
    from ..cache.decision import HitDecision

__all__ = [
    "DEFAULT_OPERATING_POINTS",
    "SKIPPED",
    "Measurement",
    "Outcome",
    "Rates",
    "bench_settings",
    "build_report",
    "default_rates",
    "lowest_threshold_within",
    "measure",
    "progress_bar",
    "rates_at",
    "subsample",
    "sweep_thresholds",
    "throwaway_services",
    "throwaway_settings",
]

_TENANT = "bench"
_MODEL = "bench-model"


@dataclass(frozen=True)
class Measurement:
    """Per-pair and per-case outcomes of one run, and how the service was set up."""

    pairs: list[Outcome]
    contexts: list[Outcome]
    threshold: float
    decision: str
    seconds: float
    embed_batches: int
    embed_texts: int
    largest_batch: int


# ---------------------------------------------------------------------------------------------
# Settings and service


def bench_settings(
    config_file: str | Path | None = None, threshold: float | None = None
) -> Settings:
    """The settings the measured service runs with: the shipped defaults, or a config file.

    The environment is not read, so ``SEMCACHE_*`` variables of the shell cannot change what
    "the shipped default" means. ``threshold`` overrides the default threshold.
    """
    return load_settings(config_file=config_file, environ={}, overrides={"threshold": threshold})


def throwaway_settings(settings: Settings, data_dir: str) -> Settings:
    """``settings`` for a throwaway store: no keys, no eviction, any threshold per request."""
    return settings.replace(
        data_dir=data_dir,
        # The ONNX exports stay where the settings keep them: not exported again per run.
        models_dir=str(settings.resolved_models_dir.resolve()),
        database_url="",
        api_keys="",
        api_keys_file="",
        min_request_threshold=-1.0,
        max_entries_per_tenant=2**62,
        max_query_chars=max(settings.max_query_chars, 10_000_000),
    )


@asynccontextmanager
async def throwaway_services(
    settings: Settings,
    encoder: Encoder,
    *,
    prefix: str,
    decision: tuple[HitDecision, float] | None = None,
) -> AsyncIterator[Services]:
    """``build_services``' wiring over a store in a temporary folder, closed and removed after.

    ``decision`` (a hit decision and its cosine threshold) replaces the one ``settings`` name,
    as in ``build_services``.
    """
    from ..app import build_services

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        services = build_services(
            throwaway_settings(settings, tmp), encoder=encoder, decision=decision
        )
        try:
            yield services
        finally:
            await services.batcher.close()
            await asyncio.to_thread(services.store.close)


def progress_bar(progress: TextIO | None, *, desc: str, unit: str, total: int) -> Any:
    """A tqdm bar on ``progress`` (None: no bar)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=progress or sys.stderr,
        disable=progress is None,
        dynamic_ncols=True,
    )


def _chat(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": _MODEL, "messages": messages}


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def _one(
    cache: CacheService,
    namespace: str,
    cached: list[dict[str, Any]],
    new: list[dict[str, Any]],
    label: int,
    kind: str | None,
) -> Outcome:
    """Store the cached conversation in its own partition, then look up the new one."""
    partition = Partition(_TENANT, namespace, _MODEL)
    try:
        await cache.store(partition, _chat(cached), {"answer_of": namespace})
        result = await cache.lookup(partition, _chat(new))
    except ClientError:
        # e.g. a whitespace-only query the service refuses to store: not measurable.
        return Outcome(label, kind, SKIPPED, None)
    return Outcome(label, kind, result.status, result.similarity)


async def _measure(
    pairs: Sequence[LabelledPair],
    cases: Sequence[ContextCase],
    settings: Settings,
    encoder: Encoder,
    *,
    concurrency: int,
    progress: TextIO | None,
    decision: tuple[HitDecision, float] | None,
) -> Measurement:
    started = time.perf_counter()
    bar = progress_bar(progress, desc="hitrate", unit="pair", total=len(pairs) + len(cases))
    async with throwaway_services(
        settings, encoder, prefix="semcache-bench-", decision=decision
    ) as services:
        cache = services.cache
        window = asyncio.Semaphore(max(1, concurrency))

        async def run(
            namespace: str,
            cached: list[dict[str, Any]],
            new: list[dict[str, Any]],
            label: int,
            kind: str | None,
        ) -> Outcome:
            async with window:
                outcome = await _one(cache, namespace, cached, new, label, kind)
            bar.update(1)
            return outcome

        try:
            pair_outcomes = await asyncio.gather(
                *(
                    run(f"pair-{i}", _user(p.a), _user(p.b), p.label, p.kind)
                    for i, p in enumerate(pairs)
                )
            )
            case_outcomes = await asyncio.gather(
                *(
                    run(f"context-{i}", c.cached, c.new, c.label, c.kind)
                    for i, c in enumerate(cases)
                )
            )
        finally:
            bar.close()
    stats = services.batcher.stats
    return Measurement(
        pairs=list(pair_outcomes),
        contexts=list(case_outcomes),
        threshold=cache.config.threshold,
        decision=type(cache.decision).__name__,
        seconds=time.perf_counter() - started,
        embed_batches=stats.batches,
        embed_texts=stats.texts,
        largest_batch=stats.largest,
    )


def measure(
    pairs: Sequence[LabelledPair],
    cases: Sequence[ContextCase] = (),
    *,
    settings: Settings | None = None,
    encoder: Encoder | None = None,
    concurrency: int = 64,
    progress: TextIO | None = None,
    decision: tuple[HitDecision, float] | None = None,
) -> Measurement:
    """Store ``a`` and look up ``b`` for every pair (and every context case); blocking.

    ``progress`` is the stream for a tqdm bar, None for no bar. ``decision`` (a hit decision and
    its cosine threshold) replaces the one ``settings`` name, e.g. one that records its scores.
    """
    settings = settings or bench_settings()
    if encoder is None:
        from ..app import load_encoder

        encoder = load_encoder(settings)
    return asyncio.run(
        _measure(
            pairs,
            cases,
            settings,
            encoder,
            concurrency=concurrency,
            progress=progress,
            decision=decision,
        )
    )


def subsample(items: Sequence[Any], limit: int | None, seed: int = 0) -> list[Any]:
    """At most ``limit`` items drawn with a fixed seed, kept in file order."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        raise InvalidRequest(f"--limit must be positive, got {limit}")
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]
