"""One partition of 10k, 100k and 1M entries on SQLite + FAISS: import, search, recall, RSS,
restart, and lookups over HTTP.

Run from the repository root (the 1M size needs about 4 GB of RAM and 3 GB of disk, and on 2
cores about a quarter of an hour with the IVF index, most of an hour with HNSW):

    nice -n 10 .venv/bin/python benchmarks/scale.py [--sizes 10000,100000,1000000]
        [--kind ivf|hnsw] [--queries 500] [--lookups 300] [--workdir /tmp/semcache-scale] [--keep]

(``--kind`` is the approximate index, the ``approximate_index`` setting, ivf by default;
``--lookups 0 --keep``, then ``--http-only``, runs the HTTP part later on the kept data dirs;
``--sweep`` measures recall@1 and search time of their indexes at several nprobe (IVF) or
efSearch (HNSW) values, into benchmarks/results/<name>_sweep.{json,md}.)

For each size N, in a fresh data dir: N synthetic 384-d unit vectors (clustered: N/50 topics,
each entry at cosine ~0.75 to its topic, as a cache holds paraphrases of popular questions)
are written into one partition through the store's batch write ``put_many``, 5,000 at a
time: the store's import rate without the encoder (benchmarks/import_rate.py measures
``semcache import`` with it). Then: search p50/p99 through ``SqlFaissStore.search`` (index,
then the SQL fetch of the candidates) and of the index alone, for near-duplicate queries (a
stored vector plus noise, cosine ~0.92), twice over the same queries (the first pass reads
the candidates' SQL rows for the first time); recall@1 of the index against exact search (numpy
brute force over the same vectors); the process's RSS; restart (close, then open: load the
index, reconcile with SQL); then a real ``semcache serve`` on the data dir: its start time,
RSS and the p50/p99 of POST /v1/cache/lookup into that partition (one client; a miss path:
embed, search the N vectors, fetch candidates). Writes benchmarks/results/<name>.{json,md}
after every size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from _common import RESULTS, summary_ms, write_results
from servers import ServerProcess

from semcache.store import NewEntry, Partition, SqlFaissStore
from semcache.store.approx_files import load_approx
from semcache.store.factory import open_store
from semcache.store.faiss_index import IndexOptions

DIM = 384
CHUNK = 5_000
TOPIC_SIZE = 50
MODEL = "scale-bench"
PARTITION = Partition("default", "", MODEL, "")


def _unit(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)).astype(np.float32)


class Vectors:
    """Entry n's vector, regenerated chunk by chunk (1M of them would be 1.5 GB to keep)."""

    def __init__(self, n: int) -> None:
        self.n = n
        rng = np.random.default_rng(1)
        self.topics = _unit(rng.standard_normal((max(1, n // TOPIC_SIZE), DIM)))

    def chunk(self, start: int) -> np.ndarray:
        count = min(CHUNK, self.n - start)
        rng = np.random.default_rng([2, start])
        topic = self.topics[rng.integers(0, len(self.topics), count)]
        return _unit(topic * 0.75 + _unit(rng.standard_normal((count, DIM))) * 0.66)

    def rows(self, which: np.ndarray) -> np.ndarray:
        out = np.empty((len(which), DIM), dtype=np.float32)
        for start in range(0, self.n, CHUNK):
            inside = (which >= start) & (which < start + CHUNK)
            if inside.any():
                out[inside] = self.chunk(start)[which[inside] - start]
        return out


def rss_mb(pid: int | None = None) -> float:
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def entries(vectors: Vectors, start: int) -> list[NewEntry]:
    return [
        NewEntry(
            entry_id=f"s{start + i}",
            partition=PARTITION,
            exact_key=f"scale-{start + i}",
            context_hash="",
            query=f"synthetic question {start + i}",
            response={"answer": f"synthetic answer {start + i}"},
            embedding=v,
            created_at=time.time(),
            expires_at=time.time() + 365 * 86400,
        )
        for i, v in enumerate(vectors.chunk(start))
    ]


def open_data(data: Path, kind: str) -> SqlFaissStore:
    store = open_store(
        f"sqlite:///{data / 'semcache.db'}", data_dir=data, dim=DIM, approximate_kind=kind
    )
    assert isinstance(store, SqlFaissStore)
    return store


def near_duplicates(vectors: Vectors, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored vectors plus noise (cosine ~0.92), and each one's exact nearest entry."""
    n = vectors.n
    rng = np.random.default_rng(3)
    targets = rng.integers(0, n, count)
    queries = _unit(vectors.rows(targets) * 0.92 + _unit(rng.standard_normal((count, DIM))) * 0.39)
    # Exact search by brute force over the same vectors, a chunk at a time.
    best = np.full(count, -2.0, dtype=np.float32)
    exact = np.zeros(count, dtype=np.int64)
    for start in range(0, n, CHUNK):
        scores = queries @ vectors.chunk(start).T
        top = scores.argmax(axis=1)
        better = scores[np.arange(count), top] > best
        best[better] = scores[np.arange(count), top][better]
        exact[better] = start + top[better]
    return queries, exact


def sweep(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Recall@1 and latency of the kept data dir's index at several nprobe (IVF) or efSearch
    (HNSW) values."""
    faiss_dir = Path(args.workdir) / f"n{n}" / "faiss"
    snapshot = next(faiss_dir.glob("*.ann"))
    part = load_approx(snapshot, snapshot.with_suffix(".alog"), DIM, IndexOptions(kind=args.kind))
    part.wait_idle(600)
    queries, exact = near_duplicates(Vectors(n), args.queries)
    row_ids = sorted(int(i) for i in part.live_ids())  # row ids in the generated order
    sweep = []
    knob = "nprobe" if args.kind == "ivf" else "ef_search"
    values = (4, 8, 16, 32, 64, 128) if args.kind == "ivf" else (50, 100, 200, 400, 800, 1600)
    for value in values:
        part.options = IndexOptions(kind=args.kind, **{knob: value})
        samples, agree = [], 0
        for q, want in zip(queries, exact, strict=True):
            t = time.perf_counter()
            hits = part.search(q.reshape(1, DIM), 16)
            samples.append(time.perf_counter() - t)
            agree += bool(hits) and hits[0][0] == row_ids[want]
        sweep.append({knob: value, "recall_at_1": agree / len(queries), **summary_ms(samples)})
        print(f"  {knob} {value}: {sweep[-1]}", flush=True)
    part.stop()
    return {
        "entries": n,
        "index": args.kind,
        "load_average_1m": round(os.getloadavg()[0], 1),
        "sweep": sweep,
    }


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    data = Path(args.workdir) / f"n{n}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    vectors = Vectors(n)
    store = open_data(data, args.kind)
    started = last_save = time.perf_counter()
    saves: list[tuple[float, int]] = []  # (seconds, bytes) of each periodic save

    def save() -> None:
        # What the server's save loop does every index_save_interval_s (30 s).
        t = time.perf_counter()
        written = store.vectors.save()
        saves.append((time.perf_counter() - t, written))

    for start in range(0, n, CHUNK):
        store.put_many(entries(vectors, start), max_entries=n + 1)
        if time.perf_counter() - last_save >= 30:
            save()
            last_save = time.perf_counter()
        if start // CHUNK % 20 == 0:
            print(f"  {start + CHUNK} written, {time.perf_counter() - started:.0f} s", flush=True)
    written_s = time.perf_counter() - started
    while not store.vectors.wait_idle(timeout=30):
        save()
    indexed_s = time.perf_counter() - started
    save()
    kind = store.vectors.kind(PARTITION.key)
    graph = getattr(store.vectors.partition(PARTITION.key), "state", lambda: [None])()[0]
    lists = getattr(graph, "nlist", None)
    print(f"  written in {written_s:.0f} s, indexed in {indexed_s:.0f} s ({kind})", flush=True)

    queries, exact = near_duplicates(vectors, args.queries)
    # Two passes over the same queries: the first reads each candidate's SQL row for the first
    # time (SQLite's page cache, and at 1M the rows of a 2 GB file), the second finds them read.
    passes: list[tuple[list[float], list[float]]] = []
    for _ in range(2):
        index_s, store_s, agree = [], [], 0
        for q, want in zip(queries, exact, strict=True):
            t0 = time.perf_counter()
            store.vectors.search(PARTITION.key, q, 16)
            t1 = time.perf_counter()
            found = store.search(PARTITION, q, context_hash="", now=time.time(), k=16)
            t2 = time.perf_counter()
            index_s.append(t1 - t0)
            store_s.append(t2 - t1)
            # Entry ids are "s<position in the generated order>".
            agree += bool(found) and int(found[0].entry.entry_id[1:]) == want
        passes.append((index_s, store_s))
    rss = rss_mb()

    t0 = time.perf_counter()
    store.close()
    t1 = time.perf_counter()
    store = open_data(data, args.kind)
    t2 = time.perf_counter()
    reconcile = store.reconcile_report
    assert store.vectors.size(PARTITION.key) == n, reconcile
    store.close()
    files_mb = sum(f.stat().st_size for f in (data / "faiss").iterdir()) / 2**20
    result: dict[str, Any] = {
        "entries": n,
        # Other work shares the 2 cores; every figure here is under this load.
        "load_average_1m": round(os.getloadavg()[0], 1),
        "index": kind,
        "ivf_lists": lists,
        "import_entries_per_s": round(n / written_s),
        "indexed_entries_per_s": round(n / indexed_s),
        "search_store_first_pass": summary_ms(passes[0][1]),
        "search_store": summary_ms(passes[1][1]),
        "search_index": summary_ms(passes[1][0]),
        "recall_at_1": round(agree / args.queries, 4),
        "rss_mb": rss,
        "close_s": round(t1 - t0, 2),
        "open_s": round(t2 - t1, 2),
        "reconcile": reconcile,
        "index_files_mb": round(files_mb, 1),
        "periodic_saves": {
            "count": len(saves),
            "total_mb": round(sum(b for _, b in saves) / 2**20, 1),
            "largest_mb": round(max((b for _, b in saves), default=0) / 2**20, 1),
            "median_mb": round(float(np.median([b for _, b in saves] or [0])) / 2**20, 2),
            "longest_s": round(max((t for t, _ in saves), default=0.0), 2),
        },
    }
    if args.lookups:
        result["http"] = http_lookups(data, args.lookups, args.kind)
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    return result


def http_lookups(data: Path, lookups: int, kind: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    env = {"SEMCACHE_API_KEYS": "", "SEMCACHE_HIT_DECISION": "cosine"}
    with (
        ServerProcess(
            ["serve", "--data-dir", str(data)], env={**env, "SEMCACHE_APPROXIMATE_INDEX": kind}
        ) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        start_s = time.perf_counter() - t0
        texts = [f"How do I change setting number {i} of my account?" for i in range(lookups)]
        for text in texts[:20]:  # warm-up: lazy initialisation
            client.post("/v1/cache/lookup", json={"query": text, "model": MODEL})
        samples, statuses = [], {}
        for text in texts:
            t = time.perf_counter()
            r = client.post("/v1/cache/lookup", json={"query": text, "model": MODEL})
            samples.append(time.perf_counter() - t)
            statuses[r.json()["status"]] = statuses.get(r.json()["status"], 0) + 1
        assert server.proc is not None
        rss = rss_mb(server.proc.pid)
    return {
        "load_average_1m": round(os.getloadavg()[0], 1),
        "start_s": round(start_s, 1),
        "lookup": summary_ms(samples),
        "statuses": statuses,
        "server_rss_mb": rss,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| entries | index | import (put_many) /s | fully indexed /s | search p50 / p99 ms "
        "(store, first pass) | (store, second pass) | index p50 / p99 ms | recall@1 | RSS MB "
        "| close + open s | server start s | server RSS MB | HTTP lookup p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        http = r.get("http", {})
        lookup = http.get("lookup", {})
        first = r.get("search_store_first_pass", {})
        lines.append(
            f"| {r['entries']:,} | {r['index']} | {r['import_entries_per_s']:,} | "
            f"{r['indexed_entries_per_s']:,} | {first.get('median_ms', '-')} / "
            f"{first.get('p99_ms', '-')} | {r['search_store']['median_ms']} / "
            f"{r['search_store']['p99_ms']} | {r['search_index']['median_ms']} / "
            f"{r['search_index']['p99_ms']} | {r['recall_at_1']} | {r['rss_mb']:,} | "
            f"{r['close_s']} + {r['open_s']} | {http.get('start_s', '-')} | "
            f"{http.get('server_rss_mb', '-')} | {lookup.get('median_ms', '-')} / "
            f"{lookup.get('p99_ms', '-')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--workdir", default="/tmp/semcache-scale")
    parser.add_argument("--keep", action="store_true", help="keep each size's data dir")
    parser.add_argument("--name", default="scale", help="results file name")
    parser.add_argument(
        "--http-only",
        action="store_true",
        help="only the HTTP part, on the data dirs a --keep run left, into its results file",
    )
    parser.add_argument("--kind", choices=("ivf", "hnsw"), default="ivf")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="recall and latency at several nprobe/efSearch values on kept data dirs",
    )
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    if args.sweep:
        sweeps = [sweep(int(n), args) for n in args.sizes.split(",")]
        knob = "nprobe" if args.kind == "ivf" else "ef_search"
        rows = [
            f"| entries | index | {knob} | recall@1 | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
        ]
        rows += [
            f"| {s['entries']:,} | {s['index']} | {r[knob]} | {r['recall_at_1']} | "
            f"{r['median_ms']} | {r['p99_ms']} |"
            for s in sweeps
            for r in s["sweep"]
        ]
        write_results(f"{args.name}_sweep", {"results": sweeps}, "\n".join(rows))
        return
    if args.http_only:
        results = json.loads((RESULTS / f"{args.name}.json").read_text())["results"]
    for n in (int(s) for s in args.sizes.split(",")):
        print(f"N = {n:,}", flush=True)
        if args.http_only:
            for r in results:
                if r["entries"] == n:
                    r["http"] = http_lookups(Path(args.workdir) / f"n{n}", args.lookups, args.kind)
        else:
            results.append(measure(n, args))
        meta = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "load_average_1m": round(os.getloadavg()[0], 1),
            "dim": DIM,
            "chunk": CHUNK,
        }
        write_results(args.name, {"meta": meta, "results": results}, table(results))


if __name__ == "__main__":
    main()
