"""Which of the verifier's layers can run int8? Hit quality and speed per quantised part.

Run from the repository root, on a machine with nothing else running (15 to 20 minutes):

    .venv/bin/python benchmarks/verifier_int8_layers.py --shared-data ../shared/data

The shipped verifier runs fp32 because the whole-graph int8 version (``quantized_models.py``)
lost 1 to 3 points of hit quality. This script quantises one part of the fp32 ONNX export at
a time (ONNX Runtime ``quantize_dynamic``, per-channel int8 weights, as
``semcache.embed.quantize.quantize_int8`` does for the encoder), into a temporary folder:

* ``all (default ops)``: the quantiser's defaults, which also take the word-embedding table
  (``QEmbedLayerNormalization``): the graph ``quantized_models.py`` times;
* ``all matmuls``: the attention's fused QKV projection (``Attention``), its output
  projection, and the feed-forward input and output projections, in every layer;
* each of those four alone, and the first and the last layer alone;
* ``qkv + ffn_in``: what ``verifier_precision = int8`` exports for an artifact trained for
  fp32 (the shipped int8 default is ``semcache/data/verifier-int8``, trained for int8, every
  projection quantised: ``all matmuls``).

Every variant also quantises the linear head (a ``Gemm`` the quantiser takes as a MatMul; it
reads one pooled vector a pair, and the last layer with the head moved the logit by 0.01).

For each variant, every pair of four labelled sets (QQP test, STS-B, hard pairs, GPTCache
mock) is scored alone (one pair per call: activations are quantised with one scale per call,
so a pair's logit would otherwise depend on its batch-mates), with the cosine of the shipped
int8 encoder and the shipped calibration (not recalibrated): recall and false-hit rate of the
decision (cosine >= the floor and probability >= the threshold, or the same question), and
the mean absolute change of the logit from fp32. None of the sets was used for training or
calibration. Speed: one (stored prompt, its rewording) pair per call from the side-by-side
workload, all variants alternated sample by sample. Writes
``benchmarks/results/verifier_int8_layers.{json,md}``.
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import alternated, write_results
from _models import ShippedModels, workload_arguments

from semcache.bench import datasets as ds
from semcache.cache.pair_text import fit_to_window, same_question
from semcache.cache.verifier import VerifiedDecision, default_artifact_dir
from semcache.embed.quantize import quantize_int8
from semcache.embed.runtime import OnnxModel, padded_feeds

MATMULS = ("MatMul", "Attention")


def part(node: str) -> str:
    """Which projection a MatMul/Attention node of the fused graph is."""
    if node.startswith("Attention"):
        return "qkv"
    if "attention/output" in node:
        return "attn_out"
    return "ffn_in" if "intermediate" in node else "ffn_out"


def layer(node: str) -> int:
    if node.startswith("Attention_"):
        return int(node.split("_")[1])
    return int(node.split("layer.")[1].split("/")[0])


def variants(nodes: list[str]) -> dict[str, tuple[list[str] | None, list[str]]]:
    """name -> (op types, nodes quantised); None op types: the quantiser's defaults."""
    table: dict[str, tuple[list[str] | None, list[str]]] = {
        "all (default ops)": (None, nodes),
        "all matmuls": (list(MATMULS), nodes),
    }
    for p in ("qkv", "attn_out", "ffn_in", "ffn_out"):
        table[p] = (list(MATMULS), [n for n in nodes if part(n) == p])
    last = max(layer(n) for n in nodes)
    table["layer 0"] = (list(MATMULS), [n for n in nodes if layer(n) == 0])
    table[f"layer {last}"] = (list(MATMULS), [n for n in nodes if layer(n) == last])
    return table


def build(source: Path, folder: Path, nodes: list[str]) -> dict[str, OnnxModel]:
    sessions = {"fp32": OnnxModel(source.read_bytes(), 2, str(source))}
    for i, (name, (ops, chosen)) in enumerate(variants(nodes).items()):
        target = folder / f"variant{i}.onnx"
        exclude = [n for n in nodes if n not in chosen]
        quantize_int8(source, target, op_types=ops, exclude=exclude)
        sessions[name] = OnnxModel(target.read_bytes(), 2, name)
    # The fp32 artifact at int8, as ``semcache serve`` exports and caches it (its recipe lives
    # in semcache.cache.verifier, not here): QKV and feed-forward input projections. (The
    # int8 setting's default artifact, trained for int8, quantises every projection.)
    shipped = VerifiedDecision(default_artifact_dir(), precision="int8")._onnx
    assert shipped is not None
    sessions["qkv + ffn_in"] = shipped
    return sessions


