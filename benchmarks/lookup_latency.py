"""Single-lookup latency of an exact and of a semantic hit, over HTTP against a real server.

Run from the repository root:

    .venv/bin/python benchmarks/lookup_latency.py [--entries 1000] [--lookups 300]

It starts `semcache serve` on a free port with a fresh data dir, stores ``--entries`` entries,
then sends ``--lookups`` sequential lookups of each kind (one at a time, so each latency is a
single lookup: HTTP, exact key, embedding, FAISS search, SQL fetch). Writes
benchmarks/results/lookup_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import httpx
from _common import queries, summary_ms, write_results
from servers import ServerProcess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=300)
    args = parser.parse_args()
    stored = queries(args.entries)
    with (
        tempfile.TemporaryDirectory() as data,
        ServerProcess(["serve", "--data-dir", data], env={"SEMCACHE_API_KEYS": ""}) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        for q in stored:
            body = {"query": q, "model": "m", "response": {"answer": f"about {q}"}}
            client.post("/v1/cache/store", json=body).raise_for_status()
        results = {}
        # Semantic probes: the stored question reworded ("How do I" -> "How can I", lower-case).
        probes = {
            "exact hit": [stored[i % len(stored)] for i in range(args.lookups)],
            "semantic path (embed, search, verify)": [
                stored[i % len(stored)].replace("How do I", "how can i").rstrip("?")
                if stored[i % len(stored)].startswith("How do I")
                else stored[i % len(stored)].lower().rstrip("?") + " please"
                for i in range(args.lookups)
            ],
        }
        for want, texts in probes.items():
            for text in texts[:20]:  # warm-up: the first calls pay for lazy initialisation
                client.post("/v1/cache/lookup", json={"query": text, "model": "m"})
            samples, statuses = [], {}
            for text in texts:
                started = time.perf_counter()
                r = client.post("/v1/cache/lookup", json={"query": text, "model": "m"})
                samples.append(time.perf_counter() - started)
                status = r.json()["status"]
                statuses[status] = statuses.get(status, 0) + 1
            results[want] = {**summary_ms(samples), "statuses": statuses}
    data = {
        "command": "python benchmarks/lookup_latency.py "
        f"--entries {args.entries} --lookups {args.lookups}",
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "entries": args.entries,
        "results": results,
    }
    lines = [
        f"# Single-lookup latency ({args.entries} entries, {args.lookups} sequential lookups)",
        "",
        f"`{data['command']}`",
        "",
        "| lookup | median ms | p90 ms | p99 ms | statuses |",
        "|---|---|---|---|---|",
    ]
    for kind, r in results.items():
        lines.append(
            f"| {kind} | {r['median_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['statuses']} |"
        )
    write_results("lookup_latency", data, "\n".join(lines))


if __name__ == "__main__":
    main()
