"""Lookup latency the hit verifier adds (issue 5 closing note), in process, on the CPU.

Run from the repository root:

    nice -n 10 .venv/bin/python benchmarks/verifier_latency.py [--entries 1000] [--lookups 300]

Two measurements, with torch on ``--threads`` threads (1, the shipped ``embedding_threads``),
sequential lookups (one at a time):

* ``choose``: the time ``VerifiedDecision.choose`` takes in its worker thread, with 1 candidate
  above the cosine floor and with 4 of them: the verifier's own cost;
* ``lookup``: ``CacheService.lookup`` end to end (embedding, FAISS, SQL, decision) over
  ``--entries`` stored support questions, for reworded probes, once with ``ThresholdDecision``
  and once with ``VerifiedDecision`` as shipped (``verifier_max_candidates`` = 1), both at the
  verifier's cosine floor so they see the same candidates. The added latency is the difference.

Writes benchmarks/results/verifier_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import queries, summary_ms, write_results

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from semcache.cache import CacheConfig, CacheService, Partition  # noqa: E402
from semcache.cache.decision import HitDecision, ThresholdDecision  # noqa: E402
from semcache.cache.verifier import VerifiedDecision  # noqa: E402
from semcache.embed import Encoder, MicroBatcher  # noqa: E402
from semcache.store import SqlFaissStore  # noqa: E402
from semcache.store.base import Candidate, Entry  # noqa: E402

P = Partition("bench", "", "m", "")


def _probe(text: str) -> str:
    if text.startswith("How do I"):
        return text.replace("How do I", "how can i").rstrip("?")
    return text.lower().rstrip("?") + " please"


def _candidate(query: str, similarity: float, row: int) -> Candidate:
    entry = Entry(f"e{row}", row, P, f"k{row}", "c", query, "r", {}, 0.0, 1e12, 0.0, 0)
    return Candidate(entry, similarity)


def _choose_times(v: VerifiedDecision, stored: list[str], n: int, k: int) -> dict[str, float]:
    samples = []
    for i in range(n + 20):
        cands = [_candidate(stored[(i + j) % len(stored)], 0.95 - 0.01 * j, j) for j in range(k)]
        started = time.perf_counter()
        v.choose(_probe(stored[i % len(stored)]), cands, 0.0)
        if i >= 20:  # the first calls pay for lazy initialisation
            samples.append(time.perf_counter() - started)
    return summary_ms(samples)


async def _lookups(
    encoder: Encoder, decision: HitDecision, stored: list[str], n: int, threshold: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqlFaissStore(f"sqlite:///{tmp}/db", Path(tmp) / "faiss", encoder.dim)
        batcher = MicroBatcher(encoder.encode, max_size=64, max_wait_s=0.002)
        service = CacheService(CacheConfig(threshold=threshold), store, batcher, decision=decision)

        def chat(text: str) -> dict[str, Any]:
            return {"model": "m", "messages": [{"role": "user", "content": text}]}

        for q in stored:
            await service.store(P, chat(q), {"answer": q})
        probes = [_probe(stored[i % len(stored)]) for i in range(n)]
        for text in probes[:20]:
            await service.lookup(P, chat(text))
        samples, statuses = [], {}
        for text in probes:
            started = time.perf_counter()
            result = await service.lookup(P, chat(text))
            samples.append(time.perf_counter() - started)
            statuses[result.status] = statuses.get(result.status, 0) + 1
        await batcher.close()
        store.close()
    return {**summary_ms(samples), "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    encoder = Encoder(threads=args.threads)
    verifier = VerifiedDecision(max_candidates=4)
    shipped = VerifiedDecision(max_candidates=1)
    stored = queries(args.entries)
    floor = verifier.cosine_floor
    choose = {
        "1 candidate": _choose_times(verifier, stored, args.lookups, 1),
        "4 candidates": _choose_times(verifier, stored, args.lookups, 4),
    }
    lookup = {
        "ThresholdDecision": asyncio.run(
            _lookups(encoder, ThresholdDecision(), stored, args.lookups, floor)
        ),
        "VerifiedDecision": asyncio.run(_lookups(encoder, shipped, stored, args.lookups, floor)),
    }
    added = {
        key: round(lookup["VerifiedDecision"][key] - lookup["ThresholdDecision"][key], 2)
        for key in ("median_ms", "p90_ms", "p99_ms")
    }
    data = {
        "command": "nice -n 10 .venv/bin/python benchmarks/verifier_latency.py "
        f"--entries {args.entries} --lookups {args.lookups} --threads {args.threads}",
        "machine": f"{platform.machine()}, {platform.python_version()}, "
        f"torch {args.threads} thread(s)",
        "cosine_floor": floor,
        "choose": choose,
        "lookup": lookup,
        "added_by_verifier": added,
    }
    lines = [
        "# Lookup latency added by the hit verifier",
        "",
        f"`{data['command']}` ({data['machine']})",
        "",
        "| what | median ms | p90 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for name, r in choose.items():
        lines.append(f"| `choose`, {name} | {r['median_ms']} | {r['p90_ms']} | {r['p99_ms']} |")
    for name, r in lookup.items():
        lines.append(
            f"| lookup, {name} ({r['statuses']}) | {r['median_ms']} | {r['p90_ms']} "
            f"| {r['p99_ms']} |"
        )
    lines.append(
        f"| **added by the verifier** | {added['median_ms']} | {added['p90_ms']} "
        f"| {added['p99_ms']} |"
    )
    write_results("verifier_latency", data, "\n".join(lines))


if __name__ == "__main__":
    main()
