"""Traces: a real `semcache serve` sends its spans over OTLP/HTTP to a real receiver on loopback
(an HTTP server in this process that decodes the protobuf export requests), driven through the
proxy with the openai SDK: one trace per request, the steps as children of the request's span,
the GenAI and cache attributes on them."""

from __future__ import annotations

import gzip
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from proxy_fixtures import KEY, openai_client, semcache_in_front_of
from servers import ServerProcess
from simulator_helpers import GPT, RunningSimulator, user

from semcache.errors import ConfigError
from semcache.telemetry import traces_endpoint

ROOT = ""  # the parent id of a trace's root span
LOOKUP_STEPS = ("semcache.exact_lookup", "semcache.embed", "semcache.search")


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    error: bool


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


class OtlpReceiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with a protobuf ExportTraceServiceRequest."""

    def __init__(self, port: int = 0) -> None:
        self.spans: list[ReceivedSpan] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.take(self.path, self.headers.get("Content-Type", ""), body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass  # no line per export on the test's stderr

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self, path: str, content_type: str, body: bytes) -> None:
        assert content_type == "application/x-protobuf"
        request = ExportTraceServiceRequest.FromString(body)
        with self._lock:
            self.paths.append(path)
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            ReceivedSpan(
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_id=span.parent_span_id.hex(),
                                name=span.name,
                                kind=span.kind,
                                attributes={a.key: _value(a.value) for a in span.attributes},
                                resource=resource,
                                error=span.status.code == span.status.STATUS_CODE_ERROR,
                            )
                        )

    def trace_of(self, request_id: str, wait_for: tuple[str, ...] = ()) -> list[ReceivedSpan]:
        """Every span of the trace whose request span carries ``request_id``, once the spans
        named ``wait_for`` arrived too (the store runs after the answer was sent)."""
        deadline = time.monotonic() + 15
        while True:
            with self._lock:
                roots = [
                    s for s in self.spans if s.attributes.get("semcache.request_id") == request_id
                ]
                spans = [s for s in self.spans if roots and s.trace_id == roots[0].trace_id]
            if roots and all(any(s.name == name for s in spans) for name in wait_for):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"no complete trace for {request_id}: {spans}")
            time.sleep(0.05)

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def server(
    sim: RunningSimulator, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    # The standard variables, not the setting: what an OpenTelemetry user already has set.
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "semcache-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with semcache_in_front_of(sim, tmp_path_factory.mktemp("tracing"), env=env) as running:
        yield running


@pytest.fixture()
def client(server: ServerProcess) -> openai.OpenAI:
    return openai_client(server)


def create(client: openai.OpenAI, text: str, **kwargs: Any) -> tuple[str, dict[str, str]]:
    """One chat completion; its request id and headers."""
    raw = client.chat.completions.with_raw_response.create(model=GPT, messages=user(text), **kwargs)
    if kwargs.get("stream"):
        for _ in raw.parse():
            pass  # read the stream to its end, as a client does
    return raw.headers["x-request-id"], dict(raw.headers)


def request_span(spans: list[ReceivedSpan]) -> ReceivedSpan:
    (root,) = [s for s in spans if s.parent_id == ROOT]
    return root


def children(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    """The request span's children by name (each step once)."""
    root = request_span(spans)
    named = [s for s in spans if s.parent_id == root.span_id]
    assert len({s.name for s in named}) == len(named), [s.name for s in named]
    assert len(spans) == len(named) + 1, "every span is the request's or a child of it"
    return {s.name: s for s in named}


def test_a_miss_is_one_trace_with_every_step(client: openai.OpenAI, receiver: OtlpReceiver) -> None:
    request_id, headers = create(client, "Which port does the OTLP HTTP receiver use?")
    assert headers["x-semcache-status"] == "MISS"
    spans = receiver.trace_of(request_id, wait_for=("semcache.store",))
    root = request_span(spans)
    assert root.name == "POST /v1/chat/completions"
    assert root.kind == 2  # SPAN_KIND_SERVER
    assert root.resource["service.name"] == "semcache-under-test"
    attributes = root.attributes
    assert attributes["http.route"] == "/v1/chat/completions"
    assert attributes["http.response.status_code"] == 200
    assert attributes["semcache.cache_status"] == "MISS"
    assert attributes["semcache.miss_reason"] == "no-candidate"
    assert attributes["gen_ai.request.model"] == GPT
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    # The header has six decimals; the attribute is the cost as the request log has it.
    cost = float(headers["x-semcache-cost-usd"])
    assert attributes["semcache.cost_usd"] == pytest.approx(cost, abs=1e-6)
    assert attributes["semcache.cost_usd"] > 0
    steps = children(spans)
    assert set(steps) == {*LOOKUP_STEPS, "semcache.upstream", "semcache.store"}
    assert steps["semcache.exact_lookup"].attributes["semcache.found"] is False
    assert steps["semcache.search"].attributes["semcache.candidates"] == 0
    upstream = steps["semcache.upstream"]
    assert upstream.kind == 3  # SPAN_KIND_CLIENT
    assert upstream.attributes["gen_ai.request.model"] == GPT
    assert upstream.attributes["gen_ai.provider.name"] == "openai"
    assert upstream.attributes["gen_ai.operation.name"] == "chat"
    assert upstream.attributes["http.response.status_code"] == 200
    for name in ("input_tokens", "output_tokens"):
        assert upstream.attributes[f"gen_ai.usage.{name}"] == attributes[f"gen_ai.usage.{name}"]
    assert not any(s.error for s in spans)


