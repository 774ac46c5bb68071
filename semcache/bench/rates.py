"""Hit-quality metrics over measured outcomes: rates, threshold sweeps, and the JSON report.

An ``Outcome`` is what one lookup gave for one labelled pair (``semcache.bench.hitrate``
measures them through the real cache). recall = hits on label-1 pairs / label-1 pairs;
false-hit rate = hits on label-0 pairs / label-0 pairs; precision = hits on label-1 pairs /
all hits. A rate with an empty denominator is None (JSON null). Threshold sweeps are computed
offline from each outcome's best-candidate similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cache.service import HIT_EXACT, HIT_SEMANTIC

if TYPE_CHECKING:
    from .hitrate import Measurement

__all__ = [
    "DEFAULT_OPERATING_POINTS",
    "SKIPPED",
    "Outcome",
    "Rates",
    "build_report",
    "default_rates",
    "lowest_threshold_within",
    "rates_at",
    "sweep_thresholds",
]

SKIPPED = "SKIPPED"
# False-hit rates for which reports give the best reachable recall.
DEFAULT_OPERATING_POINTS = (0.01, 0.02, 0.05)


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
