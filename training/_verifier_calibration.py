"""Stacking and calibration of the hit verifier (used by ``train_verifier.py``).

The hit score is a logistic regression over (cross-encoder logit, cosine) fitted on the
held-out pairs, each held-out group weighted equally; ``calibrate`` picks the cosine floor and
the score threshold meeting a false-hit rate on the pooled held-out pairs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["FLOORS", "TARGET_FHR", "auc", "calibrate", "fit_stack", "rates"]

TARGET_FHR = 0.01
# Cosine floors tried: from the server's lowest allowed request threshold (0.5) to 0.85.
FLOORS = tuple(round(0.50 + 0.025 * i, 3) for i in range(15))


def fit_stack(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, float]:
    """Logistic regression over the features, each held-out group weighted equally."""
    from sklearn.linear_model import LogisticRegression

    weights = np.zeros(len(y))
    for g in np.unique(groups):
        weights[groups == g] = 1.0 / (groups == g).sum()
    lr = LogisticRegression(C=10.0, max_iter=1000)
    lr.fit(x, y, sample_weight=weights * len(y))
    coef = lr.coef_[0].astype(float)
    if coef[1] < 0:
        # Held-out near-copies have the highest cosines; a negative cosine weight would punish
        # the closest rewordings everywhere else. Keep cosine out of the score then (the floor
        # still uses it).
        lr.fit(x[:, :1], y, sample_weight=weights * len(y))
        return np.array([float(lr.coef_[0][0]), 0.0]), float(lr.intercept_[0])
    return coef, float(lr.intercept_[0])


def rates(hit: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    pos, neg = y == 1, y == 0
    tp, fp = int((hit & pos).sum()), int((hit & neg).sum())
    return {
        "recall": tp / pos.sum() if pos.sum() else None,
        "false_hit_rate": fp / neg.sum() if neg.sum() else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "n_pos": int(pos.sum()),
        "n_neg": int(neg.sum()),
    }


def calibrate(
    score: np.ndarray, cos: np.ndarray, y: np.ndarray, groups: np.ndarray, target: float
) -> tuple[float, float, dict[str, Any]]:
    """(cosine floor, score threshold) with FHR <= target on the pooled held-out pairs.

    For each floor the threshold is the lowest admitting at most ``target`` of all held-out
    negatives. The floor is the lowest on the grid whose mean recall over the held-out groups is
    within half a point of the best floor's: a lower floor costs nothing held out and keeps
    low-cosine rewordings of other kinds of text within reach.
    """
    names = sorted(set(groups.tolist()))
    # Recall is averaged over the groups that have positives (the neighbour negatives have none).
    with_pos = [g for g in names if ((groups == g) & (y == 1)).any()]
    neg_all = int((y == 0).sum())
    allowed = math.floor(target * neg_all)
    results: list[tuple[float, float, float]] = []
    for floor in FLOORS:
        s = np.sort(score[(y == 0) & (cos >= floor)])[::-1]
        t = float(s[allowed]) + 1e-6 if allowed < len(s) else -np.inf
        hit = (cos >= floor) & (score >= t)
        recalls = [
            (hit & (groups == g) & (y == 1)).sum() / ((groups == g) & (y == 1)).sum()
            for g in with_pos
        ]
        results.append((floor, t, float(np.mean(recalls))))
    top = max(r[2] for r in results)
    floor, t, _ = next(r for r in results if r[2] >= top - 0.005)
    hit = (cos >= floor) & (score >= t)
    report = {g: rates(hit[groups == g], y[groups == g]) for g in names}
    report["pooled"] = rates(hit, y)
    return floor, t, report


def auc(s: np.ndarray, y: np.ndarray) -> float | None:
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        return None
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
