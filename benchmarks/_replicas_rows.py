"""The rows benchmarks/replicas_http.py loads into both backends, how it loads them, and the
in-process search it times on each."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _common import summary_ms

from semcache.cache.keys import request_keys
from semcache.embed import Encoder
from semcache.store import NewEntry, Partition
from semcache.store.factory import open_store
from semcache.store.migrations.frozen import HNSW_INDEX
from semcache.store.postgres import PostgresStore

MODEL = "gpt-4o-mini"
PARTITION = Partition("default", "", MODEL, "")  # the open tenant, as lookups send it
NO_EVICTION = 10**9
TTL_S = 7 * 86400.0
# What `serve --data-dir DIR` opens when no database_url is set.
SQLITE_URL = "sqlite:///{}/semcache.db"


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
