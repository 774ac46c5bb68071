"""Pairs the verifier's training derives from QQP (training/_qqp_closure.py) never leak."""

from __future__ import annotations

from _qqp_closure import closure_pairs

from semcache.bench.datasets import LabelledPair, pair_key


def _pair(a: str, b: str, label: int) -> LabelledPair:
    return LabelledPair(a, b, label, None, None)


TRAIN = [
    _pair("hub", "x", 1),
    _pair("hub", "y", 1),
    _pair("hub", "w", 1),
    _pair("hub", "z", 0),
    _pair("x", "w", 0),  # labelled different although both duplicate "hub": a conflict
]


def test_derives_duplicates_and_non_duplicates_through_a_shared_question() -> None:
    derived = closure_pairs(TRAIN, set(), positives=10, negatives=10, seed=0, per_hub=10)
    got = {(pair_key(p.a, p.b), p.label) for p in derived}
    assert (pair_key("x", "y"), 1) in got and (pair_key("w", "y"), 1) in got
    assert (pair_key("x", "z"), 0) in got and (pair_key("y", "z"), 0) in got
    # Never against a label: x and w stay what the data says; no labelled pair is repeated.
    assert all(key != pair_key("x", "w") for key, _ in got)
    assert all(p.kind == "closure" for p in derived)
    assert not {key for key, _ in got} & {pair_key(p.a, p.b) for p in TRAIN}


def test_never_recreates_an_excluded_evaluation_pair() -> None:
    excluded = {pair_key("y", "x"), pair_key("z", "w")}
    derived = closure_pairs(TRAIN, excluded, positives=10, negatives=10, seed=0, per_hub=10)
    assert derived and not {pair_key(p.a, p.b) for p in derived} & excluded


def test_counts_are_capped() -> None:
    derived = closure_pairs(TRAIN, set(), positives=1, negatives=1, seed=0, per_hub=10)
    assert sorted(p.label for p in derived) == [0, 1]
