"""Worker threads for store calls: reads and writes in separate pools.

SQLite lets one writer in at a time, and a writer can wait seconds for a lock another process
holds. If writes and reads shared one pool, a burst of blocked stores would take every thread
and an exact lookup, which needs no lock at all in WAL mode, would queue behind them. Here a
blocked write holds a write thread only, and once more writes are waiting than the pool can
work off in a write timeout, new ones are refused at once (503) instead of queueing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import StorageError

__all__ = ["StoreWorkers"]

T = TypeVar("T")


class StoreWorkers:
    """Runs blocking store calls off the event loop, reads and writes apart."""

    def __init__(
        self, *, read_threads: int = 4, write_threads: int = 2, max_waiting_writes: int = 512
    ) -> None:
        # The bound only sheds a pile-up: a burst of a few hundred concurrent stores (a bulk
        # load, the hit-rate harness at --concurrency 64) is normal work and must queue, each
        # write still waiting at most store_write_timeout_s for SQLite's lock.
        # Threads start on first use, not here.
        self._reads = ThreadPoolExecutor(read_threads, thread_name_prefix="semcache-read")
        self._writes = ThreadPoolExecutor(write_threads, thread_name_prefix="semcache-write")
        self._max_waiting_writes = max_waiting_writes
        self._writing = 0

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reads, functools.partial(fn, *args, **kwargs))

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._writing >= self._max_waiting_writes:
            raise StorageError(
                f"the store is busy: {self._writing} writes are already waiting; retry shortly",
                code="store_busy",
                headers={"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        self._writing += 1
        try:
            return await loop.run_in_executor(self._writes, functools.partial(fn, *args, **kwargs))
        finally:
            self._writing -= 1

    def close(self) -> None:
        """Stop the threads once the calls already handed to them have run."""
        self._reads.shutdown(wait=True)
        self._writes.shutdown(wait=True)
