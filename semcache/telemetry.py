"""Traces: a span per HTTP request, a child span per step, sent over OTLP/HTTP.

Off unless an endpoint is configured (``otel_endpoint``, or the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``): then every span is
one shared null context and the SDK is never imported. On, ``build_tracing`` makes a
``TracerProvider`` of this app's own (never the process-global one, so two apps in a process,
as in tests, keep their traces apart) with a batch processor and the OTLP/HTTP exporter; the
SDK honours the other standard variables itself (``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER``, ``OTEL_RESOURCE_ATTRIBUTES``).

Spans are opened on the event loop around awaited steps; OpenTelemetry's context lives in a
context variable, so children (and the background store task, which copies the context when
it is spawned) find their request's span without anything passed along. Attribute names follow
OpenTelemetry's GenAI and HTTP semantic conventions (``gen_ai.*``, ``http.*``) where one
exists, ``semcache.*`` otherwise.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["Attributes", "Tracing", "build_tracing", "traces_endpoint"]

log = logging.getLogger(__name__)

Attributes = Mapping[str, AttributeValue]

TRACES_PATH = "/v1/traces"
# One object for every span when tracing is off: entering it costs a method call.
_OFF: AbstractContextManager[Span] = contextlib.nullcontext(INVALID_SPAN)
_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """The tracer every layer opens its spans with; ``Tracing.off()`` when nothing is
    configured. Built once per app (``build_tracing``) and passed to whoever opens spans."""

    def __init__(self, tracer: Tracer | None = None, shutdown: Callable[[], None] | None = None):
        self._tracer = tracer
        self._shutdown = shutdown

    @classmethod
    def off(cls) -> Tracing:
        return cls()

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def span(
        self,
        name: str,
        attributes: Attributes | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> AbstractContextManager[Span]:
        """A child of the current span, current while the block runs; an exception that
        leaves the block is recorded on it and marks it an error."""
        if self._tracer is None:
            return _OFF
        return self._tracer.start_as_current_span(name, kind=kind, attributes=attributes)

    def start(
        self,
        name: str,
        attributes: Attributes | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Span:
        """A child of the current span that the caller ends (``span.end()``): for a step that
        outlives the block it starts in, like an upstream answer streamed after its headers."""
        if self._tracer is None:
            return INVALID_SPAN
        return self._tracer.start_span(name, kind=kind, attributes=attributes)

    def current(self, span: Span) -> AbstractContextManager[Span]:
        """Make a span from ``start`` current for a block, recording an exception that leaves
        it, without ending the span."""
        if self._tracer is None:
            return _OFF
        return trace.use_span(span, end_on_exit=False)

    @contextlib.contextmanager
    def request(self, method: str, headers: Mapping[str, str]) -> Iterator[Span]:
        """The server span of one HTTP request, current while it runs. A client that sends a
        W3C ``traceparent`` gets this span inside its own trace."""
        if self._tracer is None:
            yield INVALID_SPAN
            return
        parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
        with self._tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        ) as span:
            yield span

    def shutdown(self) -> None:
        """Send the spans still buffered and stop the exporter (blocks up to its timeout)."""
        if self._shutdown is not None:
            self._shutdown()


def traces_endpoint(setting: str, environ: Mapping[str, str]) -> str:
    """The full URL traces go to, or "" when tracing is off: the setting (a base URL, or the
    full one), else the standard variables as the OTLP exporter reads them (the traces one as
    it is, the general one plus /v1/traces). Raises ``ConfigError`` for a URL not http(s)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    if setting:
        url, name = setting.rstrip("/"), "otel_endpoint"
        url = url if url.endswith(TRACES_PATH) else url + TRACES_PATH
    elif environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        url = environ[name]
    elif environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        name = "OTEL_EXPORTER_OTLP_ENDPOINT"
        url = environ[name].rstrip("/") + TRACES_PATH
    else:
        return ""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {url!r}")
    return url


def build_tracing(settings: Settings, environ: Mapping[str, str] | None = None) -> Tracing:
    """The app's tracing from its settings and the standard OTEL_* variables (``environ``,
    default the process's). Raises ``ConfigError``."""
    environ = os.environ if environ is None else environ
    endpoint = traces_endpoint(settings.otel_endpoint, environ)
    if not endpoint:
        return Tracing.off()
    # Imported only here: with tracing off the SDK, protobuf and requests are never loaded.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = settings.otel_service_name or environ.get("OTEL_SERVICE_NAME") or "semcache"
    version = _version()
    provider = TracerProvider(
        resource=Resource.create({"service.name": name, "service.version": version})
    )
    # The batch processor exports from a thread of its own: a slow or absent collector never
    # delays a request, and what it cannot take is dropped (the SDK logs a warning).
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    log.info("sending traces to %s as service %s", endpoint, name)
    return Tracing(provider.get_tracer("semcache", version), provider.shutdown)


def _version() -> str:
    try:
        return importlib.metadata.version("semcache")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
