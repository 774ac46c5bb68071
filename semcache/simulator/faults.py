"""Which fault, if any, a request gets: its own ``X-Sim-Fault`` header, else the schedule.

The schedule is a queue of fault names (``None`` for a normal answer) consumed one per valid
request, so a test can script "fail, fail, succeed" against a client that retries.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from .config import FAULT_NAMES

__all__ = ["FaultQueue", "check_fault_name"]


def check_fault_name(name: str | None) -> str | None:
    """``name`` if it is a known fault or ``None``; ``ValueError`` otherwise."""
    if name is not None and name not in FAULT_NAMES:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULT_NAMES))}")
    return name


class FaultQueue:
    """A thread-safe queue of scheduled faults."""

    def __init__(self, schedule: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._queue: deque[str | None] = deque(check_fault_name(f) for f in schedule)

    def replace(self, schedule: Iterable[str | None]) -> None:
        """Drop what is queued and queue ``schedule`` instead (validated first)."""
        checked = [check_fault_name(f) for f in schedule]
        with self._lock:
            self._queue = deque(checked)

    def pending(self) -> list[str | None]:
        with self._lock:
            return list(self._queue)

    def take(self, requested: str | None) -> str | None:
        """The fault for the next request, given its own header value (already validated).

        A request that names its own fault does not consume the schedule: the schedule is
        for the requests a test does not control directly, such as a proxy's retries.
        """
        with self._lock:
            fault = requested
            if fault is None and self._queue:
                fault = self._queue.popleft()
            return fault
