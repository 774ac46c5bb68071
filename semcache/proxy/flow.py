"""The proxy's request flow (DESIGN.md "Request flow"): lookup, single-flight, upstream, store."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import numpy as np
import orjson

from ..cache.keys import request_keys
from ..cache.service import HIT_EXACT, MISS, CacheService, LookupResult
from ..errors import SemcacheError, StorageError, UpstreamBadResponse, UpstreamTimeout
from ..levers.routing import classify_failure
from ..store.base import Partition
from ..upstream.client import UpstreamClient
from ..upstream.singleflight import Flight, FlightAbandoned, SingleFlight
from ..upstream.sse import SSEParser
from .controls import RequestControls
from .policy import Admission, Caller, Policy
from .wires import Wire

__all__ = ["BYPASS", "REFRESH", "ProxyCall", "ProxyConfig", "ProxyResponse", "ProxyService"]

log = logging.getLogger(__name__)

BYPASS = "BYPASS"
REFRESH = "REFRESH"
# A follower whose leader keeps abandoning its flight goes upstream alone after this many tries.
_MAX_FLIGHT_JOINS = 3


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy's own settings."""

    max_temperature: float = 1.0
    stale_if_error_s: float = 0.0


@dataclass
class ProxyResponse:
    """What the HTTP layer sends: a JSON body or a stream of SSE bytes, with headers."""

    headers: dict[str, str]
    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None
    status_code: int = 200


@dataclass(frozen=True)
class ProxyCall:
    """One client request, as the flow needs it."""

    wire: Wire
    caller: Caller
    body: dict[str, Any]
    controls: RequestControls
    client_key: str | None = None
    client_headers: dict[str, str] = field(default_factory=dict)
    admission: Admission | None = None

    @property
    def tenant(self) -> str:
        return self.caller.tenant

    def account(
        self, policy: Policy, status: str, model: str, answer: Any, upstream: bool
    ) -> dict[str, str]:
        """Cost and attribution for this call's answer; the cost headers."""
        assert self.admission is not None
        return policy.account(
            self.caller,
            self.admission,
            self.wire.provider,
            status=status,
            model=model,
            answer=answer if isinstance(answer, dict) else None,
            from_upstream=upstream,
        )

    @property
    def model(self) -> str:
        return str(self.body["model"])

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def partition(self) -> Partition:
        # The wire format is part of the model key: an OpenAI completion must never answer an
        # Anthropic client, even for the same model name.
        model = f"{self.wire.provider}:{self.model}"
        return Partition(self.tenant, self.controls.namespace, model, self.controls.doc_version)


