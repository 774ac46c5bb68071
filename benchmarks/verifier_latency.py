"""Encoder and verifier latency on each inference runtime, torch against onnx in one run.

Run from the repository root:

    nice -n 10 .venv/bin/python benchmarks/verifier_latency.py [--entries 1000] [--lookups 300]

Everything in process, on the CPU, each runtime on its shipped intra-op threads
(``embedding_threads`` = 0: 1 on either runtime; ``--threads N`` sets both), both runtimes
loaded side by side and measured in alternation (sample by sample, or block by block for the
concurrent runs), so that load from other processes on the machine falls on both alike;
compare the two columns, not absolute figures across runs. The onnx models on the other
thread count (1, or 2) are timed alongside too. The onnx verifiers run the shipped
``verifier_precision`` (int8); ``--verifier-precision fp32`` runs the fp32 one (results in
``verifier_latency-fp32.*``).

* ``encode``: ``Encoder.encode`` of one text and of 16 texts, per text;
* ``choose``: ``VerifiedDecision.choose`` with 1 and 4 candidates above the cosine floor;
* ``lookup``: ``CacheService.lookup`` end to end (embedding, FAISS, SQL, decision) over
  ``--entries`` stored support questions, for reworded probes, sequential, with
  ``ThresholdDecision`` and with ``VerifiedDecision`` as shipped (``verifier_max_candidates``
  = 1), both at the verifier's cosine floor so they see the same candidates. The verifier's
  added latency is the difference;
* ``concurrent``: the same verified lookups from 16 concurrent callers: lookups per second
  and the mean number of lookups per verifier call (the micro-batcher);
* ``profile``: cProfile of ``--profile-lookups`` onnx lookups run step by step in one thread
  (the worker-thread calls the async lookup makes), and where the async lookup's time goes.

Writes benchmarks/results/verifier_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, queries, shipped_verifier_precision, summary_ms, write_results

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from semcache.cache import CacheConfig, CacheService, Partition  # noqa: E402
from semcache.cache.decision import HitDecision, ThresholdDecision  # noqa: E402
from semcache.cache.keys import request_keys  # noqa: E402
from semcache.cache.verifier import VerifiedDecision  # noqa: E402
from semcache.embed import Encoder, MicroBatcher  # noqa: E402
from semcache.embed.runtime import default_models_dir, default_threads  # noqa: E402
from semcache.store import SqlFaissStore  # noqa: E402
from semcache.store.base import Candidate, Entry  # noqa: E402

P = Partition("bench", "", "m", "")
RUNTIMES = ("torch", "onnx")
# The committed figure the target is relative to (torch, benchmarks/results before).
BASELINE_ADDED_P50_MS = 11.9
# Where the results file's hand-written part starts.
NOTES = "## Reading"


def _probe(text: str) -> str:
    if text.startswith("How do I"):
        return text.replace("How do I", "how can i").rstrip("?")
    return text.lower().rstrip("?") + " please"


def _candidate(query: str, similarity: float, row: int) -> Candidate:
    entry = Entry(f"e{row}", row, P, f"k{row}", "c", query, "r", {}, 0.0, 1e12, 0.0, 0)
    return Candidate(entry, similarity)


def _chat(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def _encode_times(
    encoders: dict[str, Encoder], stored: list[str], n: int
) -> dict[str, dict[str, Any]]:
    one: dict[str, list[float]] = {r: [] for r in encoders}
    many: dict[str, list[float]] = {r: [] for r in encoders}
    for i in range(n + 10):
        for runtime, encoder in encoders.items():
            text = [_probe(stored[i % len(stored)])]
            batch = [stored[(i * 16 + j) % len(stored)] for j in range(16)]
            started = time.perf_counter()
            encoder.encode(text)
            middle = time.perf_counter()
            if i % 4 == 0:
                encoder.encode(batch)
            ended = time.perf_counter()
            if i >= 10:  # the first calls pay for lazy initialisation
                one[runtime].append(middle - started)
                if i % 4 == 0:
                    many[runtime].append((ended - middle) / 16)
    return {
        r: {"batch 1": summary_ms(one[r]), "batch 16, per text": summary_ms(many[r])}
        for r in encoders
    }


def _choose_times(
    verifiers: dict[str, VerifiedDecision], stored: list[str], n: int, k: int
) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {r: [] for r in verifiers}
    for i in range(n + 10):
        cands = [_candidate(stored[(i + j) % len(stored)], 0.95 - 0.01 * j, j) for j in range(k)]
        for runtime, verifier in verifiers.items():
            started = time.perf_counter()
            verifier.choose(_probe(stored[i % len(stored)]), cands, 0.0)
            if i >= 10:
                samples[runtime].append(time.perf_counter() - started)
    return {r: summary_ms(s) for r, s in samples.items()}


async def _services(
    tmp: str,
    encoders: dict[str, Encoder],
    decisions: dict[str, HitDecision],
    stored: list[str],
    floor: float,
) -> dict[str, CacheService]:
    """One store per runtime (its own vectors), one service per (runtime, decision), all at the
    verifier's cosine floor."""
    services = {}
    for runtime, encoder in encoders.items():
        store = SqlFaissStore(
            f"sqlite:///{tmp}/{runtime}.db", Path(tmp) / f"faiss-{runtime}", encoder.dim
        )
        batcher = MicroBatcher(encoder.encode, max_size=64, max_wait_s=0.002)
        writer = CacheService(CacheConfig(), store, batcher)
        for q, vector in zip(stored, encoder.encode(stored), strict=True):
            await writer.store(P, _chat(q), {"answer": q}, vector=vector)
        await batcher.close()
        for name, decision in decisions.items():
            if name.startswith(runtime):
                batcher = MicroBatcher(encoder.encode, max_size=64, max_wait_s=0.002)
                services[name] = CacheService(
                    CacheConfig(threshold=floor), store, batcher, decision=decision
                )
    return services


