"""Latency semcache adds in front of an upstream: a miss and a hit against a direct call.

Run from the repository root:

    .venv/bin/python benchmarks/proxy_overhead.py [--requests 200]

Starts `semcache simulate-upstream` (no simulated latency, so the figures are semcache's own
cost) and `semcache serve` in front of it, then sends sequential non-streamed chat completions:
directly to the simulator, through semcache as misses (a fresh namespace per request, so each
one embeds, searches, calls the upstream and stores), through semcache as exact hits, and
with rewordings of stored questions that take the semantic path (embed, search, verify), split by
the verifier's verdict. Writes benchmarks/results/proxy_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from typing import Any

import httpx
from _common import queries, summary_ms, write_results
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    n = args.requests
    texts = queries(n)
    # Other work on the machine moves these figures; the report keeps the load averages.
    load_start = os.getloadavg()
    sim = ServerProcess(["simulate-upstream"], health_path="/sim/stats")
    with sim, tempfile.TemporaryDirectory() as data:
        env = {"SEMCACHE_API_KEYS": "", "SEMCACHE_OPENAI_BASE_URL": sim.url + "/v1"}
        with (
            ServerProcess(["serve", "--data-dir", data], env=env) as cache,
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
    summary = {name: summary_ms(samples) for name, samples in results.items()}
    base = summary["direct upstream"]
    load = {
        "start": [round(x, 2) for x in load_start],
        "end": [round(x, 2) for x in os.getloadavg()],
    }
    lines = [
        f"# Proxy overhead ({n} sequential non-streamed requests each, simulator with no latency)",
        "",
        f"`python benchmarks/proxy_overhead.py --requests {n}`",
        "",
        f"Load averages (1, 5, 15 min) on {os.cpu_count()} CPUs: {load['start']} at the start, "
        f"{load['end']} at the end.",
        "",
        "| path | median ms | p99 ms | added median ms | added p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        added = (
            ("-", "-")
            if name == "direct upstream"
            else (
                round(s["median_ms"] - base["median_ms"], 3),
                round(s["p99_ms"] - base["p99_ms"], 3),
            )
        )
        lines.append(f"| {name} | {s['median_ms']} | {s['p99_ms']} | {added[0]} | {added[1]} |")
    lines += [
        "",
        "A hit never reaches the upstream, so against a real provider (hundreds of ms to seconds)",
        "a hit saves the whole call; 'added' for hits is relative to a zero-latency upstream.",
    ]
    write_results(
        "proxy_overhead",
        {
            "command": f"python benchmarks/proxy_overhead.py --requests {n}",
            "cpus": os.cpu_count(),
            "loadavg": load,
            "results": summary,
        },
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
