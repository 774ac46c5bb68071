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

``in_flight`` is how many batches run at once (a server's: one, since its model call already
takes every core; an import's: one per core, each batch on a one-thread model session, which on
2 cores embedded 1.26 to 1.30x the texts per second of one two-thread call at a time).
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
    in order), run in worker threads, ``in_flight`` batches at a time (module doc)."""

    def __init__(
        self,
        run: Callable[[list[T]], Results[R]],
        *,
        max_size: int,
        max_wait_s: float,
        in_flight: int = 1,
    ) -> None:
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self._run_batch = run
        self._slots = in_flight
        self._running: set[asyncio.Task[None]] = set()
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
            if self._slots == 1:
                await self._call(live)
                continue
            while len(self._running) >= self._slots:
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(self._call(live))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _call(self, live: list[tuple[T, asyncio.Future[R]]]) -> None:
        """Run one batch; its results, or its error, go to its callers."""
        try:
            results = await asyncio.to_thread(self._run_batch, [item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"a batch of {len(live)} gave {len(results)} results")
        except Exception as exc:  # handed to every waiting caller, who raise it
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.texts += len(live)
        self.stats.largest = max(self.stats.largest, len(live))
        for (_, fut), result in zip(live, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    async def close(self) -> None:
        """Stop the worker task and the batches it started."""
        tasks = [*self._running, *([self._worker] if self._worker is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._worker = None