async def _sequential(
    services: dict[str, CacheService], stored: list[str], n: int
) -> dict[str, dict[str, Any]]:
    probes = [_probe(stored[i % len(stored)]) for i in range(n)]
    samples: dict[str, list[float]] = {name: [] for name in services}
    statuses: dict[str, dict[str, int]] = {name: {} for name in services}
    for i, text in enumerate([*probes[:10], *probes]):
        for name, service in services.items():
            started = time.perf_counter()
            result = await service.lookup(P, _chat(text))
            if i >= 10:
                samples[name].append(time.perf_counter() - started)
                status = str(result.status)
                statuses[name][status] = statuses[name].get(status, 0) + 1
    return {name: {**summary_ms(samples[name]), "statuses": statuses[name]} for name in services}


async def _concurrent(
    services: dict[str, CacheService], stored: list[str], n: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """16 callers at once, ``n`` lookups per block; blocks alternate between the services."""
    probes = [_probe(stored[(i * 7) % len(stored)]) for i in range(n)]
    seconds: dict[str, float] = {name: 0.0 for name in services}
    latencies: dict[str, list[float]] = {name: [] for name in services}
    for _ in range(rounds):
        for name, service in services.items():
            queue = list(probes)

            async def caller(
                service: CacheService = service, queue: list[str] = queue, name: str = name
            ) -> None:
                while queue:
                    text = queue.pop()
                    started = time.perf_counter()
                    await service.lookup(P, _chat(text))
                    latencies[name].append(time.perf_counter() - started)

            started = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(16)))
            seconds[name] += time.perf_counter() - started
    out = {}
    for name, service in services.items():
        stats = (
            service.semantic.decision_batcher.stats if service.semantic.decision_batcher else None
        )
        out[name] = {
            "lookups_per_s": round(rounds * n / seconds[name], 1),
            **summary_ms(latencies[name]),
            "lookups_per_verifier_call": round(stats.texts / stats.batches, 2)
            if stats and stats.batches
            else None,
        }
    return out


def _profile(service: CacheService, encoder: Encoder, stored: list[str], n: int) -> str:
    """cProfile of ``n`` lookups, step by step in this thread; the top functions."""
    decision = service.decision
    probes = [_probe(stored[(i * 3) % len(stored)]) for i in range(n)]

    def lookups() -> None:
        for text in probes:
            keys = request_keys(P, _chat(text))
            service.storage.get_exact(P.tenant, keys.exact_key, time.time())
            vector = encoder.encode([keys.semantic_text])[0]
            found = service.storage.search(
                P, vector, context_hash=keys.context_hash, now=time.time(), k=16
            )
            decision.choose(keys.semantic_text, found, service.config.threshold)

    lookups()  # warm
    profiler = cProfile.Profile()
    profiler.enable()
    lookups()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    text = out.getvalue()
    # The table, without pstats' header (date, file names).
    return text[text.index("   ncalls") :].rstrip() if "   ncalls" in text else text


