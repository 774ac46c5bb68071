"""The ONNX runtime: exported once from the shipped weights, reused, repaired, equal to torch.

The cache logic (export once, reuse, a bad file exported again, a folder that cannot be
written) is tested on a tiny hand-made ONNX graph; the real models are exported once for this
module (about 20-40 s) into a fresh data dir and checked against torch.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from candidates import candidate

from semcache.app import hit_decision, load_encoder
from semcache.cache.verifier import VerifiedDecision
from semcache.config import Settings, load_settings
from semcache.embed import Encoder
from semcache.embed import runtime as rt
from semcache.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

# -- length groups ---------------------------------------------------------------------------


def _cost(groups: list[list[int]], lengths: list[int]) -> int:
    return sum(rt.FIXED_COST_TOKENS + len(g) * max(lengths[i] for i in g) for g in groups)


def _partitions(items: list[int]) -> Iterator[list[list[int]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for smaller in _partitions(rest):
        for i in range(len(smaller)):
            yield [*smaller[:i], [first, *smaller[i]], *smaller[i + 1 :]]
        yield [[first], *smaller]


def test_length_groups_pad_a_long_text_apart_and_are_optimal() -> None:
    assert rt.length_groups([]) == []
    assert rt.length_groups([7]) == [[0]]
    assert rt.length_groups([12] * 10) == [list(range(10))]
    # One 256-token text among 15 short ones: padding them all to 256 would cost 16x.
    lengths = [12] * 7 + [256] + [13] * 8
    assert sorted(map(sorted, rt.length_groups(lengths))) == [
        [i for i in range(16) if i != 7],
        [7],
    ]
    rng = random.Random(5)
    for _ in range(40):
        lengths = [rng.choice([3, 9, 10, 30, 31, 128]) for _ in range(rng.randint(1, 6))]
        groups = rt.length_groups(lengths)
        assert sorted(itertools.chain(*groups)) == list(range(len(lengths)))
        best = min(_cost(p, lengths) for p in _partitions(list(range(len(lengths)))))
        assert _cost(groups, lengths) == best


# -- the cache, on a tiny graph --------------------------------------------------------------


def _tiny_export(calls: list[Path], scale: float = 2.0) -> Any:
    def export(path: Path) -> None:
        import onnx
        from onnx import TensorProto, helper

        calls.append(path)
        graph = helper.make_graph(
            [
                helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
                helper.make_node("Mul", ["f", "k"], ["out"]),
            ],
            "tiny",
            [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "s"])],
            [helper.make_tensor("k", TensorProto.FLOAT, [], [scale])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(path))

    return export


def _run(model: rt.OnnxModel) -> list[list[float]]:
    return model.run({"input_ids": np.array([[1, 2]], dtype=np.int64)}).tolist()


def test_export_once_then_reuse(tmp_path: Path) -> None:
    calls: list[Path] = []
    first = rt.load_onnx(tmp_path / "models", "tiny", "a" * 64, _tiny_export(calls), 1)
    again = rt.load_onnx(tmp_path / "models", "tiny", "a" * 64, _tiny_export(calls), 1)
    assert len(calls) == 1
    assert _run(first) == _run(again) == [[2.0, 4.0]]
    names = sorted(p.name for p in (tmp_path / "models").iterdir())
    # The model, its checksum and the lock; no temporary file is left.
    stem = "tiny-" + "a" * 20
    assert names == [".tiny.lock", f"{stem}.onnx", f"{stem}.sha256"]


@pytest.mark.parametrize("damage", ["truncated", "flipped", "no checksum", "unloadable"])
def test_a_damaged_file_is_exported_again(tmp_path: Path, damage: str) -> None:
    calls: list[Path] = []
    folder = tmp_path / "models"
    rt.load_onnx(folder, "tiny", "b" * 64, _tiny_export(calls), 1)
    path = next(folder.glob("tiny-*.onnx"))
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        path.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    elif damage == "no checksum":
        path.with_suffix(".sha256").unlink()
    else:  # bytes that match their checksum but are no ONNX model
        import hashlib

        path.write_bytes(b"not a model")
        path.with_suffix(".sha256").write_text(hashlib.sha256(b"not a model").hexdigest())
    model = rt.load_onnx(folder, "tiny", "b" * 64, _tiny_export(calls), 1)
    assert len(calls) == 2
    assert _run(model) == [[2.0, 4.0]]
    assert rt.load_onnx(folder, "tiny", "b" * 64, _tiny_export(calls), 1) is not None
    assert len(calls) == 2


def test_changed_weights_export_again_and_drop_the_old_file(tmp_path: Path) -> None:
    calls: list[Path] = []
    folder = tmp_path / "models"
    rt.load_onnx(folder, "tiny", "c" * 64, _tiny_export(calls), 1)
    model = rt.load_onnx(folder, "tiny", "d" * 64, _tiny_export(calls, scale=3.0), 1)
    assert len(calls) == 2 and _run(model) == [[3.0, 6.0]]
    assert [p.name for p in folder.glob("tiny-*.onnx")] == ["tiny-" + "d" * 20 + ".onnx"]


def test_a_folder_that_cannot_be_written_exports_to_a_temporary_file(tmp_path: Path) -> None:
    calls: list[Path] = []
    blocker = tmp_path / "file"
    blocker.write_text("a file where the models folder's parent should be")
    for _ in range(2):  # nothing is cached: each load exports
        model = rt.load_onnx(blocker / "models", "tiny", "e" * 64, _tiny_export(calls), 1)
        assert _run(model) == [[2.0, 4.0]]
    assert len(calls) == 2


def test_a_failing_export_is_a_config_error(tmp_path: Path) -> None:
    def broken(path: Path) -> None:
        raise RuntimeError("unsupported operator")

    with pytest.raises(ConfigError, match="cannot export tiny to ONNX: unsupported operator"):
        rt.load_onnx(tmp_path, "tiny", "f" * 64, broken, 1)
    assert list(tmp_path.glob("*tiny-*")) == []


# -- the real models -------------------------------------------------------------------------


class Exports:
    """Counts the exports ``semcache.embed.runtime`` makes while installed."""

    def __init__(self) -> None:
        self.stems: list[str] = []
        self._real = rt._export_to

    def __call__(self, folder: Path, stem: str, export: Any) -> tuple[Path, bytes]:
        self.stems.append(stem)
        return self._real(folder, stem, export)


@pytest.fixture(scope="module")
def exports() -> Iterator[Exports]:
    counter = Exports()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rt, "_export_to", counter)
        yield counter


@pytest.fixture(scope="module")
def onnx_start(
    tmp_path_factory: pytest.TempPathFactory, exports: Exports
) -> tuple[Settings, Encoder, VerifiedDecision, list[str]]:
    """The first start over an empty data dir: both models exported (once, for the module)."""
    data_dir = tmp_path_factory.mktemp("fresh-data")
    settings = load_settings(environ={}, overrides={"data_dir": str(data_dir)})
    assert settings.inference_runtime == "onnx"
    before = len(exports.stems)
    encoder = load_encoder(settings)
    verifier, _ = hit_decision(settings)
    assert isinstance(verifier, VerifiedDecision)
    return settings, encoder, verifier, exports.stems[before:]


@pytest.fixture(scope="module")
def torch_start(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Settings, Encoder, VerifiedDecision]:
    data_dir = tmp_path_factory.mktemp("torch-data")
    settings = load_settings(
        environ={}, overrides={"data_dir": str(data_dir), "inference_runtime": "torch"}
    )
    verifier, _ = hit_decision(settings)
    assert isinstance(verifier, VerifiedDecision)
    return settings, load_encoder(settings), verifier


def test_first_start_exports_each_model_once_into_the_data_dir(onnx_start: Any) -> None:
    settings, encoder, verifier, stems = onnx_start
    assert sorted(s.split("-")[0] for s in stems) == ["encoder_int8", "verifier_int8"]
    models = Path(settings.data_dir) / "models"
    assert sorted(p.name for p in models.glob("*-*")) == sorted(
        f"{s}.{ext}" for s in stems for ext in ("onnx", "sha256")
    )
    assert encoder.runtime == verifier.runtime == "onnx"


def test_the_exports_run_fused_attention(onnx_start: Any) -> None:
    """One ONNX Runtime ``Attention`` node per layer of the six, not the dozens of small ops
    torch writes for each (``semcache.embed.fusion``): the same numbers, fewer kernels. Both
    are int8 by default: their weight matrices multiplied as integers (the verifier's head
    too)."""
    import onnx

    settings, _, _, stems = onnx_start
    for stem in stems:
        graph = onnx.load(str(Path(settings.data_dir) / "models" / f"{stem}.onnx")).graph
        ops = [node.op_type for node in graph.node]
        int8 = "_int8-" in stem
        assert ops.count("QAttention" if int8 else "Attention") == 6, (stem, sorted(set(ops)))
        # The fused residual + layer norms and bias + GELUs are split back onto faster
        # kernels (fusion.split_slow_fusions): standard LayerNormalization, contrib Gelu.
        assert ops.count("SkipLayerNormalization") == ops.count("BiasGelu") == 0, stem
        assert ops.count("LayerNormalization") == 12 and ops.count("Gelu") == 6, stem
        # 6 layers x 4 weight matrices, 3 of them outside the attention node; the verifier's
        # head is one more.
        head = 1 if stem.startswith("verifier") else 0
        assert ops.count("MatMulInteger") == (18 + head if int8 else 0), stem
        assert len(ops) < (190 if int8 else 110), stem


def test_second_start_reuses_the_exports_without_torch(onnx_start: Any, exports: Exports) -> None:
    settings, encoder, _, _ = onnx_start
    before = len(exports.stems)
    again = load_encoder(settings)
    hit_decision(settings)
    assert exports.stems[before:] == []
    texts = ["How do I reset my password?", "where is my invoice"]
    assert np.allclose(again.encode(texts), encoder.encode(texts), atol=1e-6)
    # Another process loads both from the cache without importing torch or transformers.
    script = (
        "import sys\n"
        "from semcache.cache.verifier import VerifiedDecision\n"
        "from semcache.embed import Encoder\n"
        f"Encoder(models_dir={str(settings.resolved_models_dir)!r}).encode(['hello'])\n"
        f"VerifiedDecision(models_dir={str(settings.resolved_models_dir)!r}, precision='int8')"
        ".logits([('a', 'b')])\n"
        "print(sorted({'torch', 'transformers', 'sentence_transformers'} & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    stems = {p.stem for p in (Path(settings.data_dir) / "models").glob("*.onnx")}
    assert len(stems) == 2


def test_a_corrupt_cached_model_is_exported_again(
    onnx_start: Any, exports: Exports, tmp_path: Path
) -> None:
    settings, encoder, _, _ = onnx_start
    models = tmp_path / "models"
    shutil.copytree(Path(settings.data_dir) / "models", models)
    damaged = next(models.glob("encoder_int8-*.onnx"))
    with damaged.open("r+b") as fh:
        fh.truncate(os.path.getsize(damaged) // 3)
    before = len(exports.stems)
    repaired = Encoder(models_dir=models)
    assert [s.split("-")[0] for s in exports.stems[before:]] == ["encoder_int8"]
    texts = ["How do I reset my password?"]
    assert np.allclose(repaired.encode(texts), encoder.encode(texts), atol=1e-6)


# Texts of every kind the encoder meets: short, long (past the 256-token window), other
# scripts, odd spacing; and pairs for the verifier, one too long for its window.
TEXTS = [
    *(f"How do I {s}?" for s in ("reset my password", "export my data", "invite a teammate")),
    *(f"Can you tell me how to {s}" for s in ("delete a project", "rotate an API key")),
    "What is the capital of France?",
    "what's the capital of france",
    "How many US dollars is 100 euros?",
    "How many euros is 100 US dollars?",
    "Which foods should I not eat during pregnancy?",
    "Écris un poème sur la mer",
    "日本の首都はどこですか",
    "   lots   of\tspaces\n\nand lines   ",
    "a",
    "?",
    "Summarise: " + "the quick brown fox jumps over the lazy dog " * 60,
    "Write a function in Python that parses ISO 8601 dates and returns a datetime",
    "Explain the difference between TCP and UDP to a ten-year-old",
    *(f"Tell me a fact about the number {n}" for n in range(22)),
]
LONG = "You are a helpful study assistant. Make flash cards, numbered, plain words. " * 6


def test_onnx_matches_torch(onnx_start: Any, torch_start: Any) -> None:
    _, encoder, verifier, _ = onnx_start
    torch_settings, torch_encoder, torch_verifier = torch_start
    assert torch_encoder.runtime == torch_verifier.runtime == "torch"
    # The fallback exports nothing: no models folder appears in its data dir.
    assert not (Path(torch_settings.data_dir) / "models").exists()

    assert len(TEXTS) >= 40
    onnx_vectors = encoder.encode(TEXTS)
    # One at a time on torch: sentence-transformers pads a batch to its longest text.
    torch_vectors = np.vstack([torch_encoder.encode([t]) for t in TEXTS])
    assert onnx_vectors.dtype == np.float32 and onnx_vectors.shape == (len(TEXTS), 384)
    cosines = np.sum(onnx_vectors * torch_vectors, axis=1)
    # int8 (the default) moves a vector a little: near fp32's, never far from it (the
    # farthest is "?", a single token, at 0.96).
    assert encoder.precision == "int8"
    assert cosines.min() > 0.95 and cosines.mean() > 0.99, (cosines.min(), cosines.mean())
    assert cosines.min() < 0.9999  # it is the quantised graph that ran
    # Batched (length groups) or one at a time: int8 quantises a call's activations with one
    # scale for the whole batch, so a vector moves a little with its batch-mates; fp32's do not
    # (test_fp32_precision_matches_torch).
    single = np.vstack([encoder.encode([t]) for t in TEXTS[:8]])
    moved = np.sum(single * onnx_vectors[:8], axis=1)
    assert moved.min() > 0.97, moved

    # The default verifier on onnx is the int8-trained one (torch runs the fp32 model it was
    # trained from, whose logits it learnt to give): near, not equal
    # (test_fp32_precision_matches_torch holds the same weights to 0.001).
    assert verifier.precision == "int8"
    onnx_p, torch_p = _probabilities(verifier, torch_verifier, onnx_vectors)
    gap = max(abs(a - b) for a, b in zip(onnx_p, torch_p, strict=True))
    assert 0 < gap < 0.1, gap


def _probabilities(
    onnx_verifier: VerifiedDecision, torch_verifier: VerifiedDecision, vectors: np.ndarray
) -> tuple[list[float], list[float]]:
    """Both verifiers' hit probabilities for pairs of TEXTS (and a long templated pair)."""
    partner = [(i * 7 + 3) % len(TEXTS) for i in range(len(TEXTS))]
    pairs = [(TEXTS[i], TEXTS[j]) for i, j in enumerate(partner)]
    pairs += [(LONG + "Topic: the French Revolution.", LONG + "Topic: photosynthesis.")]
    cosine = [float(vectors[i] @ vectors[j]) for i, j in enumerate(partner)] + [0.9]
    onnx_p, torch_p = (
        [v.probability(x, c) for x, c in zip(v.logits(pairs), cosine, strict=True)]
        for v in (onnx_verifier, torch_verifier)
    )
    return onnx_p, torch_p


