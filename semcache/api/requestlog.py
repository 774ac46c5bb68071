"""The request log: one line per HTTP request, written when its answer has been sent.

An ASGI middleware (so a streamed answer is logged when its last byte went out). It opens the
request's record (``semcache.requestlog``), lets the app run, then adds what the answer's
headers say (``X-Semcache-Status``, ``-Similarity``, ``-Miss-Reason``, ``-Model``,
``-Cost-USD``) to what the handlers noted (tenant, model, tokens, cost, upstream time) and logs
it. API keys are never part of it; the prompt only with ``log_prompts = true``.

The same place opens the request's trace span (``semcache.telemetry``) and, at the end, puts
the record's fields on it as attributes: the cache status, similarity, miss reason, cost,
model and tokens. Probes and scrapes get no span, or they would be most of the traces.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from typing import Any

from opentelemetry.trace import INVALID_SPAN, Span, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..requestlog import REQUEST_LOGGER, RequestJournal, elapsed_ms, open_record
from ..telemetry import Tracing

__all__ = ["QUIET_PATHS", "RequestLogMiddleware"]

log = logging.getLogger(REQUEST_LOGGER)

# Probes and scrapes: logged at debug only, or they would drown the requests.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_HEADER_FIELDS = {
    b"x-semcache-status": "cache",
    b"x-semcache-similarity": "similarity",
    b"x-semcache-miss-reason": "miss_reason",
    b"x-semcache-verifier-score": "verifier_score",
    b"x-semcache-bypass-reason": "bypass_reason",
    b"x-semcache-model": "model",
    b"x-semcache-cost-usd": "cost_usd",
    b"x-semcache-saved-usd": "saved_usd",
    b"x-semcache-entry-id": "entry_id",
}
_REQUEST_ID_HEADERS = (b"x-request-id", b"request-id")
# The order of a log line's fields.
FIELDS = (
    "request_id",
    "tenant",
    "method",
    "route",
    "status",
    "cache",
    "similarity",
    "miss_reason",
    "verifier_score",
    "bypass_reason",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "saved_usd",
    "latency_ms",
    "upstream_ms",
    "error",
    "entry_id",
    "feature",
    "user",
    "prompt",
)
_NUMBERS = ("similarity", "verifier_score", "cost_usd", "saved_usd")
# Span attribute of each request-log field (GenAI and HTTP semantic conventions where they
# name one). Never the prompt: traces leave the process.
_SPAN_ATTRIBUTES = {
    "request_id": "semcache.request_id",
    "tenant": "semcache.tenant",
    "route": "http.route",
    "status": "http.response.status_code",
    "cache": "semcache.cache_status",
    "similarity": "semcache.similarity",
    "miss_reason": "semcache.miss_reason",
    "verifier_score": "semcache.verifier_score",
    "bypass_reason": "semcache.bypass_reason",
    "model": "gen_ai.request.model",
    "prompt_tokens": "gen_ai.usage.input_tokens",
    "completion_tokens": "gen_ai.usage.output_tokens",
    "cost_usd": "semcache.cost_usd",
    "saved_usd": "semcache.saved_usd",
    "upstream_ms": "semcache.upstream_ms",
    "error": "error.type",
    "entry_id": "semcache.entry_id",
    "feature": "semcache.feature",
    "user": "semcache.user",
}


class RequestLogMiddleware:
    """Logs every request to ``semcache.request`` and keeps it in the journal."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        journal: RequestJournal,
        enabled: bool = True,
        log_prompts: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.journal = journal
        self.enabled = enabled
        self.log_prompts = log_prompts
        self.tracing = tracing or Tracing.off()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": 500}

        async def send_and_watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                headers = list(message.get("headers", []))
                for name, value in headers:
                    field = _HEADER_FIELDS.get(name.lower())
                    if field is not None:
                        seen[field] = value.decode("latin-1")
                    elif name.lower() in _REQUEST_ID_HEADERS and "request_id" not in seen:
                        seen["request_id"] = value.decode("latin-1")
                if "request_id" not in seen:
                    seen["request_id"] = f"req_semcache_{secrets.token_hex(12)}"
                    headers.append((b"x-request-id", seen["request_id"].encode()))
                    message = {**message, "headers": headers}
            await send(message)

        with self._span(scope) as span, open_record() as record:
            try:
                await self.app(scope, receive, send_and_watch)
            finally:
                fields = self._finish(scope, record, seen, started)
                _describe(span, scope, fields)

    def _span(self, scope: Scope) -> contextlib.AbstractContextManager[Span]:
        if not self.tracing.enabled or scope.get("path", "") in QUIET_PATHS:
            return contextlib.nullcontext(INVALID_SPAN)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return self.tracing.request(scope.get("method", ""), headers)

    def _finish(
        self, scope: Scope, record: dict[str, Any], seen: dict[str, Any], started: float
    ) -> dict[str, Any]:
        route = scope.get("route")
        path = getattr(route, "path", None) or scope.get("path", "")
        values: dict[str, Any] = {
            **{k: v for k, v in seen.items() if k not in record or k == "status"},
            **{k: v for k, v in record.items() if k != "status"},
            "method": scope.get("method", ""),
            "route": path,
            "status": seen["status"],
            "latency_ms": elapsed_ms(started),
        }
        for name in _NUMBERS:
            if isinstance(values.get(name), str):
                try:
                    values[name] = float(values[name])
                except ValueError:
                    del values[name]
        if "upstream_ms" in values:
            values["upstream_ms"] = round(float(values["upstream_ms"]), 2)
        if not self.log_prompts:
            values.pop("prompt", None)
        fields = {k: values[k] for k in FIELDS if values.get(k) is not None}
        fields["ts"] = time.time()
        quiet = scope.get("path", "") in QUIET_PATHS
        if not quiet:
            self.journal.add({**fields, "path": scope.get("path", "")})
        if self.enabled:
            level = logging.DEBUG if quiet else logging.INFO
            shown = {k: v for k, v in fields.items() if k != "ts"}
            log.log(
                level,
                "%s %s %s",
                fields["method"],
                path,
                fields["status"],
                extra={"fields": shown, "in_message": ("method", "route", "status")},
            )
        return fields


def _describe(span: Span, scope: Scope, fields: dict[str, Any]) -> None:
    """Name the request's span after its route and put the request log's fields on it."""
    if not span.is_recording():
        return
    span.update_name(f"{fields['method']} {fields['route']}")
    span.set_attribute("url.path", scope.get("path", ""))
    for name, attribute in _SPAN_ATTRIBUTES.items():
        value = fields.get(name)
        if isinstance(value, str | int | float | bool):
            span.set_attribute(attribute, value)
    if fields["status"] >= 500:
        span.set_status(StatusCode.ERROR, str(fields.get("error", fields["status"])))
