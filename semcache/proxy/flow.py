"""The proxy's request flow (docs/ARCHITECTURE.md): admit, look up, coalesce, miss, answer.

Hits are answered here; a miss is handed to ``Miss`` (miss.py), which calls the upstream,
relays or returns its answer, and stores it. Identical misses in flight at once share one
upstream call through ``SingleFlight``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np

from ..cache.keys import RequestKeys, request_keys
from ..cache.results import LookupResult
from ..cache.service import CacheService
from ..cache.status import CacheStatus, MissReason
from ..errors import SemcacheError, StorageError
from ..telemetry import Tracing
from ..upstream.client import UpstreamClient
from ..wire.base import temperature_bypass
from .background import BackgroundTasks
from .call import ProxyCall, ProxyConfig, ProxyResponse
from .cluster import ClusterFlights
from .controls import RequestControls
from .embeddings import EmbeddingsProxy
from .miss import Miss, MissEnvironment
from .policy import Policy
from .singleflight import Flight, FlightAbandoned, SingleFlight

__all__ = ["ProxyCall", "ProxyConfig", "ProxyResponse", "ProxyService"]

log = logging.getLogger(__name__)

# A follower whose leader keeps abandoning its flight goes upstream alone after this many tries.
_MAX_FLIGHT_JOINS = 3


class ProxyService:
    """Answers chat requests from the cache or the upstream, storing what the upstream says."""

    def __init__(
        self,
        config: ProxyConfig,
        cache: CacheService,
        upstream: UpstreamClient,
        policy: Policy,
        *,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.cache = cache
        self.upstream = upstream
        self.policy = policy
        # On a shared store (PostgreSQL) identical misses coalesce across replicas too.
        make_claims = getattr(cache.storage, "flight_claims", None)
        self.cluster = ClusterFlights(make_claims(), cache) if make_claims else None
        self.flights: SingleFlight[dict[str, Any]] = SingleFlight(
            on_land=self.cluster.landed if self.cluster else None
        )
        self._env = MissEnvironment(
            cache,
            upstream,
            policy,
            self.flights,
            BackgroundTasks("storing a proxied answer"),
            tracing or Tracing.off(),
        )
        self.embeddings = EmbeddingsProxy(self._env)

    async def handle(self, call: ProxyCall) -> ProxyResponse:
        call.wire.validate(call.body)
        if call.controls.ttl_s is not None:
            self.cache.resolve_ttl(call.controls.ttl_s)  # a bad TTL is a 400 before upstream
        admission = await self.policy.admit(call.caller, call.wire, call.body)
        call = replace(call, body=admission.body, admission=admission)
        response = await self._serve(call)
        response.headers.update(admission.headers)
        # A hit (or a follower) carries semcache's own request id, in the header the
        # provider's SDK reads it from; a miss keeps the upstream's.
        name = call.wire.request_id_header
        response.headers.setdefault(name, f"req_semcache_{secrets.token_hex(12)}")
        return response

    async def drain(self) -> None:
        """Wait for stores still running in the background (at shutdown)."""
        await self._env.background.drain()

    async def _serve(self, call: ProxyCall) -> ProxyResponse:
        controls = call.controls
        keys = request_keys(call.partition, call.body)
        reason = call.wire.bypass_reason(call.body, self.config.max_temperature)
        if reason is not None:
            self.cache.metrics.lookups.labels(CacheStatus.BYPASS).inc()
            response = await self._miss(call, CacheStatus.BYPASS, keys, store=False).run()
            response.headers["X-Semcache-Bypass-Reason"] = reason
            cause = _bypass_cause(call.body, reason, self.config.max_temperature)
            response.headers["X-Semcache-Miss-Reason"] = cause
            return response
        # A last message over max_query_chars is never embedded: exact layer only, no store
        # (the cache-aside API refuses such a query with a 400; a proxy client still gets its
        # answer from upstream).
        embeddable = self.cache.embeddable(keys.semantic_text)
        store = not controls.no_store and embeddable
        vector = None
        found: LookupResult | None = None
        landings = self.flights.landings
        if not controls.no_cache:
            found = await self.cache.lookup(
                call.partition,
                call.body,
                threshold=controls.threshold,
                semantic=embeddable,
                keys=keys,
            )
            if found.entry is not None and self._fresh_enough(found, controls):
                return self._hit(call, found)
            vector = found.vector
        status = CacheStatus.REFRESH if controls.no_cache else CacheStatus.MISS
        if controls.no_cache:
            miss_reason: str | None = MissReason.NO_CACHE
        elif found is not None and found.entry is not None:
            miss_reason = MissReason.MAX_AGE
        else:
            miss_reason = None if found is None else found.miss_reason
        response = await self._upstream(call, status, keys, store, vector, landings)
        if miss_reason is not None and response.headers.get("X-Semcache-Status") == str(status):
            response.headers["X-Semcache-Miss-Reason"] = miss_reason
            if found is not None and found.verifier_score is not None:
                response.headers["X-Semcache-Verifier-Score"] = f"{found.verifier_score:.4f}"
        return response

    async def _upstream(
        self,
        call: ProxyCall,
        status: CacheStatus,
        keys: RequestKeys,
        store: bool,
        vector: np.ndarray | None,
        landings: int,
    ) -> ProxyResponse:
        """Serve a miss: follow a flight in the air for the same request, or lead one.

        ``landings`` is the flights' landing count before the lookup: when a flight for the
        same request landed since, its store may be the entry this lookup missed (the store
        committed after the exact probe, its flight landed before this join), so the leader
        probes once more.
        """
        controls = call.controls
        pending = self.flights.peek(keys.exact_key)
        if (
            pending is not None
            and pending.resolved
            and (controls.no_cache or controls.max_age_s is not None)
        ):
            # The answer in that flight is a cached one to a client that asked for a fresh or
            # young answer: go upstream alone rather than follow.
            return await self._miss(call, status, keys, store=store, vector=vector).run()
        for _ in range(_MAX_FLIGHT_JOINS):
            flight, leader = self.flights.join(keys.exact_key)
            if leader:
                if self.flights.landed_since(keys.exact_key, landings) and not controls.no_cache:
                    stored = await self._stored_meanwhile(call, keys, flight)
                    if stored is not None:
                        return stored
                elsewhere = await self._from_another_replica(call, keys, flight, store)
                if elsewhere is not None:
                    return elsewhere
                miss = self._miss(call, status, keys, store=store, vector=vector)
                miss.flight = (keys.exact_key, flight)
                return await self._lead(miss)
            # A flight that already has its answer is being stored: serve it as the exact hit
            # it is about to be. One still in the air shares the leader's upstream call.
            resolved = flight.resolved
            try:
                answer = await flight.wait()
            except FlightAbandoned:
                continue  # the leader went away without an answer: try again, maybe leading
            served = CacheStatus.HIT_EXACT if resolved else status
            headers = {"X-Semcache-Status": str(served)}
            if not resolved:
                headers["X-Semcache-Coalesced"] = "true"
            headers.update(call.account(self.policy, served, call.model, answer, False))
            return self._answer(call, call.wire.fresh(answer, call.model), headers)
        return await self._miss(call, status, keys, store=False, vector=vector).run()

    def _abandon(self, key: str, flight: Flight[dict[str, Any]]) -> None:
        """End a flight whose leader failed without an answer: its followers start over."""
        flight.fail(FlightAbandoned("the request leading this upstream call failed"))
        self.flights.land(key, flight)

    def _settle(self, key: str, flight: Flight[dict[str, Any]], answer: dict[str, Any]) -> None:
        """End a flight with an answer found in the store: its followers are served it."""
        flight.resolve(answer)
        self.flights.land(key, flight)

    async def _stored_meanwhile(
        self, call: ProxyCall, keys: RequestKeys, flight: Flight[dict[str, Any]]
    ) -> ProxyResponse | None:
        """The exact hit a landed flight stored after this request's probe, served to this
        flight's followers too; None: still a miss, and this flight's leader calls upstream."""
        try:
            found = await self.cache.recheck_exact(call.partition, keys)
        except StorageError as exc:
            # The lookup just read this store; a second probe that fails costs the client
            # only the upstream call it would have made anyway.
            log.warning("exact recheck before an upstream call failed, calling: %s", exc)
            return None
        except BaseException:
            self._abandon(keys.exact_key, flight)
            raise
        if found is None or found.entry is None or not self._fresh_enough(found, call.controls):
            # Older than the client's max-age (the entry a no-cache refresh stored a moment
            # ago, say): this leader calls upstream as its lookup decided.
            return None
        self._settle(keys.exact_key, flight, found.entry.response)
        return self._hit(call, found)

    async def _from_another_replica(
        self, call: ProxyCall, keys: RequestKeys, flight: Flight[dict[str, Any]], store: bool
    ) -> ProxyResponse | None:
        """On a shared store, before this flight's leader calls upstream: when another
        replica is already calling for the same request, wait for the answer it stores and
        serve it (to this flight's followers too). None: this process makes the call."""
        controls = call.controls
        if (
            self.cluster is None
            or not store
            or controls.no_cache
            or controls.max_age_s is not None  # max-age=0 too: a fresh answer of its own
        ):
            return None
        try:
            entry = await self.cluster.lead_or_wait(call.partition.tenant, keys.exact_key)
        except BaseException:
            self._abandon(keys.exact_key, flight)
            raise
        if entry is None:
            return None
        self._settle(keys.exact_key, flight, entry.response)
        served = CacheStatus.HIT_EXACT
        headers = {"X-Semcache-Status": str(served), "X-Semcache-Coalesced": "true"}
        headers.update(call.account(self.policy, served, call.model, entry.response, False))
        return self._answer(call, call.wire.fresh(entry.response, call.model), headers)

    def _miss(
        self,
        call: ProxyCall,
        status: CacheStatus,
        keys: RequestKeys,
        *,
        store: bool,
        vector: np.ndarray | None = None,
    ) -> Miss:
        return Miss(self._env, call, status, keys, store, vector)

    async def _lead(self, miss: Miss) -> ProxyResponse:
        """Make the upstream call that followers of the miss's flight wait on.

        Whatever happens the flight ends: an upstream error is handed to the followers; any
        other exception, or a cancelled request, abandons the flight, and its followers start
        over instead of waiting forever. A streamed answer hands the flight on to its relay.
        """
        assert miss.flight is not None
        key, flight = miss.flight
        try:
            return await miss.run()
        except SemcacheError as exc:
            flight.fail(exc)
            self.flights.land(key, flight)
            stale = await self._stale(miss.call, miss.keys, exc)
            if stale is not None:
                return stale
            raise
        except BaseException:
            self._abandon(key, flight)
            raise

    # -- hits -------------------------------------------------------------------------------------

    def _fresh_enough(self, found: LookupResult, controls: RequestControls) -> bool:
        if controls.max_age_s is None or found.entry is None:
            return True
        return self.cache.clock() - found.entry.created_at <= controls.max_age_s

    def _hit(self, call: ProxyCall, found: LookupResult) -> ProxyResponse:
        assert found.entry is not None
        headers = found.headers(self.cache.clock())
        headers.update(
            call.account(self.policy, found.status, call.model, found.entry.response, False)
        )
        return self._answer(call, call.wire.fresh(found.entry.response, call.model), headers)

    def _answer(
        self, call: ProxyCall, answer: dict[str, Any], headers: dict[str, str]
    ) -> ProxyResponse:
        if not call.stream:
            return ProxyResponse(headers, body=answer)
        return ProxyResponse(headers, stream=_iterate(call.wire.replay(answer, call.body)))

    async def _stale(
        self, call: ProxyCall, keys: RequestKeys, error: SemcacheError
    ) -> ProxyResponse | None:
        """stale-if-error: an entry expired within the window, when the upstream failed."""
        window = self.config.stale_if_error_s
        if window <= 0 or call.controls.no_cache or error.status_code < 500:
            return None
        found = await self.cache.lookup(
            call.partition,
            call.body,
            stale_window_s=window,
            semantic=self.cache.embeddable(keys.semantic_text),
            keys=keys,
        )
        if found.entry is None:
            return None
        response = self._hit(call, found)
        response.headers["X-Semcache-Stale"] = "true"
        response.headers["Warning"] = '110 semcache "Response is Stale"'
        return response


def _bypass_cause(body: dict[str, Any], reason: str, max_temperature: float) -> str:
    """The miss reason of a request the wire format bypasses, for its ``bypass_reason``."""
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        return MissReason.N_GT_1
    if reason == temperature_bypass(body, max_temperature):
        return MissReason.TEMPERATURE
    # previous_response_id, conversation, background, stored items or prompts (Responses API)
    return MissReason.SERVER_STATE


async def _iterate(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