def test_fp32_precision_matches_torch(torch_start: Any, tmp_path: Path) -> None:
    settings = load_settings(
        environ={},
        overrides={
            "data_dir": str(tmp_path),
            "encoder_precision": "fp32",
            "verifier_precision": "fp32",
        },
    )
    fp32 = load_encoder(settings)
    assert fp32.precision == "fp32" and fp32.runtime == "onnx"
    torch_vectors = np.vstack([torch_start[1].encode([t]) for t in TEXTS])
    vectors = fp32.encode(TEXTS)
    cosines = np.sum(vectors * torch_vectors, axis=1)
    assert cosines.min() > 0.9999
    # Batched (length groups) or one at a time: the same vectors.
    single = np.vstack([fp32.encode([t]) for t in TEXTS[:8]])
    assert np.abs(single - vectors[:8]).max() < 1e-5
    # The fp32 verifier on onnx is the torch model's weights exported: the same probabilities.
    verifier, _ = hit_decision(settings)
    assert isinstance(verifier, VerifiedDecision) and verifier.precision == "fp32"
    onnx_p, torch_p = _probabilities(verifier, torch_start[2], vectors)
    assert max(abs(a - b) for a, b in zip(onnx_p, torch_p, strict=True)) < 0.001
    with pytest.raises(ConfigError, match="encoder precision must be one of"):
        Encoder(models_dir=tmp_path / "models", precision="int4")


