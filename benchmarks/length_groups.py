"""What a model call costs under ``length_groups`` with each fixed per-call cost.

Run from the repository root (about two minutes on 2 CPU cores):

    .venv/bin/python benchmarks/length_groups.py --shared-data ../shared/data

``semcache.embed.runtime.length_groups`` splits a batch into runs of similar token lengths
whenever padding saves more than one more model call costs, that cost given in tokens
(``FIXED_COST_TOKENS``). This runs the shipped encoder and verifier (ONNX Runtime, their default
threads) on the batches a loaded server makes of the side-by-side workload
(``benchmarks/_workload.py``): 16 reworded or new prompts per encoder call, 4 or 16 (prompt,
rewording) pairs per verifier call (its batched pass, which ``semcache serve`` runs on torch;
on onnx the verifier scores each pair in a call of its own), each value of the fixed cost on
the same batches, the values alternated and the best of three rounds kept. Results:
``benchmarks/results/length_groups.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import write_results
from _workload import build_workload

import semcache.cache.verifier as verifier_module
import semcache.embed.encoder as encoder_module
from semcache.app import load_encoder
from semcache.cache.verifier import VerifiedDecision
from semcache.config import load_settings
from semcache.embed.runtime import FIXED_COST_TOKENS, length_groups

VALUES = (0, 8, 24, 48, 64, 96, 10**6)
ROUNDS = 3


def use_fixed(fixed: int) -> None:
    """Make both models split their batches with ``fixed`` as the per-call cost."""

    def groups(lengths: Sequence[int]) -> list[list[int]]:
        return length_groups(lengths, fixed)

    encoder_module.length_groups = groups  # type: ignore[assignment]
    verifier_module.length_groups = groups  # type: ignore[assignment]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", type=Path, required=True)
    args = parser.parse_args()
    workload = build_workload(args.shared_data / "arena-prompts-5k" / "prompts.jsonl")
    encoder = load_encoder(load_settings())
    verifier = VerifiedDecision()
    # The batched pass (torch's, and onnx's before each pair got a call of its own): the one
    # that pads pairs into length groups.
    verifier._pairwise = None
    rng = random.Random(1)
    pairs = list(zip(workload.stored, workload.reworded, strict=True))
    jobs: dict[str, tuple[Callable[[Any], object], list[Any]]] = {
        "encoder, 16 reworded prompts": (
            encoder.encode,
            [rng.sample(workload.reworded, 16) for _ in range(50)],
        ),
        "encoder, 16 new prompts": (
            encoder.encode,
            [rng.sample(workload.new, 16) for _ in range(50)],
        ),
        "verifier, 4 pairs": (verifier.logits, [rng.sample(pairs, 4) for _ in range(80)]),
        "verifier, 16 pairs": (verifier.logits, [rng.sample(pairs, 16) for _ in range(30)]),
    }
    load_start = os.getloadavg()
    rows: dict[str, dict[int, float]] = {}
    for name, (run, batches) in jobs.items():
        run(batches[0])  # warm
        best: dict[int, float] = {}
        for _ in range(ROUNDS):
            for fixed in VALUES:
                use_fixed(fixed)
                started = time.perf_counter()
                for batch in batches:
                    run(batch)
                per_batch = (time.perf_counter() - started) / len(batches) * 1000
                best[fixed] = min(best.get(fixed, float("inf")), per_batch)
        rows[name] = {k: round(v, 1) for k, v in best.items()}
        print(name, rows[name], flush=True)
    use_fixed(FIXED_COST_TOKENS)
    data = {
        "command": ".venv/bin/python benchmarks/length_groups.py --shared-data ../shared/data",
        "shipped": FIXED_COST_TOKENS,
        "loadavg": [list(load_start), list(os.getloadavg())],
        "ms_per_batch": {name: {str(k): v for k, v in row.items()} for name, row in rows.items()},
    }
    write_results("length_groups", data, markdown(data, rows))
    return 0


def label(fixed: int) -> str:
    return "never split" if fixed >= 10**6 else str(fixed)


def markdown(data: dict[str, Any], rows: dict[str, dict[int, float]]) -> str:
    head = "| batch | " + " | ".join(label(v) for v in VALUES) + " |"
    lines = [
        "# Model time per batch (ms) by `length_groups`' fixed per-call cost, in tokens",
        "",
        f"`{data['command']}` (2 CPU cores, load averages {data['loadavg'][0]} at the start, "
        f"{data['loadavg'][1]} at the end; best of {ROUNDS} alternated rounds on the same "
        f"batches). Shipped: {data['shipped']}. 0 pads nothing (one call per distinct length); "
        "'never split' pads the whole batch to its longest text.",
        "",
        head,
        "|---" * (len(VALUES) + 1) + "|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[v]:.1f}" for v in VALUES) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
