"""Concurrent lookups share one hit-decision call (one verifier pass), off the event loop.

A fake encoder and fake decisions keep this fast: what is checked is the wiring of
``CacheService`` and ``MicroBatcher``, not a model.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semcache.cache import CacheConfig, CacheService, Partition
from semcache.cache.decision import BatchHitDecision, ScoringDecision, ThresholdDecision
from semcache.embed import MicroBatcher
from semcache.store import SqlFaissStore
from semcache.store.base import Candidate

P = Partition("t", "ns", "m", "")
DIM = 16


class FakeEncoder:
    """Texts that share their first word get the same unit vector; records its threads."""

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def encode(self, texts: list[str]) -> np.ndarray:
        self.threads.add(threading.get_ident())
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row, zlib.crc32(text.split()[0].encode()) % DIM] = 1.0
        return out


class CountingDecision:
    """Accepts the best candidate whose query ends like the lookup's; counts its calls. Takes
    20 ms a call, as a verifier pass does: lookups that arrive meanwhile wait for the next."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.threads: set[int] = set()

    def choose(
        self, query: str, candidates: Sequence[Candidate], threshold: float
    ) -> Candidate | None:
        raise AssertionError("a batch decision is asked through choose_many")

    def choose_many(
        self, requests: Sequence[tuple[str, Sequence[Candidate], float]]
    ) -> list[Candidate | None]:
        self.threads.add(threading.get_ident())
        self.batches.append(len(requests))
        time.sleep(0.02)
        out = []
        for query, candidates, threshold in requests:
            good = [
                c
                for c in candidates
                if c.similarity >= threshold and c.entry.query.split()[-1] == query.split()[-1]
            ]
            out.append(max(good, key=lambda c: c.similarity, default=None))
        return out