def test_the_verifier_decides_a_batch_as_it_decides_each_lookup(onnx_start: Any) -> None:
    verifier: VerifiedDecision = onnx_start[2]
    requests = [
        (
            "How many US dollars is 100 euros?",
            [candidate("How many euros is 100 US dollars?", 0.97)],
        ),
        ("what's the capital of france", [candidate("What is the capital of France?", 0.93)]),
        (
            "how do i chnage my biling address",
            [candidate("How do I change my billing address?", 0.9)],
        ),
        ("Write a poem", []),
        (
            LONG + "Topic: photosynthesis.",
            [candidate(LONG + "Topic: the French Revolution.", 0.96, row=2), candidate("x", 0.2)],
        ),
    ]
    asked = [(q, c, verifier.cosine_floor) for q, c in requests]
    assert verifier.choose_many(asked) == [verifier.choose(*r) for r in asked]
    batched = verifier.scored_many(asked)
    for r, scored in zip(asked, batched, strict=True):
        assert [c for _, c in scored] == [c for _, c in verifier.scored(*r)]
        assert [s for s, _ in scored] == pytest.approx(
            [s for s, _ in verifier.scored(*r)], abs=1e-5
        )
    assert [c is not None for c in verifier.choose_many(asked)] == [False, True, True, False, False]


