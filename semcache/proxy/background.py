"""Work that outlives the request that started it (stores after a miss, alert webhooks)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["BackgroundTasks"]

log = logging.getLogger(__name__)


class BackgroundTasks:
    """Keeps references to fire-and-forget tasks (asyncio holds only weak ones), logs what
    they raise, and lets shutdown wait for them."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Nothing awaits the task; without this the error would surface only as
            # "Task exception was never retrieved".
            log.error("%s failed", self.what, exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for the tasks still running (at shutdown), including ones they start."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)
