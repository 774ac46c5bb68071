"""Typo'd repeats hit without the model; a changed real word never passes as a typo."""

from __future__ import annotations

import pytest
from candidates import candidate

from semcache.cache.typos import edit_distance
from semcache.cache.verifier import VerifiedDecision, same_question


@pytest.fixture(scope="module")
def vocabulary(verifier: VerifiedDecision) -> frozenset[str]:
    return verifier._vocabulary


@pytest.fixture(scope="module", params=["int8", "fp32"])
def verifier(request: pytest.FixtureRequest) -> VerifiedDecision:
    """Both shipped verifiers: int8 (the default, ``verifier_precision``) and fp32."""
    return VerifiedDecision(precision=request.param)


def test_edit_distance_counts_a_swap_as_one_edit() -> None:
    assert edit_distance("change", "chnage") == 1
    assert edit_distance("billing", "biling") == 1
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("How do I change my billing address?", "how do i chnage my biling address"),
        ("Where can I download my invoices?", "where can i downlod my invoices"),
        ("How do I cancel my subscription?", "how do I cancel my subscripton"),
        ("How long does shipping take to Canada?", "how long does shiping take to canda"),
    ],
)
def test_misspelt_repeats_are_the_same_question(
    vocabulary: frozenset[str], cached: str, new: str
) -> None:
    assert same_question(cached, new, vocabulary)


@pytest.mark.parametrize(
    ("cached", "new"),
    [
        ("How do I hide a column in Sheets?", "How do I unhide a column in Sheets?"),
        ("How do I install numpy with pip?", "How do I uninstall numpy with pip?"),
        ("Can I get a refund if I have used it?", "Can I get a refund if I havent used it?"),
        ("What is in my cart?", "What is in my card?"),
        ("Convert 100 euros to dollars", "Convert 1000 euros to dollars"),
        ("What does cat mean?", "What does car mean?"),
        ("How do I get to the station?", "How do I get to the station quickly?"),
    ],
)
def test_a_changed_real_word_is_not_a_typo(
    vocabulary: frozenset[str], cached: str, new: str
) -> None:
    assert not same_question(cached, new, vocabulary)


def test_the_verifier_scores_a_typod_repeat_as_the_same(verifier: VerifiedDecision) -> None:
    cached = candidate("Where can I download my invoices?", 0.9, response="Billing > Invoices")
    # The model alone scored this pair 0.19; the typo rule makes it a hit at any threshold.
    assert verifier.scores("where can i downlod my invoices", [cached]) == [1.0]
