"""Hit quality through the real cache code path (DESIGN.md "Measuring hit quality", issue 5).

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

Metrics: recall = hits on label-1 pairs / label-1 pairs; false-hit rate = hits on label-0
pairs / label-0 pairs; precision = hits on label-1 pairs / all hits. A rate with an empty
denominator is None (JSON null).
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..cache.service import HIT_EXACT, HIT_SEMANTIC, CacheService
from ..config import Settings, load_settings
from ..embed.encoder import Encoder
from ..errors import ClientError, InvalidRequest
from ..store.base import Partition
from .datasets import ContextCase, LabelledPair

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
    "rates_at",
    "subsample",
    "sweep_thresholds",
    "throwaway_settings",
]

SKIPPED = "SKIPPED"
# False-hit rates for which reports give the best reachable recall.
DEFAULT_OPERATING_POINTS = (0.01, 0.02, 0.05)
_TENANT = "bench"
_MODEL = "bench-model"


@dataclass(frozen=True)
class Outcome:
    """What one lookup gave for one labelled pair or context case."""

    label: int
    kind: str | None
    status: str
    similarity: float | None

    @property
    def hit(self) -> bool:
        return self.status in (HIT_EXACT, HIT_SEMANTIC)


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


@dataclass(frozen=True)
class Rates:
    """Counts and rates at one threshold (None: the verdicts the service gave)."""

    threshold: float | None
    n_pos: int
    n_neg: int
    true_hits: int
    false_hits: int

    @property
    def recall(self) -> float | None:
        return self.true_hits / self.n_pos if self.n_pos else None

    @property
    def false_hit_rate(self) -> float | None:
        return self.false_hits / self.n_neg if self.n_neg else None

    @property
    def precision(self) -> float | None:
        hits = self.true_hits + self.false_hits
        return self.true_hits / hits if hits else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "recall": self.recall,
            "false_hit_rate": self.false_hit_rate,
            "precision": self.precision,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "true_hits": self.true_hits,
            "false_hits": self.false_hits,
        }


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
        database_url="",
        api_keys="",
        api_keys_file="",
        min_request_threshold=-1.0,
        max_entries_per_tenant=2**62,
        max_query_chars=max(settings.max_query_chars, 10_000_000),
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
) -> Measurement:
    from tqdm import tqdm

    from ..app import build_services

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="semcache-bench-") as tmp:
        services = build_services(throwaway_settings(settings, tmp), encoder=encoder)
        cache = services.cache
        window = asyncio.Semaphore(max(1, concurrency))
        bar = tqdm(
            total=len(pairs) + len(cases),
            desc="hitrate",
            unit="pair",
            file=progress or sys.stderr,
            disable=progress is None,
            dynamic_ncols=True,
        )

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
            await services.batcher.close()
            await asyncio.to_thread(services.store.close)
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
) -> Measurement:
    """Store ``a`` and look up ``b`` for every pair (and every context case); blocking.

    ``progress`` is the stream for a tqdm bar, None for no bar.
    """
    settings = settings or bench_settings()
    encoder = encoder or Encoder(settings.embedding_model or None)
    return asyncio.run(
        _measure(pairs, cases, settings, encoder, concurrency=concurrency, progress=progress)
    )


def subsample(items: Sequence[Any], limit: int | None, seed: int = 0) -> list[Any]:
    """At most ``limit`` items drawn with a fixed seed, kept in file order."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        raise InvalidRequest(f"--limit must be positive, got {limit}")
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]


# ---------------------------------------------------------------------------------------------
# Metrics


def _measured(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status != SKIPPED]


