"""Single-flight: concurrent identical misses share one upstream call.

docs/ARCHITECTURE.md, "Hot path": a flight always ends, whatever raised.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Flight", "FlightAbandoned", "SingleFlight"]

T = TypeVar("T")

# The keys of this many of the latest landed flights are remembered for ``landed_since``; an
# older one answers as if it had landed (a recheck too many costs one indexed read).
_LANDED_KEYS = 4096


class FlightAbandoned(Exception):
    """The leader went away without an answer or an upstream error (a bug, a cancelled
    request): followers should start over rather than fail."""


class Flight(Generic[T]):
    """One in-progress call that followers wait on."""

    def __init__(self) -> None:
        self._future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.followers = 0

    @property
    def done(self) -> bool:
        """Resolved or failed: followers no longer wait."""
        return self._future.done()

    @property
    def resolved(self) -> bool:
        """The answer is in (followers get it without waiting)."""
        return self._future.done() and self._future.exception() is None

    def resolve(self, value: T) -> None:
        if not self._future.done():
            self._future.set_result(value)

    def fail(self, error: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(error)
            # Mark retrieved so a flight nobody followed does not log "never retrieved".
            self._future.exception()

    async def wait(self) -> T:
        return await asyncio.shield(self._future)


class SingleFlight(Generic[T]):
    """Keyed registry of flights: the first caller leads, later ones follow."""

    def __init__(self, on_land: Callable[[str], None] | None = None) -> None:
        self._flights: dict[str, Flight[T]] = {}
        # Told the key of every flight that lands (cross-replica claims are released then).
        self._on_land = on_land
        # How many answered flights have landed, and at which count each key last did: a
        # miss's leader stores before its flight lands, so a caller whose exact probe came
        # before its own key's landing may have missed an entry that is now there
        # (ProxyService rechecks only then: not after every other request's landing).
        self.landings = 0
        self._landed: OrderedDict[str, int] = OrderedDict()
        self._forgotten = 0  # the latest landing count dropped from _landed

    def join(self, key: str) -> tuple[Flight[T], bool]:
        """The flight for ``key`` and whether the caller leads it."""
        flight = self._flights.get(key)
        if flight is not None:
            flight.followers += 1
            return flight, False
        flight = self._flights[key] = Flight()
        return flight, True

    def peek(self, key: str) -> Flight[T] | None:
        """The flight for ``key`` if one is open, without joining it."""
        return self._flights.get(key)

    def land(self, key: str, flight: Flight[T]) -> None:
        """Forget the flight; later callers start a new one (or hit the cache)."""
        if self._flights.get(key) is flight:
            del self._flights[key]
            if flight.resolved:
                self.landings += 1
                self._landed[key] = self.landings
                self._landed.move_to_end(key)
                if len(self._landed) > _LANDED_KEYS:
                    self._forgotten = self._landed.popitem(last=False)[1]
            if self._on_land is not None:
                self._on_land(key)

    def landed_since(self, key: str, mark: int) -> bool:
        """Whether an answered flight for ``key`` landed after ``landings`` was ``mark``; True
        also when that is no longer known."""
        landed = self._landed.get(key, 0)
        return landed > mark or self._forgotten > mark

    def __len__(self) -> int:
        return len(self._flights)
