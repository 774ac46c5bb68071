"""Bad input gets a 4xx in the one error shape, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import auth

GOOD = {"query": "How do I reset my password?", "model": "gpt-4o-mini"}


def assert_error(r: httpx.Response, status: int, code: str, words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    # The one error shape (OpenAI's): exactly these keys, all strings.
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "code"}
    assert all(isinstance(v, str) and v for v in body["error"].values())
    assert body["error"]["code"] == code
    assert words in body["error"]["message"]
    return dict(body["error"])


def post(client: httpx.Client, path: str, content: bytes) -> httpx.Response:
    headers = {**auth("alice"), "Content-Type": "application/json"}
    return client.post(path, content=content, headers=headers)


@pytest.mark.parametrize(
    ("content", "code", "words"),
    [
        (b"{not json", "invalid_json", "not valid JSON"),
        (b"", "empty_body", "empty"),
        (b"[1, 2]", "invalid_body", "JSON object"),
        (b'{"query": "caf\xe9", "model": "m"}', "invalid_utf8", "UTF-8"),
        (b'{"model": "m"}', "invalid_field", "query: Field required"),
        (b'{"query": "hi"}', "invalid_field", "model: Field required"),
        (b'{"query": 42, "model": "m"}', "invalid_field", "query"),
        (b'{"query": "hi", "model": "m", "treshold": 0.9}', "invalid_field", "treshold"),
        (b'{"query": "hi", "model": "m", "threshold": "high"}', "invalid_field", "threshold"),
        (b'{"query": "", "model": "m"}', "empty_query", "empty"),
        (b'{"query": "   ", "model": "m"}', "empty_query", "empty"),
        (b'{"query": "hi", "model": "m", "threshold": 1.5}', "invalid_threshold", "[-1, 1]"),
        (b'{"query": "hi", "model": "m", "threshold": -2}', "invalid_threshold", "[-1, 1]"),
        (b'{"query": "hi", "model": "m", "threshold": 0.1}', "invalid_threshold", "minimum"),
    ],
)
def test_bad_lookup_bodies(client: httpx.Client, content: bytes, code: str, words: str) -> None:
    assert_error(post(client, "/v1/cache/lookup", content), 400, code, words)
    assert client.post("/v1/cache/lookup", json=GOOD, headers=auth("alice")).status_code == 200


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"query": "hi", "model": "m"}, "invalid_field", "response: Field required"),
        ({"query": "hi", "model": "m", "response": 1, "ttl_s": -5}, "invalid_ttl", "positive"),
        ({"query": "hi", "model": "m", "response": 1, "ttl_s": 0}, "invalid_ttl", "positive"),
        ({"query": "hi", "model": "m", "response": 1, "ttl_s": 10**9}, "invalid_ttl", "maximum"),
        (
            {"query": "hi", "model": "m", "response": 1, "metadata": [1]},
            "invalid_field",
            "metadata",
        ),
        ({"query": "hi", "model": "m" * 201, "response": 1}, "invalid_field", "model"),
    ],
)
def test_bad_store_bodies(
    client: httpx.Client, body: dict[str, Any], code: str, words: str
) -> None:
    r = client.post("/v1/cache/store", json=body, headers=auth("alice"))
    assert_error(r, 400, code, words)
    stats = client.get("/v1/cache/stats", headers=auth("alice"))
    assert stats.status_code == 200


def test_oversized_query(client: httpx.Client) -> None:
    r = client.post(
        "/v1/cache/store",
        json={"query": "x" * 20_000, "model": "m", "response": 1},
        headers=auth("alice"),
    )
    assert_error(r, 400, "query_too_long", "limit")


def test_body_over_the_size_limit(client: httpx.Client) -> None:
    big = b'{"query": "' + b"a" * (5 * 1024 * 1024 + 10) + b'", "model": "m"}'
    assert_error(post(client, "/v1/cache/lookup", big), 413, "payload_too_large", "limit")

    def chunks():  # type: ignore[no-untyped-def]
        # No Content-Length: the limit must hold while the body streams in.
        for _ in range(6):
            yield b"a" * (1024 * 1024)

    r = client.post(
        "/v1/cache/lookup",
        content=chunks(),
        headers={**auth("alice"), "Content-Type": "application/json"},
    )
    assert_error(r, 413, "payload_too_large", "limit")
    assert client.post("/v1/cache/lookup", json=GOOD, headers=auth("alice")).status_code == 200


def test_unknown_entry_id(client: httpx.Client) -> None:
    r = client.delete("/v1/cache/entries/does-not-exist", headers=auth("alice"))
    assert_error(r, 404, "entry_not_found", "does-not-exist")
    r = client.get("/v1/cache/entries/does-not-exist", headers=auth("alice"))
    assert_error(r, 404, "entry_not_found", "does-not-exist")


def test_unscoped_invalidate_needs_all(client: httpx.Client) -> None:
    r = client.post("/v1/cache/invalidate", json={}, headers=auth("alice"))
    assert_error(r, 400, "unscoped_invalidate", '"all": true')


def test_auth_errors(client: httpx.Client) -> None:
    assert_error(client.post("/v1/cache/lookup", json=GOOD), 401, "missing_api_key", "API key")
    r = client.post("/v1/cache/lookup", json=GOOD, headers={"Authorization": "Bearer nope"})
    assert_error(r, 401, "invalid_api_key", "unknown")


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert_error(client.get("/v1/nothing-here"), 404, "not_found", "no such endpoint")
    r = client.get("/v1/cache/lookup", headers=auth("alice"))
    assert_error(r, 405, "method_not_allowed", "Method Not Allowed")
