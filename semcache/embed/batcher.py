"""Micro-batching: concurrent lookups share one model call (docs/ARCHITECTURE.md, "Hot path").

One worker task takes the first waiting item, gathers whatever else arrives within
``max_wait_s`` (or until ``max_size``), and runs the batch in a worker thread. Items that
arrive while a batch is running form the next batch, so under load batches grow by themselves
(with ``max_wait_s = 0`` that is the only batching: nobody waits for company). The wait is
skipped while the previous batch held one item: a caller who was alone last time most likely
is alone now (sequential traffic), and waiting would only add ``max_wait_s`` to its latency;
the first batch of a burst runs at once and the items arriving meanwhile turn waiting back on.
The encoder's batcher takes texts and gives vectors; the verifier's takes lookups and gives
their decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["BatchStats", "MicroBatcher"]

T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Results(Protocol[R_co]):
    """What a batch call returns: one result per item, in order (a list, a numpy array)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[R_co]: ...


@dataclass
class BatchStats:
    """How the batcher has worked so far (``texts``: items, whatever they are)."""

    batches: int = 0
    texts: int = 0
    largest: int = 0


class MicroBatcher(Generic[T, R]):
    """Collects items from concurrent callers into batched ``run`` calls (one result per item,
    in order), run in a worker thread one batch at a time."""

    def __init__(
        self, run: Callable[[list[T]], Results[R]], *, max_size: int, max_wait_s: float
    ) -> None:
        self._run_batch = run
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.stats = BatchStats()
        self._last_size = 0

    async def submit(self, item: T) -> R:
        """The result of one item, computed in a shared batch."""
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: list[T]) -> list[R]:
        """Results of several items, each joining the shared batches."""
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(self._queue), name="semcache-batcher")
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            future: asyncio.Future[R] = loop.create_future()
            self._queue.put_nowait((item, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    # The encoder's names: a text in, its vector out.
    async def embed(self, text: T) -> R:
        """The vector of one text, computed in a shared batch."""
        return await self.submit(text)

    async def embed_many(self, texts: list[T]) -> list[R]:
        """Vectors of several texts, each joining the shared batches."""
        return await self.submit_many(texts)

    async def _run(self, queue: asyncio.Queue[tuple[T, asyncio.Future[R]]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            wait = self._max_wait_s if self._last_size > 1 else 0.0
            deadline = loop.time() + wait
            while len(batch) < self._max_size:
                try:
                    batch.append(queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            self._last_size = len(batch)
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            try:
                results = await asyncio.to_thread(self._run_batch, [item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"a batch of {len(live)} gave {len(results)} results")
            except Exception as exc:  # handed to every waiting caller, who raise it
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.texts += len(live)
            self.stats.largest = max(self.stats.largest, len(live))
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    async def close(self) -> None:
        """Stop the worker task."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
