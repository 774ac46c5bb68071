"""A miss: the trip upstream (with fallbacks), the relay or plain answer, and the store after.

One ``Miss`` carries what the steps share (the call, its status and keys, the vector the
lookup computed, whether to store, the single-flight it leads) instead of threading the same
values through every function.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry.trace import Span, SpanKind, StatusCode

from ..cache.keys import RequestKeys
from ..cache.service import CacheService
from ..cache.status import CacheStatus
from ..errors import SemcacheError, StorageError, UpstreamBadResponse, UpstreamTimeout
from ..levers.routing import classify_failure
from ..telemetry import Attributes, Tracing
from ..upstream.client import UpstreamClient, UpstreamReply
from ..wire.sse import SSEParser
from .background import BackgroundTasks
from .call import ProxyCall, ProxyResponse
from .policy import Policy, usage_of
from .singleflight import Flight, FlightAbandoned, SingleFlight

__all__ = ["Miss", "MissEnvironment"]

log = logging.getLogger(__name__)

Answer = dict[str, Any]


@dataclass(frozen=True)
class MissEnvironment:
    """The parts of the proxy every miss uses."""

    cache: CacheService
    upstream: UpstreamClient
    policy: Policy
    flights: SingleFlight[Answer]
    background: BackgroundTasks
    tracing: Tracing


@dataclass
class Miss:
    """One request answered by the upstream."""

    env: MissEnvironment
    call: ProxyCall
    status: CacheStatus
    keys: RequestKeys
    store: bool
    vector: np.ndarray | None = None
    # The flight this miss leads, if followers may wait on it: (exact key, flight).
    flight: tuple[str, Flight[Answer]] | None = None

    async def run(self) -> ProxyResponse:
        """Call the upstream, falling back along the route's models; relay or return."""
        call = self.call
        model, reply, tried, span = await self._send_with_fallbacks()
        headers = upstream_headers(reply.headers)
        headers.update({"X-Semcache-Status": str(self.status), "X-Semcache-Model": model})
        if tried:
            headers["X-Semcache-Fallbacks"] = ",".join(tried)
        # A fallback's answer is served but not stored: the request asked for another model,
        # which should get its chance again once it recovers.
        self.store = self.store and model == call.model
        if call.stream:
            # The relay ends the span, closes the upstream response and ends the flight when
            # it runs; if it never runs (the client left before the first byte, or rendering
            # failed), dropping it does, or the upstream connection would stay taken.
            unrelayed = Unrelayed(
                asyncio.get_running_loop(),
                self.env.background,
                span,
                reply,
                self.env.flights,
                self.flight,
            )
            relay = self._relay(reply, model, span, unrelayed)
            weakref.finalize(relay, unrelayed.dropped)
            return ProxyResponse(headers, stream=relay)
        try:
            answer = reply.json()
        except SemcacheError as exc:
            _answered(span, call.wire.provider, None, exc.message)
            raise
        _answered(span, call.wire.provider, answer)
        headers.update(call.account(self.env.policy, self.status, model, answer, True))
        self._finish(answer)
        return ProxyResponse(headers, body=answer)

    async def _send_with_fallbacks(self) -> tuple[str, UpstreamReply, list[str], Span]:
        call = self.call
        policy = self.env.policy
        assert call.admission is not None
        tried: list[str] = []
        models = call.admission.models
        for position, model in enumerate(models):
            await policy.before_upstream(call.caller, call.admission, model)
            body = call.wire.upstream_body({**call.body, "model": model})
            body = policy.annotate(call.caller, call.wire.provider, body)
            try:
                reply, span = await self._send(model, body, position)
            except SemcacheError as exc:
                kind = classify_failure(
                    exc.status_code,
                    code=exc.code,
                    message=exc.message,
                    timeout=isinstance(exc, UpstreamTimeout),
                )
                if policy.router.report_failure(model, kind) and position < len(models) - 1:
                    log.warning("%s failed (%s); falling back", model, exc.message)
                    tried.append(model)
                    continue
                raise
            policy.router.report_success(model)
            return model, reply, tried, span
        raise AssertionError("a route always has at least one model")

    async def _send(
        self, model: str, body: dict[str, Any], position: int
    ) -> tuple[UpstreamReply, Span]:
        """One upstream attempt in its span (retries included). The span of an attempt that
        failed is ended here; a successful one's stays open until its answer has been read,
        which for a stream is when the relay ends (``_answered``)."""
        call = self.call
        tracing = self.env.tracing
        attributes: Attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": call.wire.provider,
            # The older name of the same attribute, which some backends still read.
            "gen_ai.system": call.wire.provider,
            "gen_ai.request.model": model,
            "semcache.fallback_position": position,
        }
        span = tracing.start("semcache.upstream", attributes, kind=SpanKind.CLIENT)
        try:
            with tracing.current(span):
                reply = await self.env.upstream.send(
                    call.wire.provider,
                    call.wire.path,
                    body,
                    stream=call.stream,
                    client_key=call.client_key,
                    client_headers=call.client_headers,
                )
        except BaseException as exc:
            if isinstance(exc, SemcacheError):
                span.set_attribute("http.response.status_code", exc.status_code)
                span.set_attribute("error.type", exc.code)
            span.end()
            raise
        span.set_attribute("http.response.status_code", 200)
        return reply, span

    async def _relay(
        self, reply: UpstreamReply, model: str, span: Span, unrelayed: Unrelayed
    ) -> AsyncIterator[bytes]:
        """Forward each upstream event as it arrives; store the answer if the stream completed.

        Caching never delays the first byte: events go out as they come, and the answer is
        assembled beside them. No retry happens here, since bytes have reached the client.
        """
        unrelayed.started = True
        call = self.call
        parser = SSEParser()
        assembler = call.wire.assembler()
        finished = False
        answer: Answer | None = None
        try:
            try:
                async for chunk in reply.chunks():
                    for event in parser.feed(chunk):
                        assembler.feed_event(event)
                        out = call.wire.to_client(event, call.body)
                        if assembler.complete and not finished:
                            # Resolve before the closing event goes out: a client that asks
                            # again right after the stream ends finds the answer.
                            answer = assembler.result()
                            call.account(self.env.policy, self.status, model, answer, True)
                            self._finish(answer)
                            finished = True
                        if out:
                            yield out
            except UpstreamBadResponse as exc:
                log.warning("upstream stream broke off: %s", exc.message)
            except ValueError as exc:  # an event whose data is not the JSON it must be
                log.warning("upstream stream sent an unreadable event: %s", exc)
            finally:
                await reply.aclose()
            if not finished:
                # Tell the client the answer is cut short; a truncated answer is never stored.
                yield call.wire.error_event("the upstream stream ended before the answer completed")
        finally:
            broke = None if finished else "the upstream stream ended before the answer completed"
            _answered(span, call.wire.provider, answer, broke)
            if self.flight is not None and not finished:
                # Stream cut short, or the client went away: followers must not wait forever.
                key, pending = self.flight
                pending.fail(UpstreamBadResponse("the upstream stream ended early"))
                self.env.flights.land(key, pending)

    def _finish(self, answer: Answer) -> None:
        """Hand the answer to waiting followers, then store it off the response path.

        The flight stays open until the store is done, so an identical request arriving in
        between is answered from the flight: the miss pays neither the store's embedding nor
        its fsync, and an immediate repeat still never reaches the upstream.
        """
        if self.flight is not None:
            self.flight[1].resolve(answer)
        self.env.background.spawn(self._store_then_land(answer))

    async def _store_then_land(self, answer: Answer) -> None:
        try:
            if self.store:
                await self._store(answer)
        finally:
            if self.flight is not None:
                self.env.flights.land(*self.flight)

    async def _store(self, answer: Answer) -> None:
        cache = self.env.cache
        try:
            # Its "semcache.store" span is a child of the request's (the task copied its
            # context), though the request may have ended before the store does.
            await cache.store(
                self.call.partition,
                self.call.body,
                answer,
                ttl_s=self.call.controls.ttl_s,
                keys=self.keys,
                vector=self.vector,
            )
        except StorageError as exc:
            # The client still gets its answer; the store is only a missed chance to save.
            cache.metrics.store_failures.inc()
            log.warning("could not store the answer: %s", exc.message)


