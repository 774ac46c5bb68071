"""Micro-batching: concurrent lookups share one encoder call (docs/ARCHITECTURE.md, "Hot path").

One worker task takes the first waiting text, gathers whatever else arrives within
``max_wait_s`` (or until ``max_size``), and encodes the batch in a worker thread. Texts that
arrive while a batch is encoding form the next batch, so under load batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["BatchStats", "MicroBatcher"]


@dataclass
class BatchStats:
    """How the batcher has worked so far."""

    batches: int = 0
    texts: int = 0
    largest: int = 0


class MicroBatcher:
    """Collects texts from concurrent callers into batched ``encode`` calls."""

    def __init__(
        self, encode: Callable[[list[str]], np.ndarray], *, max_size: int, max_wait_s: float
    ) -> None:
        self._encode = encode
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[np.ndarray]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    async def embed(self, text: str) -> np.ndarray:
        """The vector of one text, computed in a shared batch."""
        return (await self.embed_many([text]))[0]

    async def embed_many(self, texts: list[str]) -> list[np.ndarray]:
        """Vectors of several texts, each joining the shared batches."""
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(self._queue), name="semcache-batcher")
        loop = asyncio.get_running_loop()
        futures = []
        for text in texts:
            future: asyncio.Future[np.ndarray] = loop.create_future()
            self._queue.put_nowait((text, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    async def _run(self, queue: asyncio.Queue[tuple[str, asyncio.Future[np.ndarray]]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self._max_wait_s
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
            live = [(text, fut) for text, fut in batch if not fut.cancelled()]
            if not live:
                continue
            try:
                vectors = await asyncio.to_thread(self._encode, [text for text, _ in live])
            except Exception as exc:  # handed to every waiting caller, who raise it
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.texts += len(live)
            self.stats.largest = max(self.stats.largest, len(live))
            for (_, fut), vector in zip(live, vectors, strict=True):
                if not fut.done():
                    fut.set_result(vector)

    async def close(self) -> None:
        """Stop the worker task."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
