"""Requests that used to break the server: each gets its 4xx, or its correct behaviour.

A poisoned single-flight, bodies that crashed the parser or the flow further down (deep
nesting, lone surrogates, huge numbers, mistyped chat fields), NaN and Infinity in bodies,
headers and query strings, an unparseable HTTP request, and the smaller leaks: the API
description without a key, SQLAlchemy internals in 503s, a never-retrieved background task.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from proxy_fixtures import KEY, openai_client, semcache_in_front_of
from servers import ServerProcess
from simulator_helpers import CLAUDE, GPT, RunningSimulator

HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(
    sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("reliability-input")
    with semcache_in_front_of(sim, data, max_query_chars="200") as running:
        yield running


@pytest.fixture()
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20) as client:
        yield client


def assert_error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "code"}
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": GPT, "messages": [{"role": "user", "content": text}], **extra}


# -- the poisoned single-flight ------------------------------------------------------------------


@pytest.mark.parametrize("options", ["x", [1], 7, True])
def test_bad_stream_options_is_a_400_and_poisons_nothing(
    http: httpx.Client, server: ServerProcess, options: Any
) -> None:
    text = f"poison me {uuid.uuid4().hex}"
    body = chat(text, stream=True, stream_options=options)
    message = assert_error(
        http.post("/v1/chat/completions", json=body, headers=HEADERS), 400, "invalid_field"
    )
    assert "stream_options" in message
    # The same prompt is answerable at once, plain and streamed.
    client = openai_client(server).with_options(timeout=10)
    answer = client.chat.completions.create(model=GPT, messages=chat(text)["messages"])
    assert answer.choices[0].message.content
    chunks = list(
        client.chat.completions.create(model=GPT, messages=chat(text)["messages"], stream=True)
    )
    assert chunks


def test_sigterm_after_a_poison_request_exits_in_seconds(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    with semcache_in_front_of(sim, tmp_path) as running:
        body = chat("poison then stop", stream=True, stream_options="x")
        r = httpx.post(running.url + "/v1/chat/completions", json=body, headers=HEADERS)
        assert r.status_code == 400
        assert running.proc is not None
        started = time.monotonic()
        running.stop()
        assert time.monotonic() - started < 10
        # uvicorn re-raises SIGTERM once it has shut down cleanly; -9 would be stop()'s kill.
        assert running.proc.returncode in (0, -15)


def test_a_leader_that_raises_anything_ends_its_flight() -> None:
    """Whatever the leader raises (here a bug injected into its upstream call), the flight
    ends: followers start over instead of waiting, and nothing stays registered."""
    from semcache.proxy.flow import ProxyService
    from semcache.proxy.singleflight import FlightAbandoned, SingleFlight

    async def scenario() -> None:
        service = ProxyService.__new__(ProxyService)
        service.flights = SingleFlight()

        class BrokenMiss:
            call = keys = None

            async def run(self) -> Any:
                await asyncio.sleep(0.05)
                raise KeyError("a bug")

        flight, leader = service.flights.join("k")
        assert leader
        follower, leads = service.flights.join("k")
        assert not leads
        waiting = asyncio.create_task(follower.wait())
        miss = BrokenMiss()
        miss.flight = ("k", flight)  # type: ignore[attr-defined]
        with pytest.raises(KeyError):
            await service._lead(miss)  # type: ignore[arg-type]
        with pytest.raises(FlightAbandoned):
            await asyncio.wait_for(waiting, 1)
        assert len(service.flights) == 0

    asyncio.run(scenario())


def test_a_stream_never_relayed_ends_its_span_closes_the_upstream_and_its_flight(
    sim: RunningSimulator,
) -> None:
    """The client left before the first byte: the relay generator is dropped unstarted, and
    what it would have cleaned up is cleaned up anyway (a real simulator stream, a real
    span)."""
    import gc

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from semcache.proxy.background import BackgroundTasks
    from semcache.proxy.miss import Unrelayed
    from semcache.proxy.singleflight import FlightAbandoned, SingleFlight
    from semcache.upstream.client import UpstreamReply

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def scenario() -> None:
        flights: SingleFlight[Any] = SingleFlight()
        flight, _ = flights.join("k")
        follower, _ = flights.join("k")
        waiting = asyncio.create_task(follower.wait())
        async with httpx.AsyncClient(base_url=sim.base_url) as http:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            request = http.build_request(
                "POST", "/v1/chat/completions", json={**body, "stream": True}
            )
            response = await http.send(request, stream=True)
            span = provider.get_tracer("test").start_span("semcache.upstream")
            background = BackgroundTasks("test")
            unrelayed = Unrelayed(
                asyncio.get_running_loop(),
                background,
                span,
                UpstreamReply("openai", response),
                flights,
                ("k", flight),
            )

            async def relay(guard: Unrelayed) -> Any:
                guard.started = True
                yield b""

            dropped = relay(unrelayed)
            # As in Miss.run: only the finalizer keeps the Unrelayed once the relay is gone.
            weakref.finalize(dropped, unrelayed.dropped)
            del dropped, unrelayed
            gc.collect()
            with pytest.raises(FlightAbandoned):
                await asyncio.wait_for(waiting, 1)
            for _ in range(50):
                if response.is_closed:
                    break
                await asyncio.sleep(0.02)
            assert response.is_closed
            await background.drain()
        assert len(flights) == 0
        [ended] = exporter.get_finished_spans()
        assert ended.status.status_code == StatusCode.ERROR

    asyncio.run(scenario())


# -- bodies that reached a 500 --------------------------------------------------------------------


def deep(levels: int) -> bytes:
    return (
        b'{"query": "q", "model": "m", "metadata": {"x": ' + b"[" * levels + b"]" * levels + b"}}"
    )


@pytest.mark.parametrize(
    ("path", "content", "words"),
    [
        ("/v1/cache/lookup", deep(50_000), "JSON"),
        ("/v1/cache/store", deep(100), "deeper than"),
        ("/v1/chat/completions", b"[" * 50_000 + b"]" * 50_000, "JSON"),
        ("/v1/cache/lookup", b'{"query": "a \\ud800 b", "model": "m"}', "surrogate"),
        ("/v1/cache/store", b'{"query": "q", "model": "m", "response": "\\udfff"}', "surrogate"),
        (
            "/v1/chat/completions",
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\\ud800"}]}',
            "surrogate",
        ),
        (
            "/v1/cache/store",
            b'{"query": "q", "model": "m", "response": ' + b"9" * 5000 + b"}",
            "JSON",
        ),
        ("/v1/cache/store", b'{"query": "q", "model": "m", "response": {"v": NaN}}', "NaN"),
        ("/v1/cache/store", b'{"query": "q", "model": "m", "response": 1, "ttl_s": NaN}', "NaN"),
        (
            "/v1/cache/store",
            b'{"query": "q", "model": "m", "response": 1, "ttl_s": Infinity}',
            "JSON",
        ),
        ("/v1/cache/lookup", b'{"query": "q", "model": "m", "threshold": 1e999}', "JSON"),
        (
            "/v1/chat/completions",
            b'{"model": "gpt-4o-mini", "temperature": NaN, "messages": []}',
            "NaN",
        ),
    ],
)
def test_unparseable_json_is_a_400(
    http: httpx.Client, path: str, content: bytes, words: str
) -> None:
    message = assert_error(http.post(path, content=content, headers=HEADERS), 400, "invalid_json")
    assert words in message
    # The connection is still good: the next request on it answers.
    assert http.get("/v1/cache/stats", headers=HEADERS).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        (
            "/v1/chat/completions",
            {"model": GPT, "messages": [{"role": "user", "content": 123}]},
            "messages.0.content",
        ),
        (
            "/v1/chat/completions",
            {"model": GPT, "messages": [{"role": "user", "content": [1]}]},
            "content parts",
        ),
        ("/v1/chat/completions", {**chat("hi"), "temperature": "hot"}, "temperature"),
        ("/v1/chat/completions", {**chat("hi"), "tools": {"a": 1}}, "tools"),
        (
            "/v1/messages",
            {"model": CLAUDE, "max_tokens": 10, "system": 5, "messages": chat("hi")["messages"]},
            "system",
        ),
        (
            "/v1/messages",
            {
                "model": CLAUDE,
                "max_tokens": 10,
                "messages": [{"role": "user", "content": {"a": 1}}],
            },
            "content",
        ),
    ],
)
def test_mistyped_chat_fields_are_a_400(
    http: httpx.Client, path: str, body: dict[str, Any], words: str
) -> None:
    r = http.post(path, json=body, headers=HEADERS)
    if path == "/v1/messages":  # Anthropic's error shape there
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and words in error["message"]
        return
    assert words in assert_error(r, 400, "invalid_field")


def _exchange(server: ServerProcess, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    return raw


_LOOKUP_HEAD = b"POST /v1/cache/lookup HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        _LOOKUP_HEAD + b"Content-Type: application/json\r\nContent-Length: -1\r\n\r\n{}",
        _LOOKUP_HEAD + b"Broken header line\r\n\r\n",
        # A head still unfinished after 16 KiB (a header line that never ends): h11's bound,
        # which the httptools protocol keeps.
        _LOOKUP_HEAD + b"X-Padding: " + b"a" * 20_000,
    ],
    ids=["negative-content-length", "broken-header", "endless-header"],
)
def test_unparseable_http_gets_the_error_shape(server: ServerProcess, request_bytes: bytes) -> None:
    head, _, body = _exchange(server, request_bytes).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_http" and error["type"] == "invalid_request_error"


def test_a_large_head_under_the_bound_and_pipelined_requests_are_served(
    server: ServerProcess,
) -> None:
    body = json.dumps({"query": "is a big head fine", "model": "m"}).encode()
    one = (
        _LOOKUP_HEAD
        + f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Padding: {'a' * 12_000}\r\n\r\n".encode()
        + body
    )
    last = one.replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\nConnection: close\r\n")
    # Sent in one write, so the second head starts inside the read that ends the first body.
    raw = _exchange(server, one + last)
    assert raw.count(b"HTTP/1.1 200") == 2, raw[:300]


# -- NaN and Infinity outside bodies --------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"X-Semcache-TTL": "nan"}, "X-Semcache-TTL"),
        ({"X-Semcache-TTL": "inf"}, "X-Semcache-TTL"),
        ({"Cache-Control": "max-age=nan"}, "max-age"),
        ({"Cache-Control": "max-age=-inf"}, "max-age"),
        ({"X-Semcache-Threshold": "NaN"}, "X-Semcache-Threshold"),
    ],
)
def test_non_finite_header_numbers_are_a_400(
    http: httpx.Client, headers: dict[str, str], words: str
) -> None:
    r = http.post("/v1/chat/completions", json=chat("hi"), headers={**HEADERS, **headers})
    assert words in assert_error(r, 400, "invalid_header")


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_non_finite_usage_times_are_a_400(http: httpx.Client, value: str) -> None:
    r = http.get("/v1/usage", params={"since": value}, headers=HEADERS)
    assert_error(r, 400, "invalid_time")


# -- the smaller ones ---------------------------------------------------------------------------


def test_api_description_needs_a_key_when_keys_are_configured(http: httpx.Client) -> None:
    assert_error(http.get("/openapi.json"), 401, "missing_api_key")
    described = http.get("/openapi.json", headers=HEADERS)
    assert described.status_code == 200 and "/v1/cache/lookup" in described.json()["paths"]
    for page in ("/docs", "/redoc"):
        assert http.get(page).status_code == 404


def test_a_long_last_message_is_proxied_but_never_embedded_or_stored(
    server: ServerProcess, sim: RunningSimulator
) -> None:
    client = openai_client(server)
    long_text = "Please summarise this: " + "words " * 60  # over max_query_chars=200
    statuses = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model=GPT, messages=[{"role": "user", "content": long_text}]
        )
        statuses.append(raw.headers["x-semcache-status"])
    assert statuses == ["MISS", "MISS"]
    time.sleep(0.3)  # the background store would have run by now
    log = (Path(server.args[2]) / "server.log").read_text()
    assert "never retrieved" not in log
    assert "Traceback" not in log


def test_a_dropped_plain_answer_is_a_502(server: ServerProcess) -> None:
    client = openai_client(server)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model=GPT,
            messages=chat(uuid.uuid4().hex)["messages"],
            extra_headers={"X-Sim-Fault": "drop"},
        )
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_bad_response"  # type: ignore[index]


def test_storage_errors_name_the_cause_not_sqlalchemy(tmp_path: Path) -> None:
    env = {"SEMCACHE_API_KEYS": f"{KEY}=t", "SEMCACHE_STORE_WRITE_TIMEOUT_S": "0.3"}
    with ServerProcess(["serve", "--data-dir", str(tmp_path)], env=env) as running:
        holder = sqlite3.connect(tmp_path / "semcache.db", timeout=0, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            r = httpx.post(
                running.url + "/v1/cache/store",
                json={"query": "locked out?", "model": "m", "response": 1},
                headers=HEADERS,
                timeout=20,
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    message = assert_error(r, 503, "store_busy")
    assert r.headers["retry-after"] == "1"
    for leak in ("sqlalche", "INSERT", "[SQL", "Background on this error"):
        assert leak not in message