def quality(models: ShippedModels, sessions: dict[str, OnnxModel], pairs: list[Any]) -> dict:
    verifier = models.verifier
    tok = verifier._tokenizer
    cosines = np.sum(
        models.encoder.encode([p.a for p in pairs]) * models.encoder.encode([p.b for p in pairs]),
        axis=1,
    )
    window = verifier.meta.max_length
    encodings = tok.encode_batch([fit_to_window(tok, p.a, p.b, window) for p in pairs])
    same = np.array([same_question(p.a, p.b, verifier._vocabulary) for p in pairs])
    labels = np.array([p.label for p in pairs])
    out: dict[str, Any] = {}
    reference = None
    for name, session in sessions.items():
        logits = np.array(
            [
                float(session.run(padded_feeds([e], verifier._pad_id)).reshape(-1)[0])
                for e in encodings
            ]
        )
        if reference is None:
            reference = logits
        probability = np.array(
            [verifier.probability(x, c) for x, c in zip(logits, cosines, strict=True)]
        )
        hit = (cosines >= verifier.cosine_floor) & (
            same | (probability >= verifier.score_threshold)
        )
        out[name] = {
            "recall_pct": _pct(hit[labels == 1]),
            "false_hit_pct": _pct(hit[labels == 0]),
            "mean_abs_logit_change": round(float(np.abs(logits - reference).mean()), 4),
        }
    return out


def _pct(values: np.ndarray) -> float | None:
    return round(float(values.mean()) * 100, 2) if len(values) else None


def main() -> int:
    args, workload = workload_arguments(__doc__.splitlines()[0], samples=300)
    data = args.shared_data
    models = ShippedModels()
    assert models.verifier._onnx is not None
    source = Path(models.verifier._onnx.source)
    import onnx

    nodes = [n.name for n in onnx.load(str(source)).graph.node if n.op_type in MATMULS]
    sets = {
        "qqp-test": ds.load_qqp_csv(data / ds.SHARED_SETS["qqp-test"]),
        "stsb": ds.load_stsb(data / ds.SHARED_SETS["stsb-test"]),
        "hard-pairs": ds.read_pairs_jsonl(Path("benchmarks/data/hard_pairs.jsonl")),
        "gptcache-mock": ds.load_gptcache_mock(data / ds.SHARED_SETS["gptcache-mock"]),
    }
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="verifier-int8-") as tmp:
        sessions = build(source, Path(tmp), nodes)
        report: dict[str, Any] = {"sets": {}}
        for name, pairs in sets.items():
            report["sets"][name] = quality(models, sessions, pairs)
            print(name, report["sets"][name], flush=True)
        tok = models.verifier._tokenizer
        pairs = list(zip(workload.stored, workload.reworded, strict=True))[: args.samples]
        feeds = [
            padded_feeds([tok.encode(*fit_to_window(tok, a, b, 128))], models.verifier._pad_id)
            for a, b in pairs
        ]
        calls = {name: session.run for name, session in sessions.items()}
        report["speed_ms"] = alternated(calls, feeds)
    report["machine"] = {"cpu": platform.machine(), "cpus": os.cpu_count(), "threads": 2}
    report["load"] = [list(load_before), list(os.getloadavg())]
    write_results("verifier_int8_layers", report, markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    speed = report["speed_ms"]
    fp32 = speed["fp32"]["median_ms"]
    sets = report["sets"]
    columns = [f"{s} recall / FHR %" for s in sets]
    columns += ["logit change (mean over sets)", "median ms / pair", "speed-up"]
    head = "| variant | " + " | ".join(columns) + " |"
    lines = [
        "# The verifier's parts in int8, one at a time",
        "",
        "`.venv/bin/python benchmarks/verifier_int8_layers.py --shared-data ../shared/data` "
        f"({report['machine']['cpu']}, {report['machine']['cpus']} cores, 2 intra-op threads, "
        f"load {report['load'][0][0]:.2f} -> {report['load'][1][0]:.2f}); shipped calibration, "
        "not recalibrated; every pair scored alone.",
        "",
        head,
        "|" + "---|" * (len(sets) + 4),
    ]
    for name in speed:
        cells = []
        changes = []
        for s in sets.values():
            row = s[name]
            fhr = "-" if row["false_hit_pct"] is None else row["false_hit_pct"]
            cells.append(f"{row['recall_pct']} / {fhr}")
            changes.append(row["mean_abs_logit_change"])
        median = speed[name]["median_ms"]
        lines.append(
            f"| {name} | " + " | ".join(cells)
            + f" | {np.mean(changes):.3f} | {median:.3f} | {fp32 / median:.2f}x |"
        )  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