async def _stages(service: CacheService, stored: list[str], n: int) -> dict[str, float]:
    """Median ms of each awaited stage of the async lookup (worker-thread hops included)."""
    parts: dict[str, list[float]] = {"exact": [], "embed": [], "search": [], "decide": []}
    store = service.storage
    for i in range(n + 10):
        text = _probe(stored[(i * 11) % len(stored)])
        keys = request_keys(P, _chat(text))
        t0 = time.perf_counter()
        await service.workers.read(store.get_exact, P.tenant, keys.exact_key, time.time())
        t1 = time.perf_counter()
        vector = await service.batcher.embed(keys.semantic_text)
        t2 = time.perf_counter()
        found = await service.workers.read(
            store.search, P, vector, context_hash=keys.context_hash, now=time.time(), k=16
        )
        t3 = time.perf_counter()
        assert service.semantic.decision_batcher is not None
        await service.semantic.decision_batcher.submit(
            (keys.semantic_text, found, service.config.threshold)
        )
        t4 = time.perf_counter()
        if i >= 10:
            for name, a, b in (("exact", t0, t1), ("embed", t1, t2), ("search", t2, t3)):
                parts[name].append(b - a)
            parts["decide"].append(t4 - t3)
    return {name: round(statistics.median(v) * 1000, 3) for name, v in parts.items()}