def _arrays(outcomes: Sequence[Outcome]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, similarities with None as -inf) of the measured outcomes."""
    kept = _measured(outcomes)
    labels = np.array([o.label for o in kept], dtype=np.int8)
    sims = np.array(
        [-np.inf if o.similarity is None else o.similarity for o in kept], dtype=np.float64
    )
    return labels, sims


def default_rates(outcomes: Sequence[Outcome], threshold: float | None = None) -> Rates:
    """Rates from the verdicts the service itself gave (its decision, its threshold)."""
    kept = _measured(outcomes)
    return Rates(
        threshold=threshold,
        n_pos=sum(1 for o in kept if o.label == 1),
        n_neg=sum(1 for o in kept if o.label == 0),
        true_hits=sum(1 for o in kept if o.hit and o.label == 1),
        false_hits=sum(1 for o in kept if o.hit and o.label == 0),
    )


def rates_at(outcomes: Sequence[Outcome], thresholds: Sequence[float]) -> list[Rates]:
    """Offline rates at each cosine threshold: a pair hits when its similarity >= threshold."""
    labels, sims = _arrays(outcomes)
    pos, neg = labels == 1, labels == 0
    result = []
    for t in thresholds:
        hits = sims >= t
        result.append(
            Rates(
                threshold=float(t),
                n_pos=int(pos.sum()),
                n_neg=int(neg.sum()),
                true_hits=int((hits & pos).sum()),
                false_hits=int((hits & neg).sum()),
            )
        )
    return result


def sweep_thresholds(default: float | None = None) -> list[float]:
    """0.50, 0.51, ..., 0.99, plus the default threshold."""
    grid = {round(i / 100, 2) for i in range(50, 100)}
    if default is not None:
        grid.add(default)
    return sorted(grid)


def _grid(low: float, high: float, step: float) -> list[float]:
    n = round((high - low) / step)
    digits = max(2, len(f"{step:.10f}".rstrip("0").split(".")[1]))
    return [round(low + i * step, digits) for i in range(n + 1)]


def lowest_threshold_within(
    outcomes: Sequence[Outcome],
    max_false_hit_rate: float,
    *,
    step: float = 0.001,
    low: float = 0.0,
    high: float = 1.0,
) -> Rates | None:
    """The lowest threshold on the grid low..high whose false-hit rate <= the limit.

    Recall falls as the threshold rises, so this is also the best recall within the limit.
    None when no threshold on the grid meets it, or the outcomes have no label-0 pairs.
    """
    for rates in rates_at(outcomes, _grid(low, high, step)):
        fhr = rates.false_hit_rate
        if fhr is None:
            return None
        if fhr <= max_false_hit_rate + 1e-12:
            return rates
    return None


# ---------------------------------------------------------------------------------------------
# Report


def _by_kind(outcomes: Sequence[Outcome], threshold: float) -> dict[str, Any]:
    kinds = sorted({o.kind for o in outcomes if o.kind is not None})
    return {
        kind: default_rates([o for o in outcomes if o.kind == kind], threshold).as_dict()
        for kind in kinds
    }


def _similarity_summary(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    sims = [o.similarity for o in _measured(outcomes) if o.similarity is not None]
    if not sims:
        return {"with_candidate": 0}
    arr = np.array(sims)
    return {
        "with_candidate": len(sims),
        "max": float(arr.max()),
        "median": float(np.median(arr)),
    }


def build_report(
    measurement: Measurement,
    *,
    dataset: dict[str, Any] | None = None,
    operating_points: Sequence[float] = DEFAULT_OPERATING_POINTS,
) -> dict[str, Any]:
    """The JSON report: default verdicts, threshold sweep, operating points, kinds, contexts."""
    m = measurement
    pairs = m.pairs
    report: dict[str, Any] = {
        "dataset": {
            **(dataset or {}),
            "n_pairs": len(pairs),
            "n_skipped": len(pairs) - len(_measured(pairs)),
            "n_context_cases": len(m.contexts),
        },
        "decision": {"name": m.decision, "threshold": m.threshold},
    }
    if pairs:
        default = default_rates(pairs, m.threshold).as_dict()
        default["exact_hits"] = sum(1 for o in pairs if o.status == HIT_EXACT)
        report["default"] = default
        report["sweep"] = [r.as_dict() for r in rates_at(pairs, sweep_thresholds(m.threshold))]
        points = []
        for limit in operating_points:
            best = lowest_threshold_within(pairs, limit)
            points.append({"max_false_hit_rate": limit, **(best.as_dict() if best else {})})
        report["operating_points"] = points
        report["by_kind"] = _by_kind(pairs, m.threshold)
        report["similarity"] = {
            label: _similarity_summary([o for o in pairs if o.label == value])
            for label, value in (("positives", 1), ("negatives", 0))
        }
    if m.contexts:
        if not pairs:
            # Nothing but context cases: their verdicts are what the default decision gave.
            report["default"] = {
                **default_rates(m.contexts, m.threshold).as_dict(),
                "source": "contexts",
            }
        contexts = default_rates(m.contexts, m.threshold).as_dict()
        contexts["n_cases"] = len(m.contexts)
        contexts["n_skipped"] = len(m.contexts) - len(_measured(m.contexts))
        contexts["with_candidate"] = _similarity_summary(m.contexts)["with_candidate"]
        contexts["by_kind"] = _by_kind(m.contexts, m.threshold)
        report["contexts"] = contexts
    report["runtime"] = {
        "seconds": round(m.seconds, 2),
        "embedding_batches": m.embed_batches,
        "texts_embedded": m.embed_texts,
        "largest_batch": m.largest_batch,
    }
    return report
