"""``verifier_precision = int8``: the artifact trained for int8, every projection quantised;
an fp32 artifact at int8, partly quantised; each pair scored alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semcache.app import hit_decision
from semcache.cache.verifier import VerifiedDecision, VerifierMeta
from semcache.config import load_settings
from semcache.errors import ConfigError

QUESTIONS = [
    "How many US dollars is 100 euros?",
    "How many euros is 100 US dollars?",
    "what's the capital of france",
    "What is the capital of France?",
    "How do I make cold brew coffee at home?",
    "Hi! Could you tell me how to make cold brew coffee at home? Thanks!",
    "Write a function in Python that parses ISO 8601 dates and returns a datetime",
    "Explain the difference between TCP and UDP to a ten-year-old",
    "Summarise: " + "the quick brown fox jumps over the lazy dog " * 20,
    *(f"Tell me a fact about the number {n}" for n in range(12)),
]


def test_the_default_runs_the_int8_trained_artifact_with_every_projection_int8(
    tmp_path: Path,
) -> None:
    """The shipped default, verifier_precision = int8, loads the artifact trained for int8
    (its own weights and calibration) with every projection quantised; each pair in a call of
    its own, so a pair's logit does not move with the pairs scored beside it, and stays near
    fp32's."""
    import onnx

    from semcache.cache.verifier import default_artifact_dir

    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path)})
    assert settings.verifier_precision == "int8"
    int8, _ = hit_decision(settings)
    assert isinstance(int8, VerifiedDecision) and int8.precision == "int8"
    assert int8.meta.precision == "int8"
    assert int8.meta == VerifierMeta.read(default_artifact_dir("int8") / "verifier.json")
    assert default_artifact_dir("int8") != default_artifact_dir()
    assert int8._onnx is not None
    assert Path(int8._onnx.source).name.startswith("verifier_int8-")
    ops = [node.op_type for node in onnx.load(int8._onnx.source).graph.node]
    # QKV in the six attentions; attention output, feed-forward in and out (18) and the head.
    assert ops.count("QAttention") == 6 and ops.count("Attention") == 0
    assert ops.count("MatMulInteger") == 19 and ops.count("MatMul") == 0
    partner = [(i * 7 + 3) % len(QUESTIONS) for i in range(len(QUESTIONS))]
    pairs = [(QUESTIONS[i], QUESTIONS[j]) for i, j in enumerate(partner)]
    pairs += [(QUESTIONS[0], QUESTIONS[1]), (QUESTIONS[2], QUESTIONS[3])]
    together = int8.logits(pairs)
    assert together == [int8.logits([p])[0] for p in pairs]
    moved = np.abs(np.array(together) - np.array(VerifiedDecision().logits(pairs)))
    assert 0 < moved.mean() < 0.4 and moved.max() < 1.5, (moved.mean(), moved.max())


def test_an_fp32_artifact_at_int8_quantises_two_projections(tmp_path: Path) -> None:
    """An artifact trained for fp32 run at int8: only the QKV and feed-forward input
    projections (and the head) quantised, the two output projections left fp32, with the
    artifact's fp32 calibration."""
    import onnx

    from semcache.cache.verifier import default_artifact_dir

    int8 = VerifiedDecision(default_artifact_dir(), models_dir=tmp_path, precision="int8")
    assert int8.meta.precision == "fp32" and int8._onnx is not None
    ops = [node.op_type for node in onnx.load(int8._onnx.source).graph.node]
    assert ops.count("QAttention") == 6 and ops.count("Attention") == 0
    # The six feed-forward input projections and the linear head.
    assert ops.count("MatMulInteger") == 7 and ops.count("MatMul") == 12
    pairs = [(QUESTIONS[0], QUESTIONS[1]), (QUESTIONS[2], QUESTIONS[3])]
    assert int8.logits(pairs) == [int8.logits([p])[0] for p in pairs]


def test_a_bad_verifier_precision_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="verifier precision must be one of"):
        VerifiedDecision(models_dir=tmp_path / "models", precision="int4")
    with pytest.raises(ConfigError, match="verifier_precision"):
        load_settings(environ={"SEMCACHE_VERIFIER_PRECISION": "int4"})
