"""The verifier's precision and pair scheduling over HTTP: servers side by side, runs alternated.

Run from the repository root (about 6 minutes with a baseline):

    git worktree add /tmp/base <commit before the change>
    .venv/bin/python benchmarks/verifier_pairwise.py --shared-data ../shared/data \
        --baseline /tmp/base --rounds 2

Up to three ``semcache serve`` processes at once, each with the 2,000 stored prompts of the
side-by-side workload (``benchmarks/_workload.py``): this checkout with ``verifier_precision =
fp32`` (the default) and with ``int8``, and ``--baseline`` (another checkout, at its defaults)
when given. ``../shared/tools/loadgen.py`` loads each in turn with the reworded prompts at c=1
and c=16 and the new prompts at c=16 (the lookups that run the verifier), the servers'
order flipped each round. Only the ratios within a round compare: these machines are shared.
Writes ``benchmarks/results/verifier_pairwise.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from _common import REPO, write_results
from _workload import LOOKUP_TEMPLATE, build_workload
from servers import ServerProcess
from vs_gptcache import load, loadgen

from semcache.cache.verifier import VerifiedDecision

RUNS = (("reworded", 1), ("reworded", 16), ("new", 16))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", type=Path, required=True)
    parser.add_argument("--baseline", type=Path, default=None, help="another semcache checkout")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    workload = build_workload(args.shared_data / "arena-prompts-5k" / "prompts.jsonl")
    variants: dict[str, tuple[Path, dict[str, str]]] = {
        "fp32": (REPO, {"SEMCACHE_VERIFIER_PRECISION": "fp32"}),
        "int8": (REPO, {"SEMCACHE_VERIFIER_PRECISION": "int8"}),
    }
    if args.baseline is not None:
        variants["baseline"] = (args.baseline.resolve(), {})
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="verifier-pairwise-") as tmp:
        root = Path(tmp)
        files = workload.write(root / "queries")
        servers = {
            name: ServerProcess(["serve", "--data-dir", str(root / name)], env=env, repo=repo)
            for name, (repo, env) in variants.items()
        }
        bodies = workload.store_bodies()
        # The int8 export (torch, then the quantiser) before the servers start: a server's
        # first start would do it inside its health-check timeout.
        VerifiedDecision(precision="int8")
        try:
            for server in servers.values():
                server.start()
                load(server.url, "/v1/cache/store", bodies)
            for r in range(args.rounds):
                order = list(servers) if r % 2 == 0 else list(servers)[::-1]
                for queries, c in RUNS:
                    for name in order:
                        url = servers[name].url + "/v1/cache/lookup"
                        result = loadgen(url, LOOKUP_TEMPLATE, files[queries], c, args.duration)
                        rows.append({"round": r, "queries": queries, "c": c, "server": name,
                                     "rps": result["rps"], "p50_ms": result["p50_ms"],
                                     "loadavg_1m": round(os.getloadavg()[0], 2)})  # fmt: skip
                        print(rows[-1], flush=True)
        finally:
            for server in servers.values():
                server.stop()
    report = {
        "duration_s": args.duration,
        "baseline": str(args.baseline) if args.baseline else None,
        "load": [list(load_before), list(os.getloadavg())],
        "rows": rows,
    }
    write_results("verifier_pairwise", report, markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    servers = list(dict.fromkeys(row["server"] for row in report["rows"]))
    reference = "baseline" if "baseline" in servers else "fp32"
    lines = [
        "# The verifier's precision and pair scheduling, servers side by side",
        "",
        "`.venv/bin/python benchmarks/verifier_pairwise.py --shared-data ../shared/data"
        + (f" --baseline {report['baseline']}`" if report["baseline"] else "`")
        + f" ({report['duration_s']:.0f} s runs, load {report['load'][0][0]:.2f} -> "
        f"{report['load'][1][0]:.2f}); req/s (p50 ms), and each against {reference} in the "
        "same round.",
        "",
        "| round | lookups | c | " + " | ".join(servers) + " |",
        "|---|---|---|" + "---|" * len(servers),
    ]
    cells: dict[tuple[int, str, int], dict[str, dict[str, Any]]] = {}
    for row in report["rows"]:
        cells.setdefault((row["round"], row["queries"], row["c"]), {})[row["server"]] = row
    for (r, queries, c), by in cells.items():
        base = by[reference]["rps"]
        shown = [
            f"{by[s]['rps']} ({by[s]['p50_ms']})"
            + ("" if s == reference else f", {by[s]['rps'] / base:.2f}x")
            for s in servers
        ]
        lines.append(f"| {r} | {queries} | {c} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