# Upstream response headers a client relies on: the provider's request id (support tickets,
# the SDKs' ``request_id``), its processing time, and its quota (client-side backoff). Where
# semcache enforces its own rate limits its x-ratelimit-* replace these (proxy/flow.py).
_PASSED_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
_PASSED_NAMES = frozenset({"x-request-id", "request-id", "openai-processing-ms", "openai-version"})


def _answered(span: Span, provider: str, answer: Answer | None, error: str | None = None) -> None:
    """End an upstream call's span with what its answer says: tokens, the answering model."""
    if span.is_recording():
        if answer is not None:
            usage = usage_of(provider, answer)
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.output)
            for key in ("model", "id"):
                if isinstance(answer.get(key), str):
                    span.set_attribute(f"gen_ai.response.{key}", answer[key])
        if error is not None:
            span.set_status(StatusCode.ERROR, error)
    span.end()


def upstream_headers(headers: dict[str, str]) -> dict[str, str]:
    """The upstream headers that reach the client on a miss."""
    return {
        name: value
        for name, value in headers.items()
        if name in _PASSED_NAMES or name.startswith(_PASSED_PREFIXES)
    }


class Unrelayed:
    """What a streamed miss's relay would clean up, done when the relay is dropped unstarted:
    the upstream span ended (with an error status), the upstream response closed, the flight
    ended so that followers start over."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        background: BackgroundTasks,
        span: Span,
        reply: UpstreamReply,
        flights: SingleFlight[Answer],
        flight: tuple[str, Flight[Answer]] | None,
    ) -> None:
        self.loop, self.background, self.span, self.reply = loop, background, span, reply
        self.flights, self.flight = flights, flight
        self.started = False

    def dropped(self) -> None:
        """The relay's finalizer (any thread): nothing to do if the relay ran."""
        if self.started:
            return
        try:
            self.loop.call_soon_threadsafe(self._abandon)
        except RuntimeError:  # the loop closed: nothing of it is left to close but the span
            self._end_span()

    def _end_span(self) -> None:
        self.span.set_status(StatusCode.ERROR, "the stream was never relayed to the client")
        self.span.end()

    def _abandon(self) -> None:
        self._end_span()
        # A background task: held until done, drained at shutdown, its failure logged.
        self.background.spawn(self.reply.aclose())
        if self.flight is not None:
            key, flight = self.flight
            if not flight.done:
                flight.fail(FlightAbandoned("the streamed answer was never relayed"))
                self.flights.land(key, flight)
