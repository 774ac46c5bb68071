"""The semantic layer of a lookup: embed the query, search its partition, let the hit decision
choose among the candidates, and say why when it chose none.

Embedding goes through the encoder's micro-batcher, and a decision that can decide several
lookups at once (``BatchHitDecision``, the verifier) through its own: concurrent lookups'
verifier pairs are scored in one cross-encoder call. SQL and FAISS run on worker threads.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np

from ..embed.batcher import MicroBatcher
from ..metrics import CacheMetrics
from ..store.base import CacheStore, Candidate, Partition
from ..telemetry import Tracing
from .decision import BatchHitDecision, Decided, HitDecision, ThresholdDecision, decide_many
from .keys import RequestKeys
from .results import CacheConfig, LookupResult
from .status import CacheStatus, MissReason
from .workers import StoreWorkers

__all__ = ["SemanticLayer"]


class SemanticLayer:
    """Embed, search and decide for the lookups the exact layer missed."""

    def __init__(
        self,
        config: CacheConfig,
        store: CacheStore,
        batcher: MicroBatcher,
        decision: HitDecision,
        *,
        workers: StoreWorkers,
        metrics: CacheMetrics,
        tracing: Tracing,
    ) -> None:
        self.config = config
        self.storage = store
        self.batcher = batcher
        self.decision = decision
        self.workers = workers
        self.metrics = metrics
        self.tracing = tracing
        # How many of the most similar live candidates the decision reads: the store fetches
        # the rows of those first (None: all of the search_k nearest).
        self.candidate_limit = _candidates_read(decision)
        # Lookups that reach the decision together share one call (one verifier pass); no
        # lookup waits for company (max_wait 0): those arriving while a pass runs form the next.
        # Each gets the candidate chosen (or None) and, from a scoring decision, its best score.
        self.decision_batcher: MicroBatcher[tuple[str, list[Candidate], float], Decided] | None = (
            None
        )
        if isinstance(decision, BatchHitDecision):
            self.decision_batcher = MicroBatcher(
                decide_many(decision),
                max_size=config.decision_batch_max_size,
                max_wait_s=0.0,
            )

    async def lookup(
        self, partition: Partition, keys: RequestKeys, threshold: float, now: float
    ) -> LookupResult:
        """The hit the decision accepts among the partition's nearest entries, or the miss
        with its reason."""
        tracing = self.tracing
        with tracing.span("semcache.embed"):
            vector = await self.batcher.embed(keys.semantic_text)
        with tracing.span("semcache.search", {"semcache.search_k": self.config.search_k}) as span:
            candidates = await self.workers.read(
                self.storage.search,
                partition,
                vector,
                context_hash=keys.context_hash,
                now=now,
                k=self.config.search_k,
                min_similarity=threshold,
                limit=self.candidate_limit,
            )
            span.set_attribute("semcache.candidates", len(candidates))
            if candidates:
                span.set_attribute("semcache.similarity", _best(candidates))
        if not candidates:
            reason = await self._filtered(partition, keys, vector, threshold, now)
            return LookupResult(
                CacheStatus.MISS,
                keys=keys,
                vector=vector,
                miss_reason=reason or MissReason.NO_CANDIDATE,
            )
        if _best(candidates) < threshold:
            # No decision accepts a candidate under the floor: skip its batcher's thread hop
            # (most new prompts end here: no stored neighbour reaches the 0.5 floor).
            return await self._rejected(partition, keys, vector, candidates, threshold, now)
        kind = "cosine" if isinstance(self.decision, ThresholdDecision) else "verified"
        score: float | None = None
        with tracing.span("semcache.verify", {"semcache.hit_decision": kind}) as span:
            if self.decision_batcher is not None:
                submitted = (keys.semantic_text, candidates, threshold)
                chosen, score = await self.decision_batcher.submit(submitted)
            else:
                chosen = await asyncio.to_thread(
                    self.decision.choose, keys.semantic_text, candidates, threshold
                )
            span.set_attribute("semcache.accepted", chosen is not None)
        self.metrics.hit_decisions.labels(kind, "reject" if chosen is None else "accept").inc()
        if chosen is None:
            return await self._rejected(partition, keys, vector, candidates, threshold, now, score)
        # A store that committed between the exact probe and the search shows up here as the
        # same request: report it as the exact hit it is.
        same_request = chosen.entry.exact_key == keys.exact_key
        status = CacheStatus.HIT_EXACT if same_request else CacheStatus.HIT_SEMANTIC
        return LookupResult(status, chosen.entry, chosen.similarity, keys, vector)

    async def close(self) -> None:
        """Stop the hit decision's micro-batcher task (the encoder's is the caller's)."""
        if self.decision_batcher is not None:
            await self.decision_batcher.close()

    async def _filtered(
        self,
        partition: Partition,
        keys: RequestKeys,
        vector: np.ndarray,
        threshold: float,
        now: float,
    ) -> str | None:
        """Why the search left out an entry near enough to hit (another context, expired, a
        hit floor), from a second unfiltered query the store runs only on a miss."""
        return await self.workers.read(
            self.storage.explain_miss,
            partition,
            vector,
            context_hash=keys.context_hash,
            now=now,
            threshold=threshold,
            k=self.config.search_k,
        )

    async def _rejected(
        self,
        partition: Partition,
        keys: RequestKeys,
        vector: np.ndarray,
        candidates: list[Candidate],
        threshold: float,
        now: float,
        score: float | None = None,
    ) -> LookupResult:
        """The miss when the hit decision chose none of the candidates, with its reason and
        ``score``, the best score of the pass that rejected them when the decision gave it."""
        best = _best(candidates)
        result = LookupResult(CacheStatus.MISS, similarity=best, keys=keys, vector=vector)
        if best < threshold:
            reason = await self._filtered(partition, keys, vector, threshold, now)
            return replace(result, miss_reason=reason or MissReason.BELOW_THRESHOLD)
        scored = getattr(self.decision, "scored", None)
        if score is None and scored is not None:
            # A decision that scores but decided without saying: its pass again, on this miss
            # only, for its best probability.
            pairs = await asyncio.to_thread(scored, keys.semantic_text, candidates, threshold)
            score = max((s for s, _ in pairs), default=None)
        return replace(result, miss_reason=MissReason.VERIFIER_REJECTED, verifier_score=score)


def _candidates_read(decision: HitDecision) -> int | None:
    """How many of a lookup's most similar candidates ``decision`` reads, its
    ``max_candidates`` (1 for cosine alone); None (all) for a decision that does not say."""
    limit = getattr(decision, "max_candidates", None)
    return limit if isinstance(limit, int) and limit >= 1 else None


def _best(candidates: list[Candidate]) -> float:
    return max(c.similarity for c in candidates)
