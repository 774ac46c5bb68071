"""The hypothesis strategies for whole requests, one per fuzz family: near-valid cache-aside
and proxy requests, arbitrary JSON bodies, raw bytes that are almost JSON, and GET requests
with odd query strings, methods and routes."""

from __future__ import annotations

from typing import Any

from fuzz_bodies import CACHE_ASIDE, POST_ROUTES, PROXY, entry_ref
from fuzz_checks import bad_control_header, bad_time
from fuzz_headers import headers
from fuzz_request import NONCE, Req
from fuzz_values import encode, json_values, keys, odd_text, pick
from hypothesis import strategies as st


def _request(
    method: str,
    route: str,
    body: bytes | None,
    hdrs: tuple[tuple[str, bytes], ...],
    entry: tuple[str, Any] | None,
    **kw: Any,
) -> Req:
    must_reject = bad_control_header(hdrs) if route in PROXY else None
    return Req(
        method,
        route,
        body=body,
        headers=hdrs,
        entry=entry if "{id}" in route else None,
        must_reject=must_reject,
        **kw,
    )


@st.composite
def cache_aside_requests(draw: st.DrawFn) -> Req:
    method, route, body, _ = draw(pick(*((e[3], st.just(e)) for e in CACHE_ASIDE)))
    raw = None if body is None else encode(draw(body), draw(st.integers(0, 4)) > 0)
    return _request(method, route, raw, draw(headers()), draw(entry_ref))


@st.composite
def proxy_requests(draw: st.DrawFn) -> Req:
    route = draw(st.sampled_from(sorted(PROXY)))
    raw = encode(draw(PROXY[route]), draw(st.integers(0, 4)) > 0)
    repeat = draw(st.integers(0, 3)) == 0
    return _request("POST", route, raw, draw(headers()), None, repeat=repeat)


@st.composite
def arbitrary_json_requests(draw: st.DrawFn) -> Req:
    route = draw(st.sampled_from(POST_ROUTES))
    value = draw(pick((3, json_values), (1, st.dictionaries(keys, json_values, max_size=6))))
    raw = encode(value, draw(st.booleans()))
    return _request("POST", route, raw, draw(headers()), draw(entry_ref))


def nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'[{"a":' * (depth // 2) + b"1" + b"}]" * (depth // 2)


LITERALS = [
    b"NaN",
    b"-NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-1e999",
    b"1e-999",
    b"-0",
    b"0.0000000000000000000000001",
    b'"\\ud800"',
    b'"a \\ud800 b"',
    b'"\\udfff"',
    b'"\\udc00\\ud800"',
    b'"\\ud83d\\ude00"',
    b'"\\u0000"',
    b'"\\uDEAD"',
    b'"\\x41"',
    b"'single'",
    b"True",
    b"undefined",
    b"0x10",
    b"01",
    b"+1",
    b".5",
    b"[1,]",
    b'{"a":1,}',
    b"",
]
BAD_BYTES = [
    b"\xff",
    b"\xc3",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\x00",
    b"\xfe\xff",
]
FIELDS = [
    "query",
    "model",
    "response",
    "threshold",
    "ttl_s",
    "context",
    "metadata",
    "namespace",
    "messages",
    "temperature",
    "max_tokens",
    "n",
    "stream",
    "stream_options",
    "system",
    "top_p",
    "extra",
]


def _base_body(route: str) -> dict[str, Any]:
    text = f"How do I reset my password? {NONCE}"
    if route in ("/v1/cache/lookup", "/v1/cache/entries/{id}/wrong-hits"):
        base: dict[str, Any] = {"query": text}
        if route == "/v1/cache/lookup":
            base["model"] = "gpt-4o-mini"
        return base
    if route == "/v1/cache/store":
        return {"query": text, "model": "gpt-4o-mini", "response": {"text": "ok"}}
    if route == "/v1/cache/invalidate":
        return {"namespace": "fuzz-raw"}
    msgs = [{"role": "user", "content": text}]
    if route == "/v1/messages":
        return {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": msgs}
    return {"model": "gpt-4o-mini", "messages": msgs}


@st.composite
def raw_bodies(draw: st.DrawFn, route: str) -> bytes:
    base = _base_body(route)
    kind = draw(
        st.sampled_from(
            ["slot", "slot", "slot", "nested", "bigint", "truncated", "bad_utf8", "framing"]
        )
    )
    if kind in ("slot", "nested", "bigint"):
        if kind == "slot":
            token = draw(st.sampled_from(LITERALS))
            if draw(st.integers(0, 3)) == 0:
                token = b"[" + token + b"]"
        elif kind == "nested":
            depth = draw(
                pick(
                    (3, st.sampled_from([100, 999, 1000, 2000, 10_000, 50_000, 60_000])),
                    (1, st.integers(2, 60_000)),
                )
            )
            token = nested(depth, draw(st.sampled_from(["array", "object", "mixed"])))
        else:
            digits = draw(st.sampled_from([20, 400, 4300, 4301, 5000, 20_000]))
            token = draw(st.sampled_from([b"", b"-"])) + b"9" * digits
            if draw(st.integers(0, 3)) == 0:
                token += draw(st.sampled_from([b".5", b"e5", b"e-99999"]))
        where = draw(st.sampled_from(FIELDS))
        if where == "messages" and draw(st.booleans()):
            # Inside a message rather than instead of the list.
            base["messages"] = [{"role": "user", "content": "@@SLOT@@"}]
        elif draw(st.integers(0, 9)) == 0:
            return token  # the whole body
        else:
            base[where] = "@@SLOT@@"
        return encode(base).replace(b'"@@SLOT@@"', token)
    raw = encode(base, ascii_only=False)
    if kind == "truncated":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "bad_utf8":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from(BAD_BYTES)) + raw[at:]
    choice = draw(
        st.sampled_from(
            [
                b"\xef\xbb\xbf" + raw,  # a UTF-8 BOM
                b" \n\t " + raw + b" \n",
                raw + b" trailing",
                raw + raw,
                raw[:-1] + b', "query": "dup", "query": 1}',
                b"null",
                b"0",
                b'"just a string"',
                b"[]",
                b"{}",
                b"{" + b'"k":1,' * 50_000 + b'"z":2}',
                b"\x00" * 10,
            ]
        )
    )
    return choice


@st.composite
def raw_byte_requests(draw: st.DrawFn) -> Req:
    route = draw(st.sampled_from(POST_ROUTES))
    return _request("POST", route, draw(raw_bodies(route)), draw(headers()), draw(entry_ref))


TIME_VALUES = [
    "2026-11-01",
    "2026-11-01T10:00:00Z",
    "2026-11-01T10:00:00+05:00",
    "1700000000",
    "0",
    "-1",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e999",
    "1e300",
    "99999999999999999999",
    "2026-13-45",
    "0001-01-01",
    "9999-12-31T23:59:59",
    "",
    " ",
    "yesterday",
]
GROUPS = ["tenant", "user", "feature", "model", "day", "status", "provider", "nope"]

ODD_METHODS = ["HEAD", "OPTIONS", "PUT", "PATCH", "DELETE", "POST", "TRACE", "FOO"]
ODD_ROUTES = [
    "/",
    "/v1",
    "/v1/",
    "/v1/cache",
    "/v1/cache/entries",
    "/v1/cache/entries/",
    "/v1/cache/entries/a/b",
    "//v1/cache/stats",
    "/v1/cache/stats/",
    "/v1/../healthz",
    "/v1/cache/%2e%2e/stats",
    "/V1/CACHE/STATS",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/v1/nothing-here",
    "/healthz?x=\u00e9",
]


@st.composite
def get_requests(draw: st.DrawFn) -> Req:
    hdrs = draw(headers())
    route = draw(
        pick(
            (8, st.just("/v1/usage")),
            (2, st.just("/v1/models")),
            (2, st.just("/v1/cache/stats")),
            (2, st.just("/v1/cache/entries/{id}")),
            (1, st.sampled_from(["/healthz", "/readyz", "/metrics"])),
            (1, st.sampled_from(ODD_ROUTES)),
        )
    )
    method = draw(pick((12, st.just("GET")), (1, st.sampled_from(ODD_METHODS))))
    params: list[tuple[str, str]] = []
    if route == "/v1/usage":
        if draw(st.integers(0, 3)) > 0:
            groups = draw(st.lists(st.sampled_from(GROUPS), max_size=4))
            text = ",".join(groups) if draw(st.integers(0, 4)) else draw(odd_text)
            params.append(("group_by", text))
        for name in ("since", "until"):
            if draw(st.booleans()):
                value = draw(pick((4, st.sampled_from(TIME_VALUES)), (1, odd_text)))
                params.append((name, value))
    if draw(st.integers(0, 9)) == 0:
        params.append((draw(keys), draw(odd_text)))
    clean = tuple(
        (k.encode("utf-8", "replace").decode(), v.encode("utf-8", "replace").decode())
        for k, v in params
    )
    must_reject = bad_time(clean) if route == "/v1/usage" and method == "GET" else None
    return Req(
        method,
        route,
        headers=hdrs,
        params=clean,
        entry=draw(entry_ref) if "{id}" in route else None,
        must_reject=must_reject,
    )