def _chat(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def _service(tmp_path: Path, decision: Any) -> tuple[CacheService, FakeEncoder]:
    encoder = FakeEncoder()
    store = SqlFaissStore(f"sqlite:///{tmp_path / 'db'}", tmp_path / "faiss", DIM)
    batcher = MicroBatcher(encoder.encode, max_size=64, max_wait_s=0.002)
    return CacheService(CacheConfig(threshold=0.5), store, batcher, decision=decision), encoder


def test_concurrent_lookups_share_decision_calls_off_the_loop(tmp_path: Path) -> None:
    decision = CountingDecision()
    assert isinstance(decision, BatchHitDecision)
    service, encoder = _service(tmp_path, decision)

    async def run() -> list[str]:
        loop_thread = threading.get_ident()
        for word in ("alpha", "beta"):
            await service.store(P, _chat(f"{word} question one"), word)
        results = await asyncio.gather(
            *(
                service.lookup(P, _chat(f"{'alpha' if i % 2 else 'beta'} query {i} one"))
                for i in range(24)
            ),
            service.lookup(P, _chat("alpha other two")),
        )
        assert loop_thread not in decision.threads | encoder.threads
        await service.batcher.close()
        await service.stop_batching()
        return [r.status for r in results]

    statuses = asyncio.run(run())
    assert statuses == ["HIT-SEMANTIC"] * 24 + ["MISS"]
    assert sum(decision.batches) == 25
    assert len(decision.batches) < 25 / 2, decision.batches
    assert service.semantic.decision_batcher is not None
    assert service.semantic.decision_batcher.stats.largest == max(decision.batches) > 1
    service.storage.close()


def test_a_single_lookup_does_not_wait_for_company(tmp_path: Path) -> None:
    decision = CountingDecision()
    service, _ = _service(tmp_path, decision)

    async def run() -> str:
        await service.store(P, _chat("alpha question one"), "a")
        result = await service.lookup(P, _chat("alpha other one"))
        await service.batcher.close()
        await service.stop_batching()
        return str(result.status)

    assert asyncio.run(run()) == "HIT-SEMANTIC"
    assert decision.batches == [1]
    service.storage.close()


def test_a_failing_batch_fails_each_lookup_in_it(tmp_path: Path) -> None:
    class Broken(CountingDecision):
        def choose_many(self, requests: Sequence[Any]) -> list[Candidate | None]:
            raise RuntimeError("verifier down")

    service, _ = _service(tmp_path, Broken())

    async def run() -> list[BaseException | Any]:
        await service.store(P, _chat("alpha question one"), "a")
        results = await asyncio.gather(
            *(service.lookup(P, _chat(f"alpha q{i} one")) for i in range(3)),
            return_exceptions=True,
        )
        # The batcher keeps serving after a failed batch.
        await service.batcher.close()
        await service.stop_batching()
        return results

    results = asyncio.run(run())
    assert [str(r) for r in results] == ["verifier down"] * 3
    service.storage.close()


def test_a_decision_without_choose_many_runs_in_a_worker_thread(tmp_path: Path) -> None:
    threads: set[int] = set()

    class Recording(ThresholdDecision):
        def choose(
            self, query: str, candidates: Sequence[Candidate], threshold: float
        ) -> Candidate | None:
            threads.add(threading.get_ident())
            return super().choose(query, candidates, threshold)

    service, _ = _service(tmp_path, Recording())
    assert service.semantic.decision_batcher is None

    async def run() -> str:
        await service.store(P, _chat("alpha question one"), "a")
        result = await service.lookup(P, _chat("alpha other one"))
        assert threading.get_ident() not in threads
        await service.batcher.close()
        return str(result.status)

    assert asyncio.run(run()) == "HIT-SEMANTIC"
    assert threads
    service.storage.close()


class ScoringCounter(CountingDecision):
    """Scores a candidate 0.9 when its query ends like the lookup's, else 0.2; accepts 0.5 and
    up, as the verifier does. Asking it to score one lookup alone is an error."""

    def scored_many(
        self, requests: Sequence[tuple[str, Sequence[Candidate], float]]
    ) -> list[list[tuple[float, Candidate]]]:
        self.batches.append(len(requests))
        return [
            [
                (0.9 if c.entry.query.split()[-1] == query.split()[-1] else 0.2, c)
                for c in candidates
                if c.similarity >= threshold
            ]
            for query, candidates, threshold in requests
        ]

    def accept(self, scored: Sequence[tuple[float, Candidate]]) -> Candidate | None:
        best = max(scored, key=lambda sc: sc[0], default=None)
        return best[1] if best is not None and best[0] >= 0.5 else None

    def scored(self, query: str, candidates: Sequence[Candidate], threshold: float) -> Any:
        raise AssertionError("a rejection's score comes from the pass that rejected it")


def test_a_rejected_lookup_keeps_the_score_of_its_one_pass(tmp_path: Path) -> None:
    decision = ScoringCounter()
    assert isinstance(decision, ScoringDecision)
    service, _ = _service(tmp_path, decision)

    async def run() -> list[Any]:
        await service.store(P, _chat("alpha question one"), "a")
        results = [
            await service.lookup(P, _chat("alpha other one")),
            await service.lookup(P, _chat("alpha other two")),
        ]
        await service.batcher.close()
        await service.stop_batching()
        return results

    hit, rejected = asyncio.run(run())
    assert hit.status == "HIT-SEMANTIC" and hit.verifier_score is None
    assert rejected.status == "MISS" and rejected.miss_reason == "verifier-rejected"
    assert rejected.verifier_score == pytest.approx(0.2)
    assert decision.batches == [1, 1]
    service.storage.close()


@pytest.mark.parametrize("size", [1, 3])
def test_the_batcher_returns_each_callers_result(size: int) -> None:
    calls: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        calls.append(items)
        return [2 * i for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(double, max_size=size, max_wait_s=0.0)

    async def run() -> list[int]:
        out = await asyncio.gather(*(batcher.submit(i) for i in range(7)))
        await batcher.close()
        return list(out)

    assert asyncio.run(run()) == [2 * i for i in range(7)]
    assert all(len(c) <= size for c in calls)
    assert sorted(i for c in calls for i in c) == list(range(7))


def test_the_batcher_waits_for_company_only_after_a_shared_batch() -> None:
    calls: list[list[int]] = []

    def same(items: list[int]) -> list[int]:
        calls.append(items)
        return items

    # A wait longer than a lone caller is given below: it must not pay it.
    batcher: MicroBatcher[int, int] = MicroBatcher(same, max_size=64, max_wait_s=3.0)

    async def run() -> None:
        assert await asyncio.wait_for(batcher.submit(1), 1.5) == 1
        assert await asyncio.wait_for(batcher.submit(2), 1.5) == 2
        # Two callers at once share a batch; the next batch then waits for company, so a
        # caller arriving a little after the first still joins it.
        assert await asyncio.gather(batcher.submit(3), batcher.submit(4)) == [3, 4]
        first = asyncio.ensure_future(batcher.submit(5))
        await asyncio.sleep(0.2)
        late = asyncio.ensure_future(batcher.submit(6))
        assert await asyncio.wait_for(asyncio.gather(first, late), 30) == [5, 6]
        await batcher.close()

    asyncio.run(run())
    assert calls == [[1], [2], [3, 4], [5, 6]]
