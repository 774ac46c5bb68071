"""Pairs implied by the QQP training pairs: two questions each labelled a duplicate of a third.

QQP labels a question against a few others, not against every question it duplicates: 11,966
training questions sit in more than one pair and 16,002 groups of duplicates span 124,396
questions, yet only 25,619 pairs are labelled duplicates. Two duplicates of the same question
are (almost always) duplicates of each other, and a duplicate of a question labelled different
from a third is different from that third too. This module derives such pairs from the training
side only (one step: x ~ q ~ y, and x ~ q != z), so the verifier sees many more ways a question
gets reworded. A derived pair is dropped when it is a labelled pair already, when it is one of
the ``exclude`` pairs (the held-out and test pairs: a derived pair must never recreate an
evaluation pair) or when the labels disagree (x ~ q ~ y but x and y labelled different). Each
hub question gives at most ``per_hub`` pairs so the few big groups of duplicates do not crowd
out the rest.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence

from semcache.bench import datasets as ds

__all__ = ["closure_pairs"]


def closure_pairs(
    train: Sequence[ds.LabelledPair],
    exclude: Iterable[tuple[str, str]],
    *,
    positives: int,
    negatives: int,
    seed: int,
    per_hub: int = 6,
    tag: str = "cl",
) -> list[ds.LabelledPair]:
    """Up to ``positives`` derived duplicates and ``negatives`` derived non-duplicates."""
    dup: dict[str, set[str]] = defaultdict(set)
    diff: dict[str, set[str]] = defaultdict(set)
    known: set[tuple[str, str]] = set(exclude)
    for p in train:
        (dup if p.label else diff)[p.a].add(p.b)
        (dup if p.label else diff)[p.b].add(p.a)
        known.add(ds.pair_key(p.a, p.b))
    rng = random.Random(seed)

    pos: dict[tuple[str, str], tuple[str, str]] = {}
    for hub in sorted(dup):
        mates = sorted(dup[hub])
        cands = [(x, y) for i, x in enumerate(mates) for y in mates[i + 1 :]]
        rng.shuffle(cands)
        for x, y in cands[:per_hub]:
            key = ds.pair_key(x, y)
            if key not in known and y not in diff[x]:
                pos[key] = (x, y)
    neg: dict[tuple[str, str], tuple[str, str]] = {}
    for hub in sorted(diff):
        mates = sorted(dup[hub])
        cands = [(x, z) for x in mates for z in sorted(diff[hub])]
        rng.shuffle(cands)
        for x, z in cands[:per_hub]:
            key = ds.pair_key(x, z)
            # A conflict: z is labelled a duplicate of the hub's duplicate x.
            if key not in known and key not in pos and z not in dup[x]:
                neg[key] = (x, z)

    def pick(found: dict[tuple[str, str], tuple[str, str]], n: int, label: int) -> list:
        chosen = rng.sample(sorted(found), min(n, len(found)))
        return [
            ds.LabelledPair(found[k][0], found[k][1], label, "closure", f"{tag}-{label}-{i}")
            for i, k in enumerate(chosen)
        ]

    return pick(pos, positives, 1) + pick(neg, negatives, 0)
