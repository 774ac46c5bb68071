"""The shipped hit verifier: loads, rejects near-copies that cosine accepts, keeps paraphrases."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from candidates import PARTITION, candidate

from semcache.cache import CacheConfig, CacheService
from semcache.cache.verifier import (
    VerifiedDecision,
    default_artifact_dir,
    fit_to_window,
    focus_on_difference,
    normalize_query,
)
from semcache.embed import Encoder, MicroBatcher
from semcache.store import SqlFaissStore

P = PARTITION

# Near-copies whose answers differ; cosine puts each above the old 0.9 default.
NEAR_COPIES = [
    ("How many US dollars is 100 euros?", "How many euros is 100 US dollars?"),
    (
        "Which foods should I eat during pregnancy?",
        "Which foods should I not eat during pregnancy?",
    ),
    (
        "How do I send money from PayPal to my bank account?",
        "How do I send money from my bank account to PayPal?",
    ),
]
# Rewordings the calibrated default accepts (it is strict: many looser rewordings still miss).
PARAPHRASES = [
    ("What is the capital of France?", "what's the capital of france"),
    ("How do I change my billing address?", "how do i chnage my biling address"),
    (
        "How do I make cold brew coffee at home?",
        "Hi! Could you tell me how to make cold brew coffee at home? Thanks!",
    ),
    ("how do i delete my account", "How do I delete my account?"),
]


@pytest.fixture(scope="module", params=["int8", "fp32"])
def verifier(request: pytest.FixtureRequest) -> VerifiedDecision:
    """Both shipped verifiers: int8 (the default, ``verifier_precision``) and fp32."""
    return VerifiedDecision(precision=request.param)


def _cosine(encoder: Encoder, a: str, b: str) -> float:
    va, vb = encoder.encode([a, b])
    return float(np.dot(va, vb))


def test_artifact_is_small_and_calibrated() -> None:
    folder = default_artifact_dir()
    meta = json.loads((folder / "verifier.json").read_text())
    assert (folder / meta["artifact"]).stat().st_size < 30 * 1024 * 1024
    assert meta["calibration"]["target_false_hit_rate"] == 0.01
    assert -1.0 <= meta["cosine_floor"] <= 1.0
    assert 0.0 < meta["score_threshold"] < 1.0


@pytest.mark.parametrize(("cached", "new"), NEAR_COPIES)
def test_rejects_near_copies_that_cosine_accepts(
    verifier: VerifiedDecision, encoder: Encoder, cached: str, new: str
) -> None:
    cos = _cosine(encoder, cached, new)
    assert cos >= 0.9
    assert verifier.choose(new, [candidate(cached, cos)], verifier.cosine_floor) is None


@pytest.mark.parametrize(("cached", "new"), PARAPHRASES)
def test_accepts_paraphrases(
    verifier: VerifiedDecision, encoder: Encoder, cached: str, new: str
) -> None:
    cos = _cosine(encoder, cached, new)
    chosen = verifier.choose(new, [candidate(cached, cos)], verifier.cosine_floor)
    assert chosen is not None and chosen.entry.query == cached


def test_normalized_equality_keeps_meaningful_symbols() -> None:
    assert normalize_query("How do I delete my account?") == "how do i delete my account"
    assert normalize_query("Read a file in C++") != normalize_query("Read a file in C#")
    assert normalize_query("What is 1.5 times 2?") != normalize_query("What is 15 times 2?")


# A long prompt template whose payload (the last sentence) is what the answer depends on.
TEMPLATE = (
    "You are a helpful study assistant. I need some flash cards to help me study for an exam. "
    "Each card has a question on the front and the answer on the back. The question must be "
    "unambiguous, short and answerable in one sentence, and the answer must be correct and "
    "complete. Do not repeat a question, do not add commentary before or after the cards, and "
    "number every card. Use plain language a high-school student understands. "
)


def test_focus_on_difference_drops_the_shared_start_and_end() -> None:
    a = " ".join(f"w{i}" for i in range(40)) + " topic: cells. Reply as a table."
    b = " ".join(f"w{i}" for i in range(40)) + " topic: Rome. Reply as a table."
    fa, fb = focus_on_difference(a, b, context=3)
    # Three shared words kept on each side of the difference ("topic:" is shared too).
    assert fa == "... w38 w39 topic: cells. Reply as a ..."
    assert fb == "... w38 w39 topic: Rome. Reply as a ..."
    # Nothing shared: nothing dropped; one side a prefix of the other keeps the addition.
    assert focus_on_difference("a b", "c d") == ("a b", "c d")
    assert focus_on_difference("x y z", "x y z more") == ("x y z", "x y z more")


def test_long_pairs_are_read_where_they_differ(verifier: VerifiedDecision) -> None:
    tokenizer, limit = verifier._tokenizer, verifier.meta.max_length
    short = ("How do I reset my password?", "how to reset my password")
    assert fit_to_window(tokenizer, *short, limit) == short
    a = TEMPLATE + "Make 10 cards about the French Revolution."
    b = TEMPLATE + "Make 10 cards about photosynthesis in plants."
    fitted = fit_to_window(tokenizer, a, b, limit)
    assert fitted == focus_on_difference(a, b)
    assert "French Revolution" in fitted[0] and "photosynthesis" in fitted[1]
    # What the model scores is the focused pair, so a changed payload is seen (and missed).
    assert verifier.logits([(a, b)]) == pytest.approx(verifier.logits([fitted]), abs=1e-4)
    assert verifier.choose(b, [candidate(a, 0.95)], verifier.cosine_floor) is None


def test_threshold_is_a_cosine_floor(verifier: VerifiedDecision) -> None:
    cached, new = PARAPHRASES[0]
    # Nothing below the threshold hits, whatever the verifier thinks; no candidates, no hit.
    assert verifier.choose(new, [candidate(cached, 0.80)], 0.81) is None
    assert verifier.choose(new, [], verifier.cosine_floor) is None


def test_picks_the_candidate_the_verifier_accepts(verifier: VerifiedDecision) -> None:
    wrong = candidate("How many euros is 100 US dollars?", 0.99, row=1)
    right = candidate("how many US dollars is 100 euros", 0.98, row=2)
    chosen = verifier.choose("How many US dollars is 100 euros?", [wrong, right], 0.5)
    assert chosen is right


def test_cascade_scores_the_others_only_when_the_most_similar_fails(
    verifier: VerifiedDecision,
) -> None:
    query = "what's the capital of france"
    source = candidate("What is the capital of France?", 0.97, row=1)
    other = candidate("What is the capital of Germany?", 0.80, row=2)
    # The most similar candidate passes: the second is never scored.
    scored = verifier.scored(query, [other, source], verifier.cosine_floor)
    assert [c for _, c in scored] == [source]
    assert verifier.accept(scored) is source
    # It fails: the second pass scores the rest, and one of them may still be served.
    wrong = candidate("How many euros is 100 US dollars?", 0.99, row=3)
    right = candidate("How many US dollars is 100 euros, please?", 0.90, row=4)
    scored = verifier.scored("How many US dollars is 100 euros?", [right, wrong], 0.5)
    assert [c for _, c in scored] == [wrong, right]
    assert scored[0][0] < verifier.score_threshold
    # Batched lookups take the same path as one at a time.
    asked = [
        (query, [other, source], 0.5),
        ("How many US dollars is 100 euros?", [right, wrong], 0.5),
    ]
    assert [[c for _, c in s] for s in verifier.scored_many(asked)] == [[source], [wrong, right]]


def test_without_the_cascade_every_candidate_is_scored() -> None:
    everything = VerifiedDecision(cascade=False)
    source = candidate("What is the capital of France?", 0.97, row=1)
    other = candidate("What is the capital of Germany?", 0.80, row=2)
    scored = everything.scored("what's the capital of france", [other, source], 0.5)
    assert [c for _, c in scored] == [source, other]
    assert everything.accept(scored) is source


def test_works_inside_the_cache_service(
    tmp_path: Path, encoder: Encoder, verifier: VerifiedDecision
) -> None:
    store = SqlFaissStore(f"sqlite:///{tmp_path / 'db'}", tmp_path / "faiss", encoder.dim)
    batcher = MicroBatcher(encoder.encode, max_size=64, max_wait_s=0.002)
    config = CacheConfig(threshold=verifier.cosine_floor)
    service = CacheService(config, store, batcher, decision=verifier)

    def chat(text: str) -> dict[str, object]:
        return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}

    async def run() -> list[str]:
        await service.store(P, chat(NEAR_COPIES[0][0]), "about 108 US dollars")
        await service.store(P, chat(PARAPHRASES[1][0]), "Settings > Billing")
        statuses = [
            (await service.lookup(P, chat(NEAR_COPIES[0][1]))).status,
            (await service.lookup(P, chat(PARAPHRASES[1][1]))).status,
        ]
        await batcher.close()
        return statuses

    try:
        assert asyncio.run(run()) == ["MISS", "HIT-SEMANTIC"]
    finally:
        store.close()


def test_an_artifact_with_fewer_layers_loads_and_scores_alike_on_both_runtimes(
    tmp_path: Path,
) -> None:
    """A student distilled to fewer layers (``train_verifier.py --layers``) is built with the
    artifact's depth, and its ONNX export reads pairs as its torch model does."""
    from safetensors.torch import save_file

    from semcache.cache.verifier_model import (
        artifact_layers,
        keep_layers,
        load_pair_model,
        shippable_state,
    )

    shipped = default_artifact_dir()
    meta = json.loads((shipped / "verifier.json").read_text())
    model, _ = load_pair_model(shipped / meta["artifact"])
    state = shippable_state(keep_layers(model, [0, 5]))
    assert artifact_layers(state) == 2
    save_file(state, str(tmp_path / meta["artifact"]))
    (tmp_path / "verifier.json").write_text(json.dumps(meta))

    student, _ = load_pair_model(tmp_path / meta["artifact"])
    assert len(student.encoder.encoder.layer) == 2
    onnx = VerifiedDecision(tmp_path, models_dir=tmp_path / "models")
    torch_ = VerifiedDecision(tmp_path, runtime="torch")
    pairs = NEAR_COPIES + PARAPHRASES
    got, want = onnx.logits(pairs), torch_.logits(pairs)
    assert np.allclose(got, want, atol=1e-4), (got, want)
    # Two layers are not the shipped six: the scores differ from the shipped model's.
    assert not np.allclose(got, VerifiedDecision().logits(pairs), atol=1e-2)