def test_an_exact_hit_stops_after_the_exact_lookup(
    client: openai.OpenAI, receiver: OtlpReceiver
) -> None:
    text = f"How long do exported spans wait in the batch? ({uuid.uuid4().hex[:6]})"
    first, _ = create(client, text)
    # Stored first: a repeat arriving while the answer is being stored is served from its
    # flight, after a full lookup.
    receiver.trace_of(first, wait_for=("semcache.store",))
    request_id, headers = create(client, text)
    assert headers["x-semcache-status"] == "HIT-EXACT"
    spans = receiver.trace_of(request_id)
    assert set(children(spans)) == {"semcache.exact_lookup"}
    assert children(spans)["semcache.exact_lookup"].attributes["semcache.found"] is True
    attributes = request_span(spans).attributes
    assert attributes["semcache.cache_status"] == "HIT-EXACT"
    assert attributes["semcache.similarity"] == 1.0
    assert attributes["semcache.cost_usd"] == 0.0
    assert attributes["semcache.saved_usd"] > 0
    assert attributes["semcache.entry_id"] == headers["x-semcache-entry-id"]


def test_a_semantic_hit_is_verified(client: openai.OpenAI, receiver: OtlpReceiver) -> None:
    first, _ = create(client, "How do I rotate my API keys safely?")
    receiver.trace_of(first, wait_for=("semcache.store",))  # stored before the paraphrase
    request_id, headers = create(client, "How can I safely rotate my API keys?")
    assert headers["x-semcache-status"] == "HIT-SEMANTIC"
    spans = receiver.trace_of(request_id)
    steps = children(spans)
    assert set(steps) == {*LOOKUP_STEPS, "semcache.verify"}
    assert steps["semcache.verify"].attributes["semcache.hit_decision"] == "verified"
    assert steps["semcache.verify"].attributes["semcache.accepted"] is True
    assert steps["semcache.search"].attributes["semcache.candidates"] >= 1
    similarity = float(headers["x-semcache-similarity"])
    assert request_span(spans).attributes["semcache.cache_status"] == "HIT-SEMANTIC"
    assert request_span(spans).attributes["semcache.similarity"] == pytest.approx(similarity)


def test_a_streamed_miss_ends_its_upstream_span_with_the_stream(
    client: openai.OpenAI, receiver: OtlpReceiver
) -> None:
    request_id, headers = create(
        client,
        "What does a span processor batch?",
        stream=True,
        stream_options={"include_usage": True},
    )
    assert headers["x-semcache-status"] == "MISS"
    spans = receiver.trace_of(request_id, wait_for=("semcache.store",))
    upstream = children(spans)["semcache.upstream"]
    assert upstream.attributes["gen_ai.usage.output_tokens"] > 0
    assert not upstream.error


def test_a_cache_aside_store_and_lookup_are_traced(
    server: ServerProcess, receiver: OtlpReceiver
) -> None:
    query = {"query": "Where do OTLP traces go?", "model": GPT}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as http:
        stored = http.post("/v1/cache/store", json={**query, "response": {"answer": "4318"}})
        found = http.post("/v1/cache/lookup", json=query)
    assert stored.status_code == 201 and found.json()["status"] == "HIT-EXACT"
    store_spans = receiver.trace_of(stored.headers["x-request-id"], wait_for=("semcache.store",))
    assert request_span(store_spans).name == "POST /v1/cache/store"
    store = children(store_spans)["semcache.store"]
    assert store.attributes["semcache.entry_id"] == stored.json()["id"]
    lookup_spans = receiver.trace_of(found.headers["x-request-id"])
    assert request_span(lookup_spans).attributes["semcache.cache_status"] == "HIT-EXACT"
    assert set(children(lookup_spans)) == {"semcache.exact_lookup"}


def test_every_request_is_a_trace_of_its_own(receiver: OtlpReceiver) -> None:
    # After the tests above: each request span is the root of a trace nobody else is in.
    with receiver._lock:
        roots = [s for s in receiver.spans if s.parent_id == ROOT]
        assert {s.name.split()[0] for s in roots} == {"POST"}  # no probe or scrape spans
        assert len({s.trace_id for s in roots}) == len(roots)
        assert set(receiver.paths) == {"/v1/traces"}


def test_no_endpoint_no_traces(sim: RunningSimulator, tmp_path: Path) -> None:
    # A receiver where the exporter sends by default, to see that nothing falls back to it.
    try:
        default = OtlpReceiver(4318)
    except OSError:
        pytest.skip("port 4318 is taken on this machine")
    unset = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ""}
    env = {**unset, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with default, semcache_in_front_of(sim, tmp_path, env=env) as server:
        client = openai_client(server)
        assert create(client, "Are traces off by default?")[1]["x-semcache-status"] == "MISS"
        time.sleep(0.5)  # five schedule delays
    assert default.spans == []
    assert "sending traces" not in (tmp_path / "server.log").read_text()


def test_the_endpoint_setting_and_the_standard_variables() -> None:
    standard = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert traces_endpoint("", {}) == ""  # off
    assert traces_endpoint("", standard) == "http://collector:4318/v1/traces"
    traces = {**standard, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/x"}
    assert traces_endpoint("", traces) == "http://c/x"  # as it is, as the exporter reads it
    # The setting wins, as a base URL or the full one.
    assert traces_endpoint("http://jaeger:4318/", standard) == "http://jaeger:4318/v1/traces"
    assert traces_endpoint("https://h/api/public/otel/v1/traces", {}) == (
        "https://h/api/public/otel/v1/traces"
    )
    assert traces_endpoint("http://jaeger:4318", {"OTEL_SDK_DISABLED": "true"}) == ""
    with pytest.raises(ConfigError, match="otel_endpoint must be an http"):
        traces_endpoint("jaeger:4318", {})
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT must be an http"):
        traces_endpoint("", {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})
