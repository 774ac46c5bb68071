"""Would int8 make the semantic path cheaper? fp32 against dynamic int8, in one run.

Run from the repository root, on a machine with nothing else running (a few minutes):

    .venv/bin/python benchmarks/quantized_models.py --shared-data ../shared/data

The fp32 ONNX exports of the encoder and the verifier (the ones ``semcache serve`` caches
with ``encoder_precision = fp32``) against their ONNX Runtime ``quantize_dynamic`` versions (int8
weights, per channel, activations quantised at run time: the issue's "dynamic quantisation"):
the encoder's as ``semcache serve`` ships and caches it (``encoder_precision = int8``, the
default), the verifier's (which ships fp32) quantised the same way into a temporary folder.
Both loaded on the shipped 2 intra-op threads, and timed sample by sample in
alternation, on the side-by-side workload (``benchmarks/_workload.py``): ``Encoder.encode``
of one reworded query, and ``VerifiedDecision.logits`` of one (stored prompt, its rewording)
pair, the two model calls a reworded lookup makes. ONNX Runtime's per-operator profile of
one batch says where a call's time goes.

Agreement: the int8 encoder's cosine to the fp32 vector of each query, and the verifier's
decisions (probability at least the calibrated threshold, with the fp32 cosine) on 300
(prompt, rewording) pairs and 300 (prompt, its nearest other stored prompt) pairs, fp32
against int8. Writes benchmarks/results/quantized_models.{json,md}.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import alternated, write_results
from _models import ShippedModels, workload_arguments

from semcache.embed import Encoder
from semcache.embed.quantize import quantize_int8
from semcache.embed.runtime import OnnxModel


def quantize(source: str, folder: Path) -> bytes:
    target = folder / (Path(source).stem + "-int8.onnx")
    quantize_int8(Path(source), target)
    return target.read_bytes()


def op_profile(path_or_bytes: Any, feeds: dict[str, np.ndarray], threads: int) -> dict[str, float]:
    """Share of each operator type in one session's node time over 5 runs of ``feeds``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.gettempdir(), "semcache-ort-profile")
    session = ort.InferenceSession(path_or_bytes, options, providers=["CPUExecutionProvider"])
    wanted = {i.name: feeds[i.name] for i in session.get_inputs()}
    for _ in range(5):
        session.run(None, wanted)
    trace = Path(session.end_profiling())
    totals: collections.Counter[str] = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node":
            totals[event["args"].get("op_name", "?")] += event["dur"]
    trace.unlink()
    whole = sum(totals.values()) or 1
    return {op: round(100 * us / whole, 1) for op, us in totals.most_common(4)}


