"""The fused ONNX graphs (eager attention, ONNX Runtime's BERT fusions) against the unfused ones.

Run from the repository root (a few minutes on 2 cores):

    .venv/bin/python benchmarks/onnx_fusion.py --shared-data ../shared/data

The shipped exports of the encoder and the verifier (``semcache.embed.fusion``: one
``Attention`` node per layer) are loaded as ``semcache serve`` loads them; the same models are
exported again the way they were before (PyTorch's attention, no fusion) into a temporary
folder, and both are timed on the shipped 2 intra-op threads, sample by sample in alternation,
on the side-by-side workload (``benchmarks/_workload.py``): ``Encoder.encode`` of one reworded
query and of 16 at once, ``VerifiedDecision.logits`` of one (stored prompt, rewording) pair and
of 16. Agreement: the largest difference of any embedding component and of any verifier logit
between the two graphs. Writes benchmarks/results/onnx_fusion.{json,md}.
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from _common import alternated, write_results
from _models import ShippedModels, workload_arguments

from semcache.cache.verifier import _export_verifier, default_artifact_dir
from semcache.embed.encoder import _export_encoder, bundled_model_path
from semcache.embed.runtime import OnnxModel


def unfused(export: Any, folder: Path, name: str, threads: int) -> OnnxModel:
    path = folder / f"{name}-unfused.onnx"
    export(path)
    return OnnxModel(path.read_bytes(), threads, str(path))


def nodes(model: OnnxModel) -> int:
    return len(onnx.load(model.source).graph.node)


def main() -> None:
    args, workload = workload_arguments(__doc__.splitlines()[0], samples=150)
    models = ShippedModels(precision="fp32")  # fused against unfused, both fp32
    encoder, verifier, threads = models.encoder, models.verifier, models.threads
    fused = dict(models.sessions)
    with tempfile.TemporaryDirectory(prefix="semcache-unfused-") as tmp:
        artifact = default_artifact_dir() / verifier.meta.artifact
        exports = {
            "encoder": _export_encoder(bundled_model_path(), fused=False),
            "verifier": _export_verifier(artifact, None, fused=False),
        }
        plain = {name: unfused(e, Path(tmp), name, threads) for name, e in exports.items()}
        counts = {
            name: {"fused": nodes(fused[name]), "unfused": nodes(plain[name])} for name in fused
        }
    load_start = os.getloadavg()
    encode_with, verify_with = models.encode_with, models.verify_with
    n = args.samples
    reworded = workload.reworded
    pairs = list(zip(workload.stored, workload.reworded, strict=True))
    ones = [[t] for t in reworded[:n]]
    sixteens = [reworded[i : i + 16] for i in range(0, 16 * max(1, n // 8), 16)]
    pair_ones = [[p] for p in pairs[:n]]
    pair_sixteens = [pairs[i : i + 16] for i in range(0, 16 * max(1, n // 8), 16)]
    encoders = {"unfused": encode_with(plain["encoder"]), "fused": encode_with(fused["encoder"])}
    verifiers = {
        "unfused": verify_with(plain["verifier"]),
        "fused": verify_with(fused["verifier"]),
    }
    timing = {
        "encode, 1 reworded query": alternated(encoders, ones),
        "encode, 16 reworded queries": alternated(encoders, sixteens),
        "verifier, 1 (prompt, rewording) pair": alternated(verifiers, pair_ones),
        "verifier, 16 pairs": alternated(verifiers, pair_sixteens),
    }
    texts = reworded[:200]
    encoder._onnx = plain["encoder"]
    before = encoder.encode(texts)
    encoder._onnx = fused["encoder"]
    after = encoder.encode(texts)
    verifier._onnx = plain["verifier"]
    logits_before = np.array(verifier.logits(pairs[:200]))
    verifier._onnx = fused["verifier"]
    logits_after = np.array(verifier.logits(pairs[:200]))
    agreement = {
        "embedding_max_abs_diff": float(np.abs(before - after).max()),
        "verifier_logit_max_abs_diff": float(np.abs(logits_before - logits_after).max()),
    }
    load = {"start": load_start, "end": os.getloadavg()}
    rows = []
    for call, t in timing.items():
        ratio = t["unfused"]["median_ms"] / t["fused"]["median_ms"]
        rows.append(
            f"| {call} | {t['unfused']['median_ms']} | {t['unfused']['p99_ms']} | "
            f"{t['fused']['median_ms']} | {t['fused']['p99_ms']} | {ratio:.2f}x |"
        )
    table = "\n".join(
        [
            "# Fused ONNX graphs (eager attention + ONNX Runtime's BERT fusions) against unfused",
            "",
            f"`.venv/bin/python benchmarks/onnx_fusion.py --shared-data ../shared/data` "
            f"({platform.machine()}, {os.cpu_count()} cores, load {load['start']} -> "
            f"{load['end']}; {threads} intra-op threads; the two graphs alternated sample by "
            "sample).",
            "",
            "| call | unfused median ms | unfused p99 ms | fused median ms | fused p99 ms | "
            "unfused / fused |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Graph nodes: encoder {counts['encoder']['unfused']} -> "
            f"{counts['encoder']['fused']}, verifier {counts['verifier']['unfused']} -> "
            f"{counts['verifier']['fused']}. Agreement over 200 reworded queries and 200 pairs: "
            f"largest embedding component difference {agreement['embedding_max_abs_diff']:.1e}, "
            f"largest verifier logit difference {agreement['verifier_logit_max_abs_diff']:.1e}.",
        ]
    )
    write_results(
        "onnx_fusion",
        {"threads": threads, "load": load, "timing": timing, "nodes": counts, **agreement},
        table,
    )


if __name__ == "__main__":
    main()
