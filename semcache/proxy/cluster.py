"""Single-flight across replicas: one upstream call for identical misses on any replica.

Inside one process ``SingleFlight`` already makes followers wait on a leader. On a shared store
(PostgreSQL) the process's leader first claims the exact key cluster-wide (store/flights.py):
the replica that wins calls upstream; a leader that loses waits for the winner's stored entry
and hands it to its own followers, or claims again when the winner's claim goes (released
once its answer is stored or its call failed, or expired because the replica died). The winner
renews its claim while its call runs and releases it when its local flight lands, which is
after the store.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from typing import Any, Protocol

from ..cache.service import CacheService
from ..errors import StorageError
from ..store.base import Entry

__all__ = ["Claims", "ClusterFlights"]

log = logging.getLogger(__name__)


class Claims(Protocol):
    """What the shared store offers (``PostgresStore.flight_claims``)."""

    ttl_s: float

    def claim(self, key: str, owner: str) -> bool: ...

    def renew(self, key: str, owner: str) -> bool: ...

    def held(self, key: str) -> bool: ...

    def release(self, key: str, owner: str) -> None: ...


class ClusterFlights:
    """Claims exact keys for this process's flight leaders; waits on other replicas'."""

    def __init__(
        self,
        claims: Claims,
        cache: CacheService,
        *,
        poll_s: float = 0.05,
        max_wait_s: float = 300.0,
    ) -> None:
        self.claims = claims
        self.cache = cache
        self.poll_s = poll_s
        # A wait this long (the winner's call still renewing its claim) ends in a call of
        # our own.
        self.max_wait_s = max_wait_s
        self._prefix = secrets.token_hex(8)
        self._numbers = itertools.count()
        self._held: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._releases: set[asyncio.Task[Any]] = set()

    async def lead_or_wait(self, tenant: str, exact_key: str) -> Entry | None:
        """None when this process now holds the claim (or the claims cannot be reached) and
        makes the upstream call; otherwise the entry another replica stored for the key."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while True:
            owner = f"{self._prefix}:{next(self._numbers)}"
            try:
                won = await asyncio.to_thread(self.claims.claim, exact_key, owner)
            except StorageError as exc:
                log.warning("single-flight across replicas unavailable, calling alone: %s", exc)
                return None
            if won:
                beat = asyncio.create_task(self._renew(exact_key, owner))
                self._held[exact_key] = (owner, beat)
                return None
            while True:
                await asyncio.sleep(self.poll_s)
                try:
                    entry = await self.cache.workers.read(
                        self.cache.storage.get_exact, tenant, exact_key, self.cache.clock()
                    )
                    if entry is not None:
                        return entry
                    if loop.time() > deadline:
                        return None
                    if not await asyncio.to_thread(self.claims.held, exact_key):
                        # The winner stores before it releases, so its entry may have landed
                        # between the read above and this check: look once more, or two
                        # replicas would call upstream for one answer.
                        entry = await self.cache.workers.read(
                            self.cache.storage.get_exact, tenant, exact_key, self.cache.clock()
                        )
                        if entry is not None:
                            return entry
                        break  # the winner failed, stored nothing, or died: claim again
                except StorageError as exc:
                    log.warning("waiting on another replica's upstream call failed: %s", exc)
                    return None

    def landed(self, exact_key: str) -> None:
        """The local flight for ``exact_key`` ended (after its store): release our claim."""
        held = self._held.pop(exact_key, None)
        if held is None:
            return
        owner, beat = held
        beat.cancel()
        task = asyncio.get_running_loop().create_task(self._release(exact_key, owner))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _renew(self, key: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self.claims.ttl_s / 3)
            try:
                if not await asyncio.to_thread(self.claims.renew, key, owner):
                    return
            except StorageError as exc:
                log.warning("cannot renew an upstream call's claim: %s", exc)

    async def _release(self, key: str, owner: str) -> None:
        try:
            await asyncio.to_thread(self.claims.release, key, owner)
        except StorageError as exc:
            # It expires by itself within ttl_s.
            log.warning("cannot release an upstream call's claim: %s", exc)
