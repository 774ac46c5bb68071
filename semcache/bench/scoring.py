"""The verifier's probabilities, recorded while a hit-rate measurement runs.

``RecordingDecision`` wraps a ``VerifiedDecision``: it decides exactly as the wrapped one does
(one cross-encoder pass per lookup: ``scored``, then ``accept``) and remembers the best
probability per (cached query, new query). ``score_outcomes`` turns a measurement's outcomes
into outcomes whose ``similarity`` is that probability, so ``rates_at`` and
``lowest_threshold_within`` (``semcache.bench.rates``) sweep ``verifier_score_threshold`` at
the measured cosine floor offline, as they sweep the cosine threshold for ``cosine``.
docs/ARCHITECTURE.md, "Measuring hit quality".
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..cache.service import HIT_EXACT
from ..store.base import Candidate
from .datasets import LabelledPair
from .rates import SKIPPED, Outcome

if TYPE_CHECKING:
    from ..cache.verifier import VerifiedDecision

__all__ = ["EXACT_SCORE", "RecordingDecision", "score_outcomes"]

# The score an exact-layer hit gets: above every threshold in [0, 1], since an exact repeat
# hits without the verifier.
EXACT_SCORE = 2.0


class RecordingDecision:
    """``VerifiedDecision`` that also remembers the best probability per (cached, new) pair."""

    def __init__(self, inner: VerifiedDecision) -> None:
        self.inner = inner
        self.best: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    @property
    def precision(self) -> str:
        return self.inner.precision

    @property
    def max_candidates(self) -> int:
        """The inner verifier's: the service fetches that many candidates per lookup."""
        return self.inner.max_candidates

    def choose(
        self, query: str, candidates: Sequence[Candidate], threshold: float
    ) -> Candidate | None:
        # One cross-encoder pass: the scores recorded are the ones the decision uses.
        scored = self.inner.scored(query, candidates, threshold)
        with self._lock:
            for s, c in scored:
                key = (c.entry.query, query)
                self.best[key] = max(s, self.best.get(key, 0.0))
        return self.inner.accept(scored)

    def score(self, cached: str, new: str) -> float | None:
        """The best probability recorded for ``new`` looked up against ``cached``; None when
        the verifier never scored it (no candidate at or above the cosine floor)."""
        with self._lock:
            return self.best.get((cached, new))


def score_outcomes(
    pairs: Sequence[LabelledPair], outcomes: Sequence[Outcome], recorder: RecordingDecision
) -> list[Outcome]:
    """``outcomes`` (one per pair, in order) with the verifier's score as their similarity.

    An exact-layer hit scores ``EXACT_SCORE``; a pair the verifier never scored has None, so it
    hits at no score threshold. Skipped pairs stay skipped.
    """
    scored = []
    for pair, outcome in zip(pairs, outcomes, strict=True):
        if outcome.status == SKIPPED:
            score: float | None = None
        elif outcome.status == HIT_EXACT:
            score = EXACT_SCORE
        else:
            score = recorder.score(pair.a, pair.b)
        scored.append(Outcome(outcome.label, outcome.kind, outcome.status, score))
    return scored