class ProxyService:
    """Answers chat requests from the cache or the upstream, storing what the upstream says."""

    def __init__(
        self, config: ProxyConfig, cache: CacheService, upstream: UpstreamClient, policy: Policy
    ) -> None:
        self.config = config
        self.cache = cache
        self.upstream = upstream
        self.policy = policy
        self.flights: SingleFlight[dict[str, Any]] = SingleFlight()
        self._background: set[asyncio.Task[None]] = set()

    async def handle(self, call: ProxyCall) -> ProxyResponse:
        call.wire.validate(call.body)
        if call.controls.ttl_s is not None:
            self.cache.resolve_ttl(call.controls.ttl_s)  # a bad TTL is a 400 before upstream
        admission = self.policy.admit(call.caller, call.wire.provider, call.body)
        call = replace(call, body=admission.body, admission=admission)
        response = await self._serve(call)
        response.headers.update(admission.headers)
        return response

    async def _serve(self, call: ProxyCall) -> ProxyResponse:
        controls = call.controls
        bypass = call.wire.bypass_reason(call.body, self.config.max_temperature)
        if bypass is not None:
            self.cache.metrics.lookups.labels(BYPASS).inc()
            return await self._from_upstream(call, BYPASS, store=False)
        partition = call.partition
        keys = request_keys(partition, call.body)
        vector = None
        # A last message over max_query_chars is never embedded: exact layer only, no store
        # (the cache-aside API refuses such a query with a 400; a proxy client still gets its
        # answer from upstream).
        embeddable = self.cache.embeddable(keys.semantic_text)
        store = not controls.no_store and embeddable
        if not controls.no_cache:
            found = await self.cache.lookup(
                partition, call.body, threshold=controls.threshold, semantic=embeddable
            )
            if found.entry is not None and self._fresh_enough(found, controls):
                return self._hit(call, found)
            vector = found.vector
        status = REFRESH if controls.no_cache else MISS
        pending = self.flights.peek(keys.exact_key)
        if (
            pending is not None
            and pending.resolved
            and (controls.no_cache or controls.max_age_s is not None)
        ):
            # The answer in that flight is a cached one to a client that asked for a fresh or
            # young answer: go upstream alone rather than follow.
            return await self._from_upstream(call, status, store=store, vector=vector)
        for _ in range(_MAX_FLIGHT_JOINS):
            flight, leader = self.flights.join(keys.exact_key)
            if leader:
                return await self._lead(call, status, store, (keys.exact_key, flight), vector)
            # A flight that already has its answer is being stored: serve it as the exact hit
            # it is about to be. One still in the air shares the leader's upstream call.
            resolved = flight.resolved
            try:
                answer = await flight.wait()
            except FlightAbandoned:
                continue  # the leader went away without an answer: try again, maybe leading
            headers = {"X-Semcache-Status": HIT_EXACT if resolved else status}
            if not resolved:
                headers["X-Semcache-Coalesced"] = "true"
            headers.update(
                call.account(self.policy, headers["X-Semcache-Status"], call.model, answer, False)
            )
            return self._answer(call, call.wire.fresh(answer, call.model), headers)
        return await self._from_upstream(call, status, store=False, vector=vector)

    async def _lead(
        self,
        call: ProxyCall,
        status: str,
        store: bool,
        flight: tuple[str, Flight[dict[str, Any]]],
        vector: np.ndarray | None,
    ) -> ProxyResponse:
        """Make the upstream call that followers of ``flight`` wait on.

        Whatever happens the flight ends: an upstream error is handed to the followers; any
        other exception, or a cancelled request, abandons the flight, and its followers start
        over instead of waiting forever. A streamed answer hands the flight on to its relay.
        """
        key, pending = flight
        try:
            return await self._from_upstream(
                call, status, store=store, flight=flight, vector=vector
            )
        except SemcacheError as exc:
            pending.fail(exc)
            self.flights.land(key, pending)
            stale = await self._stale(call, exc)
            if stale is not None:
                return stale
            raise
        except BaseException:
            pending.fail(FlightAbandoned("the request leading this upstream call failed"))
            self.flights.land(key, pending)
            raise

    # -- hits -------------------------------------------------------------------------------------

    def _fresh_enough(self, found: LookupResult, controls: RequestControls) -> bool:
        if controls.max_age_s is None or found.entry is None:
            return True
        return self.cache.clock() - found.entry.created_at <= controls.max_age_s

    def _hit(self, call: ProxyCall, found: LookupResult) -> ProxyResponse:
        assert found.entry is not None
        headers = {
            "X-Semcache-Status": found.status,
            "X-Semcache-Entry-Id": found.entry.entry_id,
            "Age": str(max(0, int(self.cache.clock() - found.entry.created_at))),
        }
        if found.similarity is not None:
            headers["X-Semcache-Similarity"] = f"{found.similarity:.4f}"
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

    async def _stale(self, call: ProxyCall, error: SemcacheError) -> ProxyResponse | None:
        """stale-if-error: an entry expired within the window, when the upstream failed."""
        window = self.config.stale_if_error_s
        if window <= 0 or call.controls.no_cache or error.status_code < 500:
            return None
        found = await self.cache.lookup(call.partition, call.body, stale_window_s=window)
        if found.entry is None:
            return None
        response = self._hit(call, found)
        response.headers["X-Semcache-Stale"] = "true"
        response.headers["Warning"] = '110 semcache "Response is Stale"'
        return response

    # -- misses -----------------------------------------------------------------------------------

    async def _from_upstream(
        self,
        call: ProxyCall,
        status: str,
        *,
        store: bool,
        flight: tuple[str, Flight[dict[str, Any]]] | None = None,
        vector: np.ndarray | None = None,
    ) -> ProxyResponse:
        """Call the upstream, falling back along the route's models; relay or return."""
        model, upstream, tried = await self._send_with_fallbacks(call)
        headers = {"X-Semcache-Status": status, "X-Semcache-Model": model}
        if tried:
            headers["X-Semcache-Fallbacks"] = ",".join(tried)
        # A fallback's answer is served but not stored: the request asked for another model,
        # which should get its chance again once it recovers.
        store = store and model == call.model
        if call.stream:
            relay = self._relay(
                call,
                upstream,
                store=store,
                flight=flight,
                vector=vector,
                model=model,
                status=status,
            )
            if flight is not None:
                # The relay ends the flight when it runs; if it never runs (the client left
                # before the first byte, or rendering failed), dropping it ends the flight.
                weakref.finalize(relay, self._abandon_soon, asyncio.get_running_loop(), *flight)
            return ProxyResponse(headers, stream=relay)
        try:
            # orjson, as for client bodies: a NaN stored would break every later hit on it.
            answer = orjson.loads(upstream.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamBadResponse("the upstream answered 200 with invalid JSON") from exc
        if not isinstance(answer, dict):
            raise UpstreamBadResponse("the upstream answered 200 with JSON that is no object")
        headers.update(call.account(self.policy, status, model, answer, True))
        self._finish(call, answer, store=store, flight=flight, vector=vector)
        return ProxyResponse(headers, body=answer)

    async def _send_with_fallbacks(self, call: ProxyCall) -> tuple[str, httpx.Response, list[str]]:
        assert call.admission is not None
        router = self.policy.router
        tried: list[str] = []
        models = call.admission.models
        for position, model in enumerate(models):
            await self.policy.before_upstream(call.caller, call.admission, model)
            body = call.wire.upstream_body({**call.body, "model": model})
            body = self.policy.annotate(call.caller, call.wire.provider, body)
            try:
                upstream = await self.upstream.send(
                    call.wire.provider,
                    call.wire.path,
                    body,
                    stream=call.stream,
                    client_key=call.client_key,
                    client_headers=call.client_headers,
                )
            except SemcacheError as exc:
                kind = classify_failure(
                    exc.status_code,
                    code=exc.code,
                    message=exc.message,
                    timeout=isinstance(exc, UpstreamTimeout),
                )
                if router.report_failure(model, kind) and position < len(models) - 1:
                    log.warning("%s failed (%s); falling back", model, exc.message)
                    tried.append(model)
                    continue
                raise
            router.report_success(model)
            return model, upstream, tried
        raise AssertionError("a route always has at least one model")

    async def _relay(
        self,
        call: ProxyCall,
        upstream: httpx.Response,
        *,
        store: bool,
        flight: tuple[str, Flight[dict[str, Any]]] | None,
        vector: np.ndarray | None,
        model: str,
        status: str,
    ) -> AsyncIterator[bytes]:
        """Forward each upstream event as it arrives; store the answer if the stream completed.

        Caching never delays the first byte: events go out as they come, and the answer is
        assembled beside them. No retry happens here, since bytes have reached the client.
        """
        parser = SSEParser()
        assembler = call.wire.assembler()
        finished = False
        try:
            try:
                async for chunk in upstream.aiter_raw():
                    for event in parser.feed(chunk):
                        assembler.feed_event(event)
                        out = call.wire.to_client(event, call.body)
                        if assembler.complete and not finished:
                            # Resolve before the closing event goes out: a client that asks
                            # again right after the stream ends finds the answer.
                            answer = assembler.result()
                            call.account(self.policy, status, model, answer, True)
                            self._finish(call, answer, store=store, flight=flight, vector=vector)
                            finished = True
                        if out:
                            yield out
            except httpx.HTTPError as exc:
                log.warning("upstream stream broke off: %s", exc)
            finally:
                await upstream.aclose()
            if not finished:
                # Tell the client the answer is cut short; a truncated answer is never stored.
                yield call.wire.error_event("the upstream stream ended before the answer completed")
        finally:
            if flight is not None and not finished:
                # Stream cut short, or the client went away: followers must not wait forever.
                key, pending = flight
                pending.fail(UpstreamBadResponse("the upstream stream ended early"))
                self.flights.land(key, pending)

    def _abandon_soon(
        self, loop: asyncio.AbstractEventLoop, key: str, flight: Flight[dict[str, Any]]
    ) -> None:
        # A finalizer may run in any thread; futures belong to the loop's.
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._abandon_if_open, key, flight)

    def _abandon_if_open(self, key: str, flight: Flight[dict[str, Any]]) -> None:
        if not flight.done:
            flight.fail(FlightAbandoned("the streamed answer was never relayed"))
            self.flights.land(key, flight)

    def _finish(
        self,
        call: ProxyCall,
        answer: dict[str, Any],
        *,
        store: bool,
        flight: tuple[str, Flight[dict[str, Any]]] | None,
        vector: np.ndarray | None,
    ) -> None:
        """Hand the answer to waiting followers, then store it off the response path.

        The flight stays open until the store is done, so an identical request arriving in
        between is answered from the flight: the miss pays neither the store's embedding nor
        its fsync, and an immediate repeat still never reaches the upstream.
        """
        if flight is not None:
            flight[1].resolve(answer)

        async def store_then_land() -> None:
            try:
                if store:
                    await self._store(call, answer, vector)
            except Exception:
                # Nothing awaits this task: without this the error would surface only as
                # "Task exception was never retrieved". The client already has its answer.
                self.cache.metrics.store_failures.inc()
                log.exception("storing a proxied answer failed")
            finally:
                if flight is not None:
                    self.flights.land(*flight)

        task = asyncio.create_task(store_then_land())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for stores still running in the background (at shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _store(
        self, call: ProxyCall, answer: dict[str, Any], vector: np.ndarray | None
    ) -> None:
        try:
            await self.cache.store(
                call.partition, call.body, answer, ttl_s=call.controls.ttl_s, vector=vector
            )
        except StorageError as exc:
            # The client still gets its answer; the store is only a missed chance to save.
            self.cache.metrics.store_failures.inc()
            log.warning("could not store the answer: %s", exc.message)


async def _iterate(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