def main() -> None:
    args, workload = workload_arguments(__doc__.splitlines()[0], samples=200)
    models = ShippedModels(precision="fp32")
    encoder, verifier, threads = models.encoder, models.verifier, models.threads
    fp32 = dict(models.sessions)
    # The encoder's int8 graph is the shipped one (encoder_precision = int8, the export
    # semcache serve caches); the verifier's is quantised here the same way.
    shipped_int8 = Encoder()._onnx
    assert shipped_int8 is not None
    with tempfile.TemporaryDirectory(prefix="semcache-int8-") as tmp:
        int8_bytes = {
            "encoder": Path(shipped_int8.source).read_bytes(),
            "verifier": quantize(fp32["verifier"].source, Path(tmp)),
        }
    int8 = {name: OnnxModel(data, threads, f"{name} int8") for name, data in int8_bytes.items()}
    started_load = os.getloadavg()
    encode_with, verify_with = models.encode_with, models.verify_with
    n = args.samples
    pairs = list(zip(workload.stored, workload.reworded, strict=True))
    timing = {
        "encode, 1 reworded query": alternated(
            {"fp32": encode_with(fp32["encoder"]), "int8": encode_with(int8["encoder"])},
            [[text] for text in workload.reworded[:n]],
        ),
        "verifier, 1 (prompt, rewording) pair": alternated(
            {"fp32": verify_with(fp32["verifier"]), "int8": verify_with(int8["verifier"])},
            [[pair] for pair in pairs[:n]],
        ),
    }
    ids = np.full((16, 32), 1000, dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": ids * 0}
    profile = {
        "fp32": {
            name: op_profile(Path(m.source).read_bytes(), feeds, threads)
            for name, m in fp32.items()
        },
        "int8": {name: op_profile(data, feeds, threads) for name, data in int8_bytes.items()},
    }

    # Agreement.
    encoder._onnx = fp32["encoder"]
    texts = workload.reworded[:500]
    vectors32 = encoder.encode(texts)
    encoder._onnx = int8["encoder"]
    vectors8 = encoder.encode(texts)
    encoder._onnx = fp32["encoder"]
    cosines = np.sum(vectors32 * vectors8, axis=1)
    stored = encoder.encode(workload.stored[:300])
    rewordings = vectors32[:300]  # the fp32 vectors of workload.reworded[:300], from above
    similar = stored @ stored.T
    np.fill_diagonal(similar, -2.0)
    nearest = similar.argmax(axis=1)
    judged = [
        (workload.stored[i], workload.reworded[i], float(stored[i] @ rewordings[i]), 1)
        for i in range(300)
    ] + [
        (workload.stored[int(j)], workload.stored[i], float(similar[i, j]), 0)
        for i, j in enumerate(nearest)
    ]
    decisions = {}
    for kind, model in (("fp32", fp32["verifier"]), ("int8", int8["verifier"])):
        verifier._onnx = model
        logits = verifier.logits([(a, b) for a, b, _, _ in judged])
        decisions[kind] = [
            verifier.probability(z, cos) >= verifier.score_threshold
            for z, (_, _, cos, _) in zip(logits, judged, strict=True)
        ]
    verifier._onnx = fp32["verifier"]
    flips = sum(a != b for a, b in zip(decisions["fp32"], decisions["int8"], strict=True))
    accepted = {
        kind: {
            "rewordings": sum(d for d, (*_, y) in zip(ds, judged, strict=True) if y == 1),
            "neighbours": sum(d for d, (*_, y) in zip(ds, judged, strict=True) if y == 0),
        }
        for kind, ds in decisions.items()
    }
    data = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"load {started_load} -> {os.getloadavg()}",
        "threads": threads,
        "timing": timing,
        "op_profile_batch16x32": profile,
        "encoder_cosine_int8_vs_fp32": {
            "min": round(float(cosines.min()), 4),
            "mean": round(float(cosines.mean()), 5),
        },
        "verifier_decisions": {"pairs": len(judged), "flipped": flips, "accepted": accepted},
    }
    lines = [
        "# fp32 against dynamic int8 (ONNX Runtime `quantize_dynamic`, per-channel int8 weights)",
        "",
        "`.venv/bin/python benchmarks/quantized_models.py --shared-data ../shared/data` "
        f"({data['machine']}; {threads} intra-op threads; {n} samples per row, the two models "
        "alternated sample by sample).",
        "",
        "| call | fp32 median ms | fp32 p99 ms | int8 median ms | int8 p99 ms | fp32 / int8 |",
        "|---|---|---|---|---|---|",
    ]
    for row, t in timing.items():
        a, b = t["fp32"], t["int8"]
        lines.append(
            f"| {row} | {a['median_ms']} | {a['p99_ms']} | {b['median_ms']} | {b['p99_ms']} | "
            f"{a['median_ms'] / b['median_ms']:.2f}x |"
        )
    lines += [
        "",
        "Where a call's time goes (ONNX Runtime profile, batch 16 x 32 tokens, % of node time): "
        f"fp32 encoder {profile['fp32']['encoder']}, verifier {profile['fp32']['verifier']}; "
        f"int8 encoder {profile['int8']['encoder']}, verifier {profile['int8']['verifier']}.",
        "",
        "Encoder agreement: cosine of the int8 vector to the fp32 one over 500 reworded "
        f"queries: min {cosines.min():.4f}, mean {cosines.mean():.5f}.",
        "",
        f"Verifier decisions on {len(judged)} pairs (300 prompt/rewording, 300 prompt/nearest "
        f"other prompt): {flips} flipped; accepted fp32 {accepted['fp32']}, "
        f"int8 {accepted['int8']}.",
    ]
    write_results("quantized_models", data, "\n".join(lines))


if __name__ == "__main__":
    main()
