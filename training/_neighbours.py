"""Nearest-neighbour negatives for the hit verifier: what a cache's candidate really looks like.

In a pair benchmark every pair has its own partition, so the verifier only ever judges two
queries someone put side by side. In a real cache the candidate is the nearest of many stored
queries, most of them about something else: "capital of france" finds "Tell me about france",
"write a song about birds" finds "Tell me about birds" (the arena replay showed such false
hits at cosine 0.55-0.8, where held-out QQP pairs have almost no negatives, so calibration
put the cosine floor at 0.5 for free). This module mines those pairs from a pool of questions:
each question with its nearest other question by MiniLM cosine, label 0, unless the two are a
labelled pair or equal up to case and punctuation, and only where that cosine is in
[``low``, ``high``): QQP leaves many duplicates unlabelled and those are mostly the closest
neighbours, so the window keeps the mined labels cleaner and covers the region the replay's
false hits came from.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import numpy as np

from semcache.bench import datasets as ds
from semcache.cache.verifier import normalize_query

__all__ = ["neighbour_negatives"]


def neighbour_negatives(
    questions: Sequence[str],
    labelled: Iterable[ds.LabelledPair],
    n: int,
    *,
    seed: int,
    tag: str,
    low: float = 0.5,
    high: float = 0.85,
) -> list[ds.LabelledPair]:
    """Up to ``n`` (question, its nearest other question) pairs, label 0, kind "neighbour"."""
    if n <= 0 or len(questions) < 2:
        return []
    from semcache.embed import Encoder

    known = {frozenset((p.a, p.b)) for p in labelled}
    pool = sorted(set(questions))
    # fp32, as the recorded data hashes were made: the pairs must not move with the
    # encoder's shipped precision.
    vectors = Encoder(precision="fp32").encode(pool)
    chosen: dict[frozenset[str], tuple[str, str]] = {}
    for start in range(0, len(pool), 2048):
        sims = vectors[start : start + 2048] @ vectors.T
        for row, i in enumerate(range(start, min(start + 2048, len(pool)))):
            sims[row, i] = -2.0  # not itself
            j = int(np.argmax(sims[row]))
            if not low <= sims[row, j] < high:
                continue
            a, b = pool[i], pool[j]
            key = frozenset((a, b))
            if key in known or key in chosen or normalize_query(a) == normalize_query(b):
                continue
            chosen[key] = (a, b)
    pairs = sorted(chosen.values())
    random.Random(seed).shuffle(pairs)
    return [
        ds.LabelledPair(a, b, 0, "neighbour", f"{tag}-{i}") for i, (a, b) in enumerate(pairs[:n])
    ]
