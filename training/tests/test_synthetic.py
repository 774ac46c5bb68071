"""The synthetic pair generator the verifier trains on (training/synthetic.py).

Every version must keep producing what its training stages saw, so its output on a fixed input
is pinned; version 3 draws from the larger lexicon of training/lexicon.
"""

from __future__ import annotations

import hashlib
import random

import pytest
import synthetic_words as vocab
from synthetic import NEGATIVE_KINDS, POSITIVE_KINDS, generate, perturb
from synthetic_lexicon import lexicon, read_groups

SOURCES = [
    "How do I fix a leaky faucet in the kitchen?",
    "What is the cheapest way to get from the airport to the city at night?",
    "Can I get a refund for my monthly subscription?",
    "How do I convert 100 dollars to euros?",
    "Is it safe to take ibuprofen before a workout?",
    "What are the best Python libraries for data analysis?",
    "How many hours of sleep does a newborn need?",
    "Why is my laptop so slow after the update?",
    "How do I contact support about a missing package?",
    "Should I pick a Roth IRA or a traditional IRA?",
]


def _digest(version: int) -> str:
    pairs = generate(SOURCES, seed=3, per_source=4, version=version)
    text = "\n".join(f"{p.a}\t{p.b}\t{p.label}\t{p.kind}" for p in pairs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_versions_are_unchanged() -> None:
    # A change here changes what stages 1 to 8 (versions 1 and 2) or stage 9 trained on.
    assert _digest(1) == "8599cf561bced7ce"
    assert _digest(2) == "25496ff21b5cab21"
    assert _digest(3) == "254b33e020687ee2"


def test_generate_is_deterministic_and_labels_follow_kinds() -> None:
    pairs = generate(SOURCES, seed=7, per_source=6, version=3)
    assert pairs == generate(SOURCES, seed=7, per_source=6, version=3)
    assert pairs != generate(SOURCES, seed=8, per_source=6, version=3)
    for p in pairs:
        sign, kind = p.kind.split("-", 1)
        assert (sign, p.label) in {("pos", 1), ("neg", 0)}
        assert kind in (POSITIVE_KINDS if p.label else NEGATIVE_KINDS)
        assert p.a.lower() != p.b.lower()


def test_version_3_swaps_synonyms_and_contrasts_from_the_lexicon() -> None:
    text = "What is the cheapest way to get from the airport to the city at night?"

    def swaps(version: int) -> set[str]:
        outs = {perturb(text, "synonym", random.Random(s), version=version) for s in range(40)}
        return {o for o in outs if o}

    # "cheapest" and "at night" are only in the version 3 lexicon.
    new_words = ("least expensive", "most affordable", "after dark")
    assert "cheapest" not in vocab.SYNONYM_OF and "cheapest" in lexicon().synonym_of
    assert any(w in o for o in swaps(3) for w in new_words)
    assert not any(w in o for o in swaps(2) for w in new_words)
    refund = "Can I get a refund for my monthly subscription?"
    negatives = {perturb(refund, "entity", random.Random(s), version=3) for s in range(20)}
    assert any(n and ("exchange" in n or "annual" in n or "weekly" in n) for n in negatives)
    assert perturb(refund, "entity", random.Random(0), version=2) is None


def test_lexicon_never_calls_one_pair_both_same_and_different() -> None:
    words = lexicon()
    same = {frozenset((w, o.lower())) for w, group in words.synonym_of.items() for o in group}
    different = {
        frozenset((w, o.lower()))
        for table in (words.antonym_of, words.contrast_of)
        for w, group in table.items()
        for o in group
    }
    assert not {pair for pair in same & different if len(pair) == 2}
    for name in ("synonyms", "antonyms", "contrasts"):
        groups = read_groups(name)
        assert groups and all(len(g) >= 2 and all(g) for g in groups), name
        members = [m.lower() for g in groups for m in g]
        assert len(members) == len(set(members)), f"{name}: a member is in two groups"
    assert all(len(g) == 2 for g in read_groups("antonyms"))


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown perturbation kind"):
        perturb("anything", "shuffle", random.Random(0))
