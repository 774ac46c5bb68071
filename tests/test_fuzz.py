"""Property-based fuzzing of every endpoint of a real ``semcache serve`` (hypothesis).

What is generated, what is checked, how failures are collected and shrunk, and the
SEMCACHE_FUZZ_* knobs: see the docstring of fuzz_runner.py. The strategies are in
fuzz_strategies.py (and fuzz_values.py, fuzz_headers.py, fuzz_bodies.py), the answer checks in
fuzz_checks.py. This module holds the server fixture and the tests, with the regression cases.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fuzz_request import FREE_KEY, KEY, NONCE, Req
from fuzz_runner import EXAMPLES, MIN_REQUESTS, SCALE, TIMEOUT_S, Fuzzer, run_family
from fuzz_strategies import (
    arbitrary_json_requests,
    cache_aside_requests,
    get_requests,
    nested,
    proxy_requests,
    raw_byte_requests,
)
from fuzz_values import encode
from proxy_fixtures import semcache_in_front_of
from simulator_helpers import serve_simulator

# --------------------------------------------------------------------------------------------
# The server


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    data = tmp_path_factory.mktemp("fuzz")
    with (
        serve_simulator() as sim,
        semcache_in_front_of(
            sim,
            data,
            api_keys=f"{KEY}=fuzz,{FREE_KEY}=fuzz-free:free",
            upstream_read_timeout_s="5",
            sweep_interval_s="1",
        ) as server,
        httpx.Client(
            base_url=server.url,
            timeout=httpx.Timeout(TIMEOUT_S),
            limits=httpx.Limits(max_keepalive_connections=4),
        ) as client,
    ):
        yield Fuzzer(server=server, client=client, log_path=data / "server.log")


# --------------------------------------------------------------------------------------------
# The fuzz tests, one per family


def test_fuzz_cache_aside(fuzzer: Fuzzer) -> None:
    run_family(fuzzer, "cache_aside", cache_aside_requests())


def test_fuzz_proxy(fuzzer: Fuzzer) -> None:
    run_family(fuzzer, "proxy", proxy_requests())


def test_fuzz_arbitrary_json(fuzzer: Fuzzer) -> None:
    run_family(fuzzer, "arbitrary_json", arbitrary_json_requests())


def test_fuzz_raw_bytes(fuzzer: Fuzzer) -> None:
    run_family(fuzzer, "raw_bytes", raw_byte_requests())


def test_fuzz_get_endpoints(fuzzer: Fuzzer) -> None:
    run_family(fuzzer, "get", get_requests())


# --------------------------------------------------------------------------------------------
# Known bad inputs, fixed as regressions

AUTH = (("Authorization", f"Bearer {KEY}".encode()),)


def _post(route: str, body: bytes, *more: tuple[str, bytes], reject: str | None = None) -> Req:
    return Req("POST", route, body=body, headers=AUTH + more, must_reject=reject)


def _chat(text: str = f"hi {NONCE}", **fields: Any) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    return encode({**body, **fields})


LOOKUP = b'{"query": "regression %s", "model": "gpt-4o-mini", "threshold": ' % NONCE.encode()
REGRESSIONS: dict[str, list[Req]] = {
    # Sent twice: the second must not hang on a single-flight the first left behind.
    "stream_options_string": [
        _post("/v1/chat/completions", b, reject="stream_options must be an object")
        for b in [_chat(f"poisoned? {uuid.uuid4().hex}", stream=True, stream_options="x")] * 2
    ],
    "nested_50000": [
        _post(
            "/v1/cache/lookup",
            b'{"query": "q", "model": "m", "context": ' + nested(50_000, "array") + b"}",
        ),
        _post("/v1/cache/lookup", nested(50_000, "array")),
    ],
    "lone_surrogate_query": [
        _post("/v1/cache/lookup", b'{"query": "a \\ud800 b", "model": "gpt-4o-mini"}'),
        _post("/v1/cache/store", b'{"query": "a \\ud800 b", "model": "m", "response": 1}'),
    ],
    "huge_integer": [_post("/v1/cache/lookup", LOOKUP + b"9" * 5000 + b"}")],
    "content_number": [
        _post(
            "/v1/chat/completions",
            encode({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": 123}]}),
        )
    ],
    "system_number": [
        _post(
            "/v1/messages",
            encode(
                {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 16,
                    "system": 5,
                    "messages": [{"role": "user", "content": f"hi {NONCE}"}],
                }
            ),
        )
    ],
    "nan_response_then_hit": [
        _post(
            "/v1/cache/store",
            b'{"query": "nan regression", "model": "gpt-4o-mini", "response": NaN}',
        ),
        _post("/v1/cache/lookup", b'{"query": "nan regression", "model": "gpt-4o-mini"}'),
        Req("GET", "/v1/cache/entries/{id}", headers=AUTH, entry=("real", -1)),
    ],
    "nan_ttl": [
        _post(
            "/v1/cache/store",
            b'{"query": "ttl regression", "model": "m", "response": 1, "ttl_s": NaN}',
        )
    ],
    "ttl_header_nan": [
        _post("/v1/chat/completions", _chat(), ("X-Semcache-TTL", b"nan"), reject="TTL nan")
    ],
    "usage_since_nan": [
        Req("GET", "/v1/usage", headers=AUTH, params=(("since", "nan"),), must_reject="since=nan")
    ],
    # Found by this fuzzer: the OpenAI wire counts a top-level "system" as a system message
    # without checking it (TypeError: 'int' object is not iterable).
    "chat_system_not_text": [
        _post("/v1/chat/completions", _chat(system=system)) for system in [5, 1.5, True, {"a": 1}]
    ],
    # Found by this fuzzer: the model name is echoed in X-Semcache-Model, so one that is not
    # latin-1 answered 500 and one with CR/LF, NUL or a trailing space dropped the connection.
    "model_names_in_headers": [
        _post(route, encode({"model": model, "stream": stream, **extra}))
        for model in ["\U0001f600", "e\u0301", "gpt-4o-mini\r\nX-Injected: 1", "gpt-4o-mini "]
        for stream in (False, True)
        for route, extra in (
            (
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": f"model {NONCE}"}]},
            ),
            (
                "/v1/messages",
                {"max_tokens": 16, "messages": [{"role": "user", "content": f"model {NONCE}"}]},
            ),
        )
    ],
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_known_bad_input(fuzzer: Fuzzer, name: str) -> None:
    fuzzer.start("regression")
    for req in REGRESSIONS[name]:
        fuzzer.send(req)
    fuzzer.assert_clean()


def test_long_token_run_does_not_stall_the_server(fuzzer: Fuzzer) -> None:
    """Found by this fuzzer: one run of a single letter tokenizes in quadratic time (12,000
    letters took ~5 s, 20,000 ~13 s) on the event loop, and /healthz waited for it."""
    fuzzer.start("regression")
    req = _post("/v1/chat/completions", _chat("q" * 12_000 + f" {NONCE}"))
    sender = threading.Thread(target=fuzzer.send, args=(req,))
    sender.start()
    time.sleep(0.3)
    with httpx.Client(base_url=fuzzer.server.url, timeout=TIMEOUT_S) as other:
        started = time.monotonic()
        status = other.get("/healthz").status_code
        waited = time.monotonic() - started
    sender.join()
    assert (status, waited < 1.0) == (200, True), f"/healthz took {waited:.1f} s"
    fuzzer.assert_clean()


def test_enough_requests_were_sent(fuzzer: Fuzzer) -> None:
    """Runs last: the whole module sent at least MIN_REQUESTS generated requests."""
    fuzzer.health()
    if any(fuzzer.sent[family] == 0 for family in EXAMPLES):
        pytest.skip("only part of the module ran")
    generated = sum(fuzzer.sent[family] for family in EXAMPLES)
    print(f"fuzzed requests: {generated} {dict(fuzzer.sent)}")
    if SCALE >= 1:
        assert generated >= MIN_REQUESTS, dict(fuzzer.sent)
