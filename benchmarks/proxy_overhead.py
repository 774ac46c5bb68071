"""Latency semcache adds in front of an upstream: a miss and a hit against a direct call.

Run from the repository root:

    .venv/bin/python benchmarks/proxy_overhead.py [--requests 200] [--baseline DIR --rounds 2]

Starts `semcache simulate-upstream` (no simulated latency, so the figures are semcache's own
cost) and `semcache serve` in front of it, then sends sequential non-streamed chat completions:
directly to the simulator, through semcache as misses (a fresh namespace per request, so each
one embeds, searches, calls the upstream and stores), through semcache as exact hits, and
with rewordings of stored questions that take the semantic path (embed, search, verify), split by
the verifier's verdict. ``--baseline DIR`` (another checkout, such as ``git worktree add
/tmp/base HEAD~1``) runs the same measurement on its code, alternated with this one's
``--rounds`` times (order flipped each round), and adds the added medians of both and their
ratio: the way to compare code on a shared machine whose speed moves by 2x between hours.
Writes benchmarks/results/proxy_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from _common import (
    add_baseline_options,
    checkouts_in_turn,
    queries,
    revision,
    summary_ms,
    write_results,
)
from servers import ServerProcess


def timed(
    client: httpx.Client,
    url: str,
    bodies: list[dict[str, Any]],
    statuses: list[str] | None = None,
    **kw: Any,
) -> list[float]:
    samples = []
    for body in bodies:
        headers = kw.get("headers") or {}
        if kw.get("fresh_namespace"):
            headers = {**headers, "X-Semcache-Namespace": uuid.uuid4().hex}
        started = time.perf_counter()
        response = client.post(url, json=body, headers=headers)
        samples.append(time.perf_counter() - started)
        response.raise_for_status()
        if statuses is not None:
            statuses.append(response.headers.get("x-semcache-status", ""))
    return samples


def chat(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def measure(repo: Path, texts: list[str]) -> dict[str, list[float]]:
    """Seconds per request on each path, the servers running the code in ``repo``."""
    sim = ServerProcess(["simulate-upstream"], health_path="/sim/stats", repo=repo)
    with sim, tempfile.TemporaryDirectory() as data:
        env = {"SEMCACHE_API_KEYS": "", "SEMCACHE_OPENAI_BASE_URL": sim.url + "/v1"}
        with (
            ServerProcess(["serve", "--data-dir", data], env=env, repo=repo) as cache,
            httpx.Client(timeout=30) as client,
        ):
            direct_url = sim.url + "/v1/chat/completions"
            proxy_url = cache.url + "/v1/chat/completions"
            warm = [chat(f"warm-up {i}") for i in range(20)]
            timed(client, direct_url, warm)
            timed(client, proxy_url, warm, fresh_namespace=True)
            results = {
                "direct upstream": timed(client, direct_url, [chat(t) for t in texts]),
                "semcache MISS": timed(
                    client, proxy_url, [chat(t) for t in texts], fresh_namespace=True
                ),
            }
            fixed = {"X-Semcache-Namespace": "bench"}
            timed(client, proxy_url, [chat(t) for t in texts], headers=fixed)
            results["semcache HIT-EXACT"] = timed(
                client, proxy_url, [chat(t) for t in texts], headers=fixed
            )
            # Rewordings of stored questions, each asked once: every one takes the semantic path
            # (embed, search, verify); the verifier accepts some (HIT-SEMANTIC) and rejects the
            # rest, which then go upstream (MISS). Reported apart.
            statuses: list[str] = []
            reworded = [
                t.replace("How do I", "How can I").replace("What is", "What's") for t in texts
            ]
            samples = timed(client, proxy_url, [chat(t) for t in reworded], statuses, headers=fixed)
            for status in ("HIT-SEMANTIC", "MISS"):
                picked = [x for x, st in zip(samples, statuses, strict=True) if st == status]
                if picked:
                    results[f"semcache {status} (reworded, verified)"] = picked
    return results


def added(summary: dict[str, dict[str, float]], key: str) -> dict[str, float]:
    """Each path's ``key`` (median_ms, p99_ms) less the direct upstream's."""
    base = summary["direct upstream"][key]
    return {name: round(s[key] - base, 3) for name, s in summary.items()}


def baseline_table(
    runs: dict[str, list[dict[str, dict[str, float]]]], baseline: Path
) -> tuple[list[str], dict[str, Any]]:
    """Markdown and JSON comparing the added median of each path, per round and as the ratio
    of the rounds' medians."""
    ours, theirs = runs["this checkout"], runs["baseline"]
    paths = [p for p in ours[0] if p != "direct upstream" and all(p in r for r in ours + theirs)]
    baseline_revision = revision(baseline)
    lines = [
        "",
        f"Against `--baseline {baseline}` ({baseline_revision}), runs alternated (order "
        f"flipped each round), {len(ours)} rounds: added median ms per round, and the ratio of "
        "the rounds' medians.",
        "",
        "| path | this checkout | baseline | this / baseline |",
        "|---|---|---|---|",
    ]
    ratios: dict[str, float] = {}
    for path in paths:
        mine = [added(r, "median_ms")[path] for r in ours]
        base = [added(r, "median_ms")[path] for r in theirs]
        ratios[path] = round(statistics.median(mine) / statistics.median(base), 3)
        lines.append(
            f"| {path} | {', '.join(f'{x:g}' for x in mine)} | "
            f"{', '.join(f'{x:g}' for x in base)} | {ratios[path]:.2f}x |"
        )
    return lines, {
        "baseline": str(baseline),
        "baseline_revision": baseline_revision,
        "rounds": runs,
        "ratio_of_added_median": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    add_baseline_options(parser, rounds=2)
    args = parser.parse_args()
    n = args.requests
    texts = queries(n)
    # Other work on the machine moves these figures; the report keeps the load averages.
    load_start = os.getloadavg()
    runs: dict[str, list[dict[str, dict[str, float]]]] = defaultdict(list)
    for _, name, repo in checkouts_in_turn(args.baseline, args.rounds):
        summary = {path: summary_ms(x) for path, x in measure(repo, texts).items()}
        runs[name].append(summary)
        print(name, {p: s["median_ms"] for p, s in summary.items()}, flush=True)
    # The table: this checkout's median run (by the MISS path's added median).
    ours = sorted(runs["this checkout"], key=lambda s: added(s, "median_ms")["semcache MISS"])
    summary = ours[len(ours) // 2]
    load = {
        "start": [round(x, 2) for x in load_start],
        "end": [round(x, 2) for x in os.getloadavg()],
    }
    command = f"python benchmarks/proxy_overhead.py --requests {n}"
    if args.baseline is not None:
        command += f" --baseline {args.baseline} --rounds {args.rounds}"
    lines = [
        f"# Proxy overhead ({n} sequential non-streamed requests each, simulator with no latency)",
        "",
        f"`{command}`",
        "",
        f"Load averages (1, 5, 15 min) on {os.cpu_count()} CPUs: {load['start']} at the start, "
        f"{load['end']} at the end.",
        "",
        "| path | median ms | p99 ms | added median ms | added p99 ms |",
        "|---|---|---|---|---|",
    ]
    add_median, add_p99 = added(summary, "median_ms"), added(summary, "p99_ms")
    for name, s in summary.items():
        extra = ("-", "-") if name == "direct upstream" else (add_median[name], add_p99[name])
        lines.append(f"| {name} | {s['median_ms']} | {s['p99_ms']} | {extra[0]} | {extra[1]} |")
    lines += [
        "",
        "A hit never reaches the upstream, so against a real provider (hundreds of ms to seconds)",
        "a hit saves the whole call; 'added' for hits is relative to a zero-latency upstream.",
    ]
    result: dict[str, Any] = {
        "command": command,
        "cpus": os.cpu_count(),
        "loadavg": load,
        "results": summary,
    }
    if args.baseline is not None:
        table, compared = baseline_table(runs, args.baseline)
        lines += table
        result["compared"] = compared
    write_results("proxy_overhead", result, "\n".join(lines))


if __name__ == "__main__":
    main()