def test_split_fusions_compute_what_the_fused_kernels_did() -> None:
    """``split_slow_fusions`` turns SkipLayerNormalization (with its bias, and its residual
    sum read by a later node) and BiasGelu into standard ops: ONNX Runtime gives the same
    outputs within float rounding, and a node whose mean output is read stays fused."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from semcache.embed.fusion import split_slow_fusions

    rng = np.random.default_rng(3)
    width = 16
    weights = {
        name: rng.normal(size=shape).astype(np.float32)
        for name, shape in (("gamma", [width]), ("beta", [width]), ("bias", [width]))
    }
    nodes = [
        helper.make_node(
            "SkipLayerNormalization",
            ["x", "skip", "gamma", "beta", "bias"],
            ["normed", "", "", "residual"],
            "sln",
            domain="com.microsoft",
            epsilon=1e-5,
        ),
        helper.make_node(
            "BiasGelu", ["normed", "bias"], ["activated"], "gelu", domain="com.microsoft"
        ),
        helper.make_node("Add", ["activated", "residual"], ["y"], "out"),
        helper.make_node(
            "SkipLayerNormalization",
            ["y", "skip", "gamma", "beta"],
            ["z", "mean"],
            "kept",
            domain="com.microsoft",
        ),
    ]
    shape = [2, 5, width]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "skip")],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    fused = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    split = onnx.ModelProto()
    split.CopyFrom(fused)
    assert split_slow_fusions(split) == {"SkipLayerNormalization": 1, "BiasGelu": 1}
    ops = [node.op_type for node in split.graph.node]
    assert ops.count("SkipLayerNormalization") == 1 and "BiasGelu" not in ops  # "kept" stays
    assert ops.count("LayerNormalization") == 1 and ops.count("Gelu") == 1
    feeds = {n: rng.normal(size=shape).astype(np.float32) for n in ("x", "skip")}
    outputs = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, feeds
        )[0]
        for m in (fused, split)
    ]
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
