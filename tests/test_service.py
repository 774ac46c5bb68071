"""The cache service in-process: micro-batching, sweeping, the exact key's contract."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from semcache.cache import CacheConfig, CacheService, Partition, request_keys
from semcache.embed import Encoder, MicroBatcher
from semcache.store import SqlFaissStore

P = Partition("t", "ns", "gpt-4o", "")


def make_service(tmp_path: Path, encoder: Encoder, clock: Any = None) -> CacheService:
    store = SqlFaissStore(f"sqlite:///{tmp_path / 'db'}", tmp_path / "faiss", encoder.dim)
    batcher = MicroBatcher(encoder.encode, max_size=64, max_wait_s=0.005)
    kwargs = {"clock": clock} if clock else {}
    return CacheService(CacheConfig(), store, batcher, **kwargs)


def test_concurrent_lookups_share_encoder_calls(tmp_path: Path, encoder: Encoder) -> None:
    service = make_service(tmp_path, encoder)

    async def run() -> list[str]:
        await service.store(P, {"messages": [{"role": "user", "content": "seed query"}]}, "x")
        before = service.batcher.stats.batches
        results = await asyncio.gather(
            *(
                service.lookup(P, {"messages": [{"role": "user", "content": f"question {i}"}]})
                for i in range(24)
            )
        )
        used = service.batcher.stats.batches - before
        assert used < 24 / 2, f"24 concurrent lookups took {used} encoder calls"
        await service.batcher.close()
        return [r.status for r in results]

    assert set(asyncio.run(run())) <= {"MISS", "HIT-SEMANTIC"}


def test_sweep_deletes_expired_rows_and_counts_them(tmp_path: Path, encoder: Encoder) -> None:
    now = [1000.0]
    service = make_service(tmp_path, encoder, clock=lambda: now[0])
    request = {"messages": [{"role": "user", "content": "What is semcache?"}]}

    async def run() -> None:
        await service.store(P, request, "a cache", ttl_s=10)
        assert (await service.lookup(P, request)).status == "HIT-EXACT"
        now[0] += 11
        assert (await service.lookup(P, request)).status == "MISS"
        assert await service.sweep() == 1
        await service.batcher.close()

    asyncio.run(run())
    assert service.storage.count_entries() == 0
    assert 'reason="expired"} 1.0' in service.metrics.render().decode()


def test_exact_key_ignores_transport_fields_and_tracks_answer_fields() -> None:
    base = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    key = request_keys(P, base).exact_key
    same = {**base, "stream": True, "user": "u1", "metadata": {"a": 1}, "stream_options": {}}
    assert request_keys(P, same).exact_key == key
    for change in ({"temperature": 0.5}, {"seed": 1}, {"max_tokens": 5}, {"tools": []}):
        assert request_keys(P, {**base, **change}).exact_key != key
    assert request_keys(Partition("other", "ns", "gpt-4o", ""), base).exact_key != key


def test_context_hash_covers_all_but_the_last_user_message() -> None:
    turns = [
        {"role": "user", "content": "Tell me about Paris."},
        {"role": "assistant", "content": "ok"},
    ]
    a = request_keys(P, {"messages": [*turns, {"role": "user", "content": "How old is it?"}]})
    b = request_keys(P, {"messages": [*turns, {"role": "user", "content": "How big is it?"}]})
    c = request_keys(P, {"messages": [{"role": "user", "content": "How old is it?"}]})
    d = request_keys(
        P, {"system": "Be brief.", "messages": [*turns, {"role": "user", "content": "How old?"}]}
    )
    assert a.context_hash == b.context_hash != c.context_hash
    assert d.context_hash != a.context_hash
    assert a.semantic_text == "How old is it?"
    parts = [
        {"type": "text", "text": "one"},
        {"type": "image_url"},
        {"type": "text", "text": "two"},
    ]
    assert request_keys(P, {"messages": [{"role": "user", "content": parts}]}).semantic_text == (
        "one\ntwo"
    )
