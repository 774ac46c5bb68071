"""Synthetic training pairs for the hit verifier, generated from source queries with a seed.

Every generated pair is a perturbation of one source query ``a``:

* hard negatives (label 0), near-copies whose answer differs: ``number`` (an amount or year
  changed), ``negation`` (a "not" added or removed, with/without), ``antonym`` (increase ->
  decrease, buy -> sell...), ``direction`` (from A to B -> from B to A, "how many X is N Y"
  reversed), ``entity`` (a language, city, product... swapped for another of its kind),
  ``constraint`` (a condition added that changes the answer) and ``scope`` (audience, place or
  time swapped);
* positives (label 1), surface changes that keep the answer: ``typo``, ``synonym``,
  ``verbose`` (a polite or chatty wrapper), ``terse`` (a keyword query), ``reorder`` (a
  trailing phrase moved to the front, "A and B" swapped), ``style`` (case, punctuation,
  contractions).

Negatives are often combined with a positive change (a typo, a wrapper) so a model cannot
learn that "looks edited" means "miss": the same kinds of edits appear on both sides. Sources
are the training split of DESIGN.md and the hand-written ``training/data/train_extra.jsonl``;
nothing here reads an evaluation set. ``generate`` is deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import synthetic_words as vocab
from synthetic_edits import PREFERRED_V3, edits

from semcache.bench.datasets import LabelledPair

__all__ = ["NEGATIVE_KINDS", "POSITIVE_KINDS", "generate", "perturb"]

NEGATIVE_KINDS = (
    "number",
    "negation",
    "antonym",
    "direction",
    "entity",
    "constraint",
    "scope",
)
POSITIVE_KINDS = ("typo", "synonym", "verbose", "terse", "reorder", "style")


def perturb(text: str, kind: str, rng: random.Random, version: int = 1) -> str | None:
    """One perturbation of ``text`` of the given kind, or None when it does not apply."""
    negative, positive = edits(version)
    fn = negative.get(kind) or positive.get(kind)
    if fn is None:
        raise ValueError(f"unknown perturbation kind {kind!r}")
    out = fn(text, rng)
    if out is None:
        return None
    out = " ".join(out.split())
    return out if out and out.lower() != " ".join(text.split()).lower() else None


def generate(
    sources: Sequence[str],
    *,
    seed: int,
    per_source: int = 2,
    mix_rate: float = 0.35,
    tag: str = "syn",
    version: int = 1,
) -> list[LabelledPair]:
    """About ``per_source`` pairs per source query, half positive, half negative.

    Each source gets alternately a positive and a negative of a randomly chosen kind that
    applies to it. With probability ``mix_rate`` a negative also gets a positive change on top
    (typo, wrapper, style) and a positive gets a second positive change, so the two classes
    share their surface edits. Kinds are stored as ``neg-<kind>`` / ``pos-<kind>``.

    ``version`` 2 adds direction patterns (units "in a", "per", comparatives, more verbs),
    skips antonyms in negated text, and tries direction first when it applies; version 1 is
    kept as it was so the first training stage stays reproducible. Version 3 (stage 9) draws
    synonyms, antonyms and related-but-different words from ``synthetic_lexicon`` and tries
    those kinds first.
    """
    rng = random.Random(seed)
    pairs: list[LabelledPair] = []
    for n, src in enumerate(sources):
        src = " ".join(src.split())
        if not src or len(src) > 300:
            continue
        for j in range(per_source):
            negative = (n + j) % 2 == 0
            kinds = sorted(
                NEGATIVE_KINDS if negative else POSITIVE_KINDS,
                key=lambda k: (
                    rng.random()
                    + (0.6 if k in vocab.GENERIC else 0.0)
                    - (1.0 if version >= 2 and k == "direction" else 0.0)
                    - (PREFERRED_V3.get(k, 0.0) if version >= 3 else 0.0)
                ),
            )
            for kind in kinds:
                out = perturb(src, kind, rng, version)
                if out is None:
                    continue
                if rng.random() < mix_rate:
                    extra = rng.choice(("typo", "verbose", "style", "synonym"))
                    if negative and extra == "synonym":
                        extra = "style"
                    mixed = perturb(out, extra, rng, version) or out
                    # A second synonym swap can undo the first (A -> B -> A); from version 3
                    # on such a pair keeps the first change instead of repeating its source.
                    if version < 3 or mixed.lower() != src.lower():
                        out = mixed
                a, b = (src, out) if rng.random() < 0.5 else (out, src)
                pairs.append(
                    LabelledPair(
                        a=a,
                        b=b,
                        label=0 if negative else 1,
                        kind=f"{'neg' if negative else 'pos'}-{kind}",
                        id=f"{tag}-{n}-{j}",
                    )
                )
                break
    return pairs
