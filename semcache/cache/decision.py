"""The hit decision: which semantic candidate, if any, may answer a query."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ..store.base import Candidate

__all__ = [
    "BatchHitDecision",
    "Decided",
    "HitDecision",
    "ScoringDecision",
    "ThresholdDecision",
    "decide_many",
]


class HitDecision(Protocol):
    """Chooses the candidate whose answer may be served for ``query``, or None for a miss.

    Runs in a worker thread: an implementation may run a model.
    """

    def choose(
        self, query: str, candidates: Sequence[Candidate], threshold: float
    ) -> Candidate | None: ...


@runtime_checkable
class BatchHitDecision(HitDecision, Protocol):
    """A hit decision that also decides several lookups in one call (one batched model pass);
    the cache service then sends concurrent lookups' decisions through a micro-batcher."""

    def choose_many(
        self, requests: Sequence[tuple[str, Sequence[Candidate], float]]
    ) -> list[Candidate | None]: ...


@runtime_checkable
class ScoringDecision(BatchHitDecision, Protocol):
    """A batch decision that scores each lookup's candidates, then accepts the best or none
    (the verifier): the cache service keeps a rejected lookup's best score from the same pass
    (``X-Semcache-Verifier-Score``) instead of scoring its candidates again."""

    def scored_many(
        self, requests: Sequence[tuple[str, Sequence[Candidate], float]]
    ) -> list[list[tuple[float, Candidate]]]: ...

    def accept(self, scored: Sequence[tuple[float, Candidate]]) -> Candidate | None: ...


class ThresholdDecision:
    """Cosine alone: the most similar candidate hits when ``similarity >= threshold``."""

    # It reads the most similar candidate only (the search fetches no other row).
    max_candidates = 1

    def choose(
        self, query: str, candidates: Sequence[Candidate], threshold: float
    ) -> Candidate | None:
        best = max(candidates, key=lambda c: c.similarity, default=None)
        if best is not None and best.similarity >= threshold:
            return best
        return None


# What a batched hit decision answers a lookup: the candidate chosen (None: a miss) and the
# best score among its candidates (None when the decision gives no scores, or had none).
Decided = tuple[Candidate | None, float | None]


def decide_many(
    decision: BatchHitDecision,
) -> Callable[[Sequence[tuple[str, Sequence[Candidate], float]]], list[Decided]]:
    """The decision's batch call, each answer with its best score when the decision scores."""
    if isinstance(decision, ScoringDecision):

        def scored(requests: Sequence[tuple[str, Sequence[Candidate], float]]) -> list[Decided]:
            return [
                (decision.accept(pairs), max((s for s, _ in pairs), default=None))
                for pairs in decision.scored_many(requests)
            ]

        return scored

    def chosen(requests: Sequence[tuple[str, Sequence[Candidate], float]]) -> list[Decided]:
        return [(candidate, None) for candidate in decision.choose_many(requests)]

    return chosen