async def _lookups(
    encoders: dict[str, Encoder],
    verifiers: dict[str, VerifiedDecision],
    stored: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    decisions: dict[str, HitDecision] = {}
    for runtime in RUNTIMES:
        decisions[f"{runtime} threshold"] = ThresholdDecision()
        decisions[f"{runtime} verified"] = verifiers[runtime]
    with tempfile.TemporaryDirectory() as tmp:
        floor = verifiers["onnx"].cosine_floor
        services = await _services(tmp, encoders, decisions, stored, floor)
        sequential = await _sequential(services, stored, args.lookups)
        verified = {r: services[f"{r} verified"] for r in RUNTIMES}
        concurrent = await _concurrent(verified, stored, args.concurrent_lookups, 2)
        stages = await _stages(services["onnx verified"], stored, args.profile_lookups)
        profile = _profile(
            services["onnx verified"], encoders["onnx"], stored, args.profile_lookups
        )
        for service in services.values():
            await service.batcher.close()
            await service.stop_batching()
        for runtime in RUNTIMES:
            services[f"{runtime} threshold"].storage.close()
    return {
        "sequential": sequential,
        "concurrent": concurrent,
        "stages_ms": stages,
        "profile": profile,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--concurrent-lookups", type=int, default=160)
    parser.add_argument("--profile-lookups", type=int, default=100)
    parser.add_argument(
        "--threads", type=int, default=0, help="both runtimes' threads; 0: each one's default"
    )
    parser.add_argument(
        "--models-dir", default=str(default_models_dir()), help="ONNX export cache folder"
    )
    shipped_precision = shipped_verifier_precision()
    parser.add_argument(
        "--verifier-precision",
        choices=("fp32", "int8"),
        default=shipped_precision,
        help="the onnx verifier's (verifier_precision; default the shipped int8); fp32 writes "
        "verifier_latency-fp32.*",
    )
    args = parser.parse_args()
    precision = args.verifier_precision
    # onnx first: its load time is what a start with cached exports costs (no torch import);
    # torch's includes importing torch and sentence-transformers.
    threads = {r: args.threads or default_threads(r) for r in RUNTIMES}
    load_s, encoders, four, shipped = {}, {}, {}, {}
    for r in ("onnx", "torch"):
        started = time.perf_counter()
        encoders[r] = Encoder(threads=threads[r], runtime=r, models_dir=args.models_dir)
        four[r] = VerifiedDecision(
            max_candidates=4,
            runtime=r,
            models_dir=args.models_dir,
            threads=threads[r],
            precision=precision,
        )
        load_s[r] = round(time.perf_counter() - started, 2)
        shipped[r] = VerifiedDecision(
            max_candidates=1,
            runtime=r,
            models_dir=args.models_dir,
            threads=threads[r],
            precision=precision,
        )
    # The same onnx models on the other thread count, for the thread-count choice.
    other = 1 if threads["onnx"] != 1 else 2
    x2 = f"onnx, {other} thread(s)"
    more_encoders = {**encoders, x2: Encoder(threads=other, models_dir=args.models_dir)}
    more_four = {
        **four,
        x2: VerifiedDecision(
            max_candidates=4, models_dir=args.models_dir, threads=other, precision=precision
        ),
    }
    stored = queries(args.entries)
    encode = _encode_times(more_encoders, stored, args.lookups)
    choose = {
        "1 candidate": _choose_times(more_four, stored, args.lookups, 1),
        "4 candidates": _choose_times(more_four, stored, args.lookups, 4),
    }
    lookups = asyncio.run(_lookups(encoders, shipped, stored, args))
    sequential = lookups["sequential"]
    added = {
        r: {
            key: round(sequential[f"{r} verified"][key] - sequential[f"{r} threshold"][key], 2)
            for key in ("median_ms", "p90_ms", "p99_ms")
        }
        for r in RUNTIMES
    }
    ratio = round(added["torch"]["median_ms"] / max(added["onnx"]["median_ms"], 1e-9), 2)
    data = {
        # The niceness it really ran at (os.nice(0) reads it), not the docstring's advice.
        "command": (f"nice -n {os.nice(0)} " if os.nice(0) else "")
        + ".venv/bin/python benchmarks/verifier_latency.py "
        f"--entries {args.entries} --lookups {args.lookups} --threads {args.threads}"
        + (f" --verifier-precision {precision}" if precision != shipped_precision else ""),
        "machine": f"{platform.machine()}, {platform.python_version()}, intra-op threads: "
        f"onnx {threads['onnx']}, torch {threads['torch']}",
        "load_s": load_s,
        "encode": encode,
        "choose": choose,
        "lookup": sequential,
        "added_by_verifier": added,
        "added_p50_torch_over_onnx": ratio,
        "concurrent_16": lookups["concurrent"],
        "onnx_lookup_stages_ms": lookups["stages_ms"],
    }
    lines = [
        "# Encoder and verifier latency: torch against onnx",
        "",
        f"`{data['command']}` ({data['machine']}). Both runtimes in one process, measured in "
        "alternation: compare across a row, not with another run's figures.",
        "",
        "| what | torch median ms | torch p99 ms | onnx median ms | onnx p99 ms | torch / onnx |",
        "|---|---|---|---|---|---|",
    ]

    def row(name: str, t: dict[str, Any], o: dict[str, Any]) -> None:
        ratio = t["median_ms"] / max(o["median_ms"], 1e-9)
        lines.append(
            f"| {name} | {t['median_ms']} | {t['p99_ms']} | {o['median_ms']} | {o['p99_ms']} "
            f"| {ratio:.2f}x |"
        )

    for size in ("batch 1", "batch 16, per text"):
        row(f"`encode`, {size}", encode["torch"][size], encode["onnx"][size])
    for name, r in choose.items():
        row(f"`choose`, {name}", r["torch"], r["onnx"])
    for decision in ("threshold", "verified"):
        t, o = sequential[f"torch {decision}"], sequential[f"onnx {decision}"]
        row(f"lookup, {decision} (torch {t['statuses']}, onnx {o['statuses']})", t, o)
    row("**added by the verifier**", added["torch"], added["onnx"])
    c = lookups["concurrent"]
    lines += [
        "",
        f"Loading the encoder and the verifier (exports cached): onnx {load_s['onnx']} s, torch "
        f"{load_s['torch']} s (with importing torch and sentence-transformers).",
        "",
        f"The onnx models on {other} intra-op thread(s), same run (median ms): "
        + ", ".join(
            f"`encode` {what} {encode[x2][what]['median_ms']} "
            f"({threads['onnx']}: {encode['onnx'][what]['median_ms']})"
            for what in ("batch 1", "batch 16, per text")
        )
        + ", "
        + ", ".join(
            f"`choose` {n} {choose[n][x2]['median_ms']} "
            f"({threads['onnx']}: {choose[n]['onnx']['median_ms']})"
            for n in choose
        )
        + ".",
        "",
        f"Verifier added p50: torch {added['torch']['median_ms']} ms, onnx "
        f"{added['onnx']['median_ms']} ms ({ratio}x less; the issue's target is 1/4 of the "
        f"committed torch figure, {BASELINE_ADDED_P50_MS} ms).",
        "",
        "16 concurrent callers, verified lookups:",
        "",
        "| runtime | lookups/s | median ms | p99 ms | lookups per verifier call |",
        "|---|---|---|---|---|",
        *(
            f"| {r} | {c[r]['lookups_per_s']} | {c[r]['median_ms']} | {c[r]['p99_ms']} "
            f"| {c[r]['lookups_per_verifier_call']} |"
            for r in RUNTIMES
        ),
        "",
        "Where one onnx lookup's time goes (median ms of each awaited step, worker-thread hops "
        "and batcher included): "
        + ", ".join(f"{k} {v}" for k, v in lookups["stages_ms"].items())
        + ".",
        "",
        f"cProfile of {args.profile_lookups} onnx lookups run step by step in one thread "
        "(top functions by own time):",
        "",
        "```",
        *[line.rstrip() for line in lookups["profile"].splitlines()],
        "```",
    ]
    # The hand-written reading of the figures below the generated part survives a rerun.
    previous = RESULTS / "verifier_latency.md"
    if previous.is_file() and NOTES in previous.read_text():
        lines += ["", NOTES + previous.read_text().split(NOTES, 1)[1].rstrip("\n")]
    name = "verifier_latency" + ("" if precision == shipped_precision else f"-{precision}")
    write_results(name, data, "\n".join(lines))


if __name__ == "__main__":
    main()
