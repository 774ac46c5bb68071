"""The quantisation-aware training's simulation of the int8 graph (``_int8_verifier``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PAIRS = [
    ("How many US dollars is 100 euros?", "How many euros is 100 US dollars?"),
    ("what's the capital of france", "What is the capital of France?"),
    ("How do I make cold brew coffee at home?", "cold brew coffee recipe"),
    ("Write a haiku about autumn", "Write a haiku about spring"),
    ("Explain TCP vs UDP to a ten-year-old", "What is the difference between TCP and UDP?"),
    ("Tell me a fact about the number 7", "Tell me a fact about the number 8"),
    ("Summarise: " + "the quick brown fox jumps over the lazy dog " * 8, "Summarise the fox text"),
    ("hello", "hi there"),
]


@pytest.fixture(scope="module")
def shipped() -> Path:
    from semcache.cache.verifier import default_artifact_dir

    return default_artifact_dir() / "verifier.safetensors"


def test_fake_quant_computes_what_the_int8_graph_does(shipped: Path) -> None:
    """Pair by pair, the torch simulation gives the int8 ONNX graph's logits far more closely
    than fp32 does (the rest is rounding flips of values on a step's edge); padding in a batch
    does not widen a pair's range; ``unfake_quant`` gives fp32 back."""
    import torch
    from _int8_verifier import fake_quant, score_pairs_int8, unfake_quant

    from semcache.bench.datasets import LabelledPair
    from semcache.cache.pair_text import fit_to_window
    from semcache.cache.verifier_model import MAX_LENGTH, encode_pairs, load_pair_model

    model, tokenizer = load_pair_model(shipped)
    model.eval()
    fitted = [fit_to_window(tokenizer, a, b, MAX_LENGTH) for a, b in PAIRS]
    alone = [encode_pairs(tokenizer, [a], [b]) for a, b in fitted]
    batch = encode_pairs(tokenizer, [a for a, _ in fitted], [b for _, b in fitted])
    with torch.inference_mode():
        fp32 = np.array([float(model(**e)) for e in alone])
        fake_quant(model)
        simulated = np.array([float(model(**e)) for e in alone])
        batched = model(**batch).numpy()
        unfake_quant(model)
        again = np.array([float(model(**e)) for e in alone])
    graph = score_pairs_int8(shipped, [LabelledPair(a, b, 0) for a, b in PAIRS])
    assert np.abs(simulated - graph).mean() < 0.4 * np.abs(fp32 - graph).mean()
    assert np.abs(batched - simulated).max() < 0.1
    assert np.array_equal(again, fp32)
