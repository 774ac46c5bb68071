"""Property-based fuzzing of every endpoint of a real ``semcache serve`` (hypothesis).

One server process sits in front of the upstream simulator. Five families of generated
requests go to it over one keep-alive client:

- near-valid cache-aside requests (lookup, store, entries, wrong-hits, invalidate, stats),
- near-valid proxy requests (``/v1/chat/completions``, ``/v1/messages``), plain and streamed,
- arbitrary JSON values as the body of every POST endpoint,
- raw bytes that are almost JSON: invalid UTF-8, truncation, ``NaN``/``Infinity``/``1e999``,
  lone-surrogate escapes, arrays nested tens of thousands deep, integers of thousands of digits,
- GET endpoints with generated query strings (``/v1/usage``) and ids, other methods and
  unknown or odd routes (a framework redirect from ``/route/`` to ``/route`` is accepted),

each with generated headers (Cache-Control, X-Semcache-*, Content-Type, a missing or wrong key).

The property: every answer is a 2xx, or a 4xx in the error shape
``{"error": {"type", "message", "code"}}`` (on ``/v1/messages`` Anthropic's
``{"type": "error", "error": {"type", "message"}}`` too); never a 5xx, never a hang (15 s), and
``GET /healthz`` keeps answering 200. A proxy request whose TTL, threshold or max-age header is
not a finite number in range must be refused with a 4xx.

Failures are collected rather than raised inside hypothesis (its shrinker would resend
thousands of requests to a live server): each test runs all its examples, then fails once,
listing every distinct failure (endpoint, problem, the server's traceback line) with the
smallest input that still causes it, found by a greedy minimizer of at most SHRINK_BUDGET
requests per failure. Environment knobs: ``SEMCACHE_FUZZ_EXAMPLES_SCALE`` (a float) runs more
or fewer examples, ``SEMCACHE_FUZZ_SEED`` explores another seed than the fixed default, and
``SEMCACHE_FUZZ_DUMP=DIR`` writes each failing request to DIR as JSON.

Generation is derandomized, so a run is reproducible for a given version of this file (the
examples change when it or other local source changes: hypothesis draws constants from it).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from proxy_fixtures import semcache_in_front_of
from servers import ServerProcess
from simulator_helpers import serve_simulator

KEY = "sk-fuzz"
FREE_KEY = "sk-fuzz-free"  # a key on the shipped "free" tier: max_tokens clamped, history trimmed
TIMEOUT_S = 15.0
HEALTH_EVERY = 100
MIN_REQUESTS = 2_000
# Hangs cost TIMEOUT_S each; past this many the server is treated as wedged and the run stops.
MAX_TIMEOUTS = 4
NONCE = "@@N@@"  # replaced by a fresh number in every request that carries it
SCALE = float(os.environ.get("SEMCACHE_FUZZ_EXAMPLES_SCALE", "1"))
SEED = os.environ.get("SEMCACHE_FUZZ_SEED") or None

# Examples per family; together with the repeats of successful proxy requests they send more
# than MIN_REQUESTS requests.
EXAMPLES = {
    "cache_aside": 600,
    "proxy": 450,
    "arbitrary_json": 350,
    "raw_bytes": 400,
    "get": 300,
}


def _n(family: str) -> int:
    return max(1, int(EXAMPLES[family] * SCALE))


def fuzz_settings(family: str) -> Callable[[Any], Any]:
    """Reproducible by default (derandomize); SEMCACHE_FUZZ_SEED=N explores another seed."""
    chosen = settings(
        max_examples=_n(family),
        deadline=None,
        derandomize=SEED is None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )

    def apply(test: Any) -> Any:
        test = chosen(test)
        return test if SEED is None else seed(int(SEED))(test)

    return apply


# --------------------------------------------------------------------------------------------
# The request, the checks and the failure report


@dataclass(frozen=True)
class Req:
    method: str
    path: str  # the route, with {id} where an entry id goes
    body: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    entry: tuple[str, Any] | None = None  # ("real", index) or ("raw", text) for {id}
    must_reject: str | None = None  # why a 2xx would be wrong
    repeat: bool = False  # on a 2xx, send it once more (a hit) with stream flipped

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    def describe(self, limit: int = 600) -> str:
        parts = [self.label]
        if self.entry is not None:
            parts.append(f"id={self.entry!r}")
        if self.params:
            parts.append(f"params={list(self.params)!r}")
        if self.headers:
            parts.append(f"headers={dict(self.headers)!r}")
        if self.body is not None:
            parts.append(f"body={_shorten(self.body, limit)}")
        return " ".join(parts)

    def size(self) -> int:
        return len(self.describe(10**9))


def _shorten(raw: bytes, limit: int) -> str:
    text = repr(raw)
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]}...<{len(raw)} bytes>...{text[-limit // 4 :]}"


@dataclass
class Failure:
    label: str
    problem: str
    server_line: str
    example: Req
    count: int = 1


class FatalServerError(AssertionError):
    """The server stopped answering; nothing after this would mean anything."""


_TRACE_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*)$", re.M)
SHRINK_BUDGET = 40  # requests spent minimizing each distinct failure
SHRINK_TIMEOUT_S = 5.0


def _signature(problem: str, server_line: str) -> tuple[str, str]:
    """What makes two failures the same: the kind of problem and the server's error line,
    with numbers (positions, timestamps, digit counts) and quoted text blanked out."""
    kind = problem.split(" ", 1)[0] if problem[:1].isdigit() else problem
    kind = re.sub(r"\d+(\.\d+)? s\b", "N s", kind)
    if " although " in problem:
        kind = problem.split(" although ", 1)[1].split(":", 1)[0].split("=", 1)[0]
    line = re.sub(r"^\S+ \S+ (?=[A-Z]+ )", "", server_line)  # the log timestamp
    line = re.sub(r"'[^'\s]*'|\"[^\"\s]*\"|b'.*'", "'…'", line)
    line = re.sub(r"\bcharacters\b", "character", line)
    return kind[:160], re.sub(r"\d+", "N", line)


@dataclass
class Fuzzer:
    server: ServerProcess
    client: httpx.Client
    log_path: Path
    sent: Counter[str] = field(default_factory=Counter)
    failures: dict[tuple[str, str, str], Failure] = field(default_factory=dict)
    entry_ids: list[str] = field(default_factory=list)
    nonce: int = 0
    timeouts: int = 0
    since_health: int = 0
    family: str = "regression"

    # -- sending ------------------------------------------------------------------------------

    def fresh(self) -> str:
        self.nonce += 1
        return str(self.nonce)

    def url(self, req: Req) -> str:
        path = req.path
        if req.entry is not None:
            kind, value = req.entry
            if kind == "real" and self.entry_ids:
                entry_id = self.entry_ids[value % len(self.entry_ids)]
            elif kind == "real":
                entry_id = "no-entry-stored-yet"
            else:
                entry_id = str(value)
            encoded = quote(entry_id.encode("utf-8", "surrogatepass"), safe="")
            path = path.replace("{id}", encoded or "%20")
        return path

    def exchange(
        self, req: Req, timeout: float = TIMEOUT_S
    ) -> tuple[httpx.Response | None, str | None, int, bytes | None]:
        """One request: (response or None, what was wrong or None, log offset, body sent)."""
        body = req.body
        if body is not None and NONCE.encode() in body:
            body = body.replace(NONCE.encode(), self.fresh().encode())
        offset = self._log_size()
        started = time.monotonic()
        for attempt in (1, 2):
            try:
                with self.client.stream(
                    req.method,
                    self.url(req),
                    content=body,
                    headers=[(k.encode("latin-1"), v) for k, v in req.headers],
                    params=list(req.params),
                    timeout=timeout,
                ) as response:
                    response.read()
                break
            except httpx.TimeoutException as exc:
                self.timeouts += 1
                return None, f"no answer in {timeout:.0f} s ({type(exc).__name__})", offset, body
            except httpx.HTTPError as exc:
                # Once more on a fresh connection: the server may have closed this keep-alive
                # one after an earlier answer (uvicorn does after an unhandled error), which
                # says nothing about this request. Twice without an answer is a failure.
                # (A fresh nonce, so the retry cannot join a single-flight the first left.)
                if attempt == 2:
                    return None, f"no answer: {type(exc).__name__}: {exc}", offset, body
                if req.body is not None and NONCE.encode() in req.body:
                    body = req.body.replace(NONCE.encode(), self.fresh().encode())
                started = time.monotonic()
        elapsed = time.monotonic() - started
        problem = check_answer(req, response)
        if problem is None and elapsed > timeout:
            problem = f"answered after {elapsed:.1f} s"
        return response, problem, offset, body

    def send(self, req: Req) -> httpx.Response | None:
        """Send one request, check the answer and record what was wrong with it."""
        self.sent[self.family] += 1
        response, problem, offset, body = self.exchange(req)
        if problem is not None:
            self.record(req, problem, offset)
        if response is None:
            self._after_no_answer()
            return None
        if problem is None and req.path == "/v1/cache/store" and response.status_code == 201:
            entry_id = response.json().get("id")
            if isinstance(entry_id, str):
                self.entry_ids.append(entry_id)
                del self.entry_ids[:-200]
        self.since_health += 1
        if self.since_health >= HEALTH_EVERY:
            self.health()
        if req.repeat and problem is None and 200 <= response.status_code < 300 and body:
            self.send(replace(req, body=_flip_stream(body), repeat=False))
        return response

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _after_no_answer(self) -> None:
        if not self._healthy(timeout=5):
            raise FatalServerError(
                f"GET /healthz failed after a request got no answer\n{self.report()}{self.tail()}"
            )
        if self.timeouts >= MAX_TIMEOUTS:
            raise FatalServerError(
                f"{self.timeouts} requests hung; stopping the run\n{self.report()}{self.tail()}"
            )

    def _healthy(self, timeout: float = TIMEOUT_S) -> bool:
        try:
            return self.client.get("/healthz", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, family: str) -> None:
        """Begin a test: forget earlier failures, and give a server that an earlier test left
        busy up to a minute to answer /healthz again."""
        self.family = family
        self.failures.clear()
        self.timeouts = 0
        deadline = time.monotonic() + 60
        while not self._healthy(timeout=5):
            if time.monotonic() > deadline:
                raise FatalServerError("GET /healthz does not answer 200" + self.tail())
            time.sleep(1)

    def health(self) -> None:
        self.since_health = 0
        if not self._healthy():
            raise FatalServerError(
                f"GET /healthz stopped answering 200\n{self.report()}{self.tail()}"
            )

    # -- failures -----------------------------------------------------------------------------

    def record(self, req: Req, problem: str, log_offset: int) -> None:
        line = self._server_line(log_offset)
        key = (req.label, *_signature(problem, line))
        found = self.failures.get(key)
        if found is None:
            self.failures[key] = Failure(req.label, problem, line, req)
        else:
            found.count += 1
            if req.size() < found.example.size():
                found.example = req

    def _server_line(self, offset: int) -> str:
        time.sleep(0.02)  # let the server flush the traceback
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                new = log.read(1_000_000).decode("utf-8", "replace")
        except OSError:
            return ""
        lines = _TRACE_LINE.findall(new)
        if lines:
            return str(lines[-1][0])[:300]
        for text in reversed(new.splitlines()):
            if "WARNING" in text or "ERROR" in text:
                return text.strip()[:300]
        return ""

    def shrink(self, key: tuple[str, str, str], failure: Failure) -> None:
        """Greedily drop headers, keys and list items (and cut strings) while the same
        failure keeps happening, in at most SHRINK_BUDGET requests."""
        if failure.problem.startswith("no answer in") or failure.example.body is None:
            return  # a hang costs a timeout per try
        try:
            raw = failure.example.body
            value = json.loads(raw.decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError, UnicodeDecodeError):
            return
        ascii_only = raw.isascii()
        budget = SHRINK_BUDGET
        current = failure.example
        progress = True
        while progress and budget > 0:
            progress = False
            for candidate in _smaller_requests(current, value, ascii_only):
                if budget <= 0:
                    break
                budget -= 1
                self.sent["shrink"] += 1
                _, problem, offset, _ = self.exchange(candidate[0], timeout=SHRINK_TIMEOUT_S)
                if problem is None:
                    continue
                if (candidate[0].label, *_signature(problem, self._server_line(offset))) == key:
                    current, value = candidate
                    progress = True
                    break
        failure.example = current

    def dump(self) -> None:
        """With SEMCACHE_FUZZ_DUMP=DIR, write each failure's smallest request to DIR."""
        folder = os.environ.get("SEMCACHE_FUZZ_DUMP")
        if not folder:
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        for n, failure in enumerate(self.failures.values()):
            req = failure.example
            record = {
                "problem": failure.problem,
                "server_line": failure.server_line,
                "method": req.method,
                "path": self.url(req),
                "params": list(req.params),
                "headers": {k: v.decode("latin-1") for k, v in req.headers},
                "body_latin1": None if req.body is None else req.body.decode("latin-1"),
            }
            name = f"{self.family}-{n:02d}.json"
            (Path(folder) / name).write_text(json.dumps(record, indent=1), "utf-8")

    def report(self) -> str:
        out = []
        for failure in sorted(self.failures.values(), key=lambda f: (f.label, f.problem)):
            out.append(
                f"- {failure.label}: {failure.problem} (x{failure.count})\n"
                f"    server: {failure.server_line or '(nothing logged)'}\n"
                f"    smallest: {failure.example.describe()}"
            )
        return "\n".join(out)

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return "\n(no server log)"
        return "\n--- server log tail ---\n" + "\n".join(text.splitlines()[-lines:])

    def assert_clean(self) -> None:
        self.health()
        if not self.failures:
            return
        if self.family != "regression":  # those inputs are small already
            for key, failure in list(self.failures.items()):
                self.shrink(key, failure)
        found = len(self.failures)
        report = self.report()
        self.dump()
        self.failures.clear()
        self.health()
        raise AssertionError(
            f"{found} distinct failure(s) in family {self.family!r} "
            f"({self.sent[self.family]} requests):\n{report}{self.tail(40)}"
        )


def _smaller_values(value: Any) -> Iterator[Any]:
    """Values one step smaller than ``value``: an item dropped, a string cut, recursively."""
    if isinstance(value, dict):
        for k in value:
            yield {key: v for key, v in value.items() if key != k}
        for k, v in value.items():
            for smaller in _smaller_values(v):
                yield {**value, k: smaller}
    elif isinstance(value, list):
        for i in range(len(value)):
            yield value[:i] + value[i + 1 :]
        for i, v in enumerate(value):
            for smaller in _smaller_values(v):
                yield [*value[:i], smaller, *value[i + 1 :]]
    elif isinstance(value, str) and len(value) > 8:
        yield value[: len(value) // 2]
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1000:
        yield 1000 if value > 0 else -1000


def _smaller_requests(req: Req, value: Any, ascii_only: bool) -> Iterator[tuple[Req, Any]]:
    for name, _ in req.headers:
        if name.lower() not in ("authorization", "x-api-key"):
            fewer = tuple(h for h in req.headers if h[0] != name)
            reject = bad_control_header(fewer) if req.path in PROXY else req.must_reject
            yield replace(req, headers=fewer, must_reject=reject), value
    for smaller in _smaller_values(value):
        yield replace(req, body=encode(smaller, ascii_only)), smaller


def _flip_stream(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if not isinstance(data, dict):
        return body
    data["stream"] = not data.get("stream")
    return json.dumps(data).encode("utf-8", "surrogatepass")


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def check_answer(req: Req, response: httpx.Response) -> str | None:
    """What is wrong with this answer, or None."""
    status = response.status_code
    if req.method == "HEAD" and status < 500:
        return None  # no body to check
    if status >= 500:
        return f"{status} {_shorten(response.content, 200)}"
    if 300 <= status < 400 and _slash_redirect(req, response):
        return None  # the framework's redirect from "/route/" to "/route"
    if status < 200 or 300 <= status < 400:
        return f"unexpected status {status}"
    ctype = response.headers.get("content-type", "")
    if status < 300:
        if req.must_reject:
            return f"{status} although {req.must_reject}"
        if ctype.startswith("text/event-stream"):
            text = response.content.decode("utf-8", "replace")
            if "event: error" in text or '"upstream_error"' in text:
                return f"{status} stream carried an error event: {_shorten(response.content, 300)}"
            return None
        if ctype.startswith("application/json"):
            try:
                _strict_json(response.content.decode("utf-8"))
            except ValueError as exc:
                return f"{status} with a body that is not strict JSON: {exc}"
        return None
    # A 4xx must be in the error shape.
    try:
        body = _strict_json(response.content.decode("utf-8"))
    except ValueError:
        return f"{status} with a non-JSON body {_shorten(response.content, 200)}"
    if _openai_error_shape(body):
        return None
    if req.path == "/v1/messages" and _anthropic_error_shape(body):
        return None
    return f"{status} not in the error shape: {_shorten(response.content, 300)}"


def _slash_redirect(req: Req, response: httpx.Response) -> bool:
    location = httpx.URL(response.headers.get("location", ""))
    return req.path.endswith("/") and location.path == response.url.path.rstrip("/")


def _openai_error_shape(body: Any) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return False
    error = body["error"]
    return all(isinstance(error.get(k), str) for k in ("type", "message", "code"))


def _anthropic_error_shape(body: Any) -> bool:
    if not isinstance(body, dict) or body.get("type") != "error":
        return False
    error = body.get("error")
    return isinstance(error, dict) and all(
        isinstance(error.get(k), str) for k in ("type", "message")
    )


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


def run_family(fuzzer: Fuzzer, family: str, strategy: st.SearchStrategy[Req]) -> None:
    fuzzer.start(family)
    fatal: list[FatalServerError] = []

    @fuzz_settings(family)
    @given(req=strategy)
    def fuzz(req: Req) -> None:
        if fatal:
            return  # the server is wedged: skip the rest instead of timing out on each
        try:
            fuzzer.send(req)
        except FatalServerError as exc:
            fatal.append(exc)

    fuzz()
    if fatal:
        fuzzer.dump()
        raise fatal[0]
    fuzzer.assert_clean()


# --------------------------------------------------------------------------------------------
# Strategies: values


@st.composite
def _pick(draw: st.DrawFn, pairs: tuple[tuple[int, st.SearchStrategy[Any]], ...]) -> Any:
    roll = draw(st.integers(0, sum(w for w, _ in pairs) - 1))
    for weight, strategy in pairs:
        if roll < weight:
            return draw(strategy)
        roll -= weight
    raise AssertionError("unreachable")


def pick(*pairs: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, chosen with the given weights."""
    return _pick(pairs)


ODD_STRINGS = [
    "",
    " ",
    "\t\n",
    "\x00",
    "a\x00b",
    "\ud800",  # a lone surrogate: an escape with ensure_ascii, invalid UTF-8 without
    "a \ud800 b",
    "\udfff\ud800",
    "\ufeff",
    "\u202eevil",
    "\u2028\u2029",
    "e\u0301\u0301\u0301",
    "\U0001f600\U0001f44d\U0001f3fd",
    "\U0010ffff",
    "\uffff",
    "null",
    "NaN",
    "Infinity",
    "%s%n%x",
    "{{ query }}",
    "../../etc/passwd",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "x" * 201,
    "é" * 300,
    "q" * 20_001,
]
odd_text = pick(
    (3, st.text(max_size=30)),
    (2, st.sampled_from(ODD_STRINGS)),
    (1, st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)),
)

PHRASES = [
    "How do I reset my password?",
    "How can I reset my password?",
    "What is the capital of France?",
    "Tell me about Paris",
    "How old is it?",
    "Explain quicksort in one sentence",
    "Translate 'good morning' to French",
    "What is the refund policy?",
]
# Cache-aside queries repeat (hits), proxy texts never do (see Fuzzer.send and NONCE).
query_text = pick(
    (5, st.sampled_from(PHRASES)),
    (3, st.sampled_from(PHRASES).map(lambda p: f"{p} {NONCE}")),
    (2, odd_text),
)
chat_text = pick(
    (7, st.sampled_from(PHRASES).map(lambda p: f"{p} {NONCE}")),
    (2, odd_text.map(lambda t: f"{t} {NONCE}")),
    (1, odd_text),
)

HUGE_INTS = [2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 10**400]
scalars = pick(
    (2, st.none()),
    (2, st.booleans()),
    (3, st.integers()),
    (1, st.sampled_from(HUGE_INTS)),
    (3, st.floats()),  # NaN and infinities go out as json.dumps writes them
    (4, odd_text),
)
keys = pick((4, st.text(max_size=10)), (1, st.sampled_from(ODD_STRINGS[:16])))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=10,
)


WRONG_TYPES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    123,
    1.5,
    math.nan,
    math.inf,
    -math.inf,
    10**400,
    "",
    "x",
    "\ud800",
    [],
    [1],
    ["x"],
    {},
    {"a": 1},
    [{}],
]
junk = pick((2, st.sampled_from(WRONG_TYPES)), (1, json_values))
# How many fields a near-valid object gets wrong: (weight, count).
TOP_MUTATIONS = ((5, 0), (9, 1), (4, 2), (2, 3))
NESTED_MUTATIONS = ((15, 0), (4, 1), (1, 2))


@st.composite
def obj(
    draw: st.DrawFn,
    required: dict[str, st.SearchStrategy[Any]],
    optional: dict[str, st.SearchStrategy[Any]] | None = None,
    mutations: tuple[tuple[int, int], ...] = TOP_MUTATIONS,
) -> dict[str, Any]:
    """A valid JSON object of these fields (the optional ones sometimes), then a few mutations:
    a field replaced by a wrong type or random JSON, a field dropped, an unknown key added."""
    optional = optional or {}
    out: dict[str, Any] = {name: draw(valid) for name, valid in required.items()}
    for name, valid in optional.items():
        if draw(st.integers(0, 2)) == 0:
            out[name] = draw(valid)
    count = draw(pick(*((w, st.just(n)) for w, n in mutations)))
    names = [*required, *optional]
    for _ in range(count):
        action = draw(st.integers(0, 9))
        if action < 7 and names:
            out[draw(st.sampled_from(names))] = draw(junk)
        elif action < 9 and out:
            out.pop(draw(st.sampled_from(sorted(out))))
        else:
            out[draw(keys)] = draw(junk)
    return out


def encode(value: Any, ascii_only: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


names = pick((6, st.sampled_from(["", "fuzz", "docs", "v1", "v2"])), (2, odd_text))
finite = st.floats(allow_nan=False, allow_infinity=False)
numbers = pick(
    (4, finite), (2, st.integers()), (1, st.sampled_from([math.nan, math.inf, -math.inf]))
)

ROLES = ["user", "assistant", "system", "tool", "developer", "function"]
roles = pick(
    (12, st.sampled_from(ROLES)),
    (2, st.sampled_from(["", "USER", " user", "bot", "model"])),
    (1, json_values),
)
content_part = pick(
    (
        5,
        st.fixed_dictionaries(
            {"type": st.just("text"), "text": pick((4, chat_text), (1, json_values))}
        ),
    ),
    (
        2,
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(
                    ["image_url", "image", "tool_use", "tool_result", "document", "input_audio"]
                )
            },
            optional={
                "image_url": json_values,
                "source": json_values,
                "content": json_values,
                "id": odd_text,
                "input": json_values,
                "cache_control": json_values,
            },
        ),
    ),
    (1, st.dictionaries(keys, json_values, max_size=3)),
)
content = pick(
    (14, chat_text),
    (3, st.lists(content_part, min_size=0, max_size=3)),
    (1, st.none()),
)
message = pick(
    (
        30,
        obj(
            {"role": roles, "content": content},
            {
                "name": odd_text,
                "tool_calls": json_values,
                "tool_call_id": odd_text,
                "cache_control": json_values,
            },
            mutations=NESTED_MUTATIONS,
        ),
    ),
    (1, junk),
)
messages = pick(
    (20, st.lists(message, min_size=1, max_size=4)),
    (1, st.just([])),
    (1, junk),
)
context = st.lists(message, max_size=3)

# --------------------------------------------------------------------------------------------
# Strategies: headers


def _latin1(text: str) -> bytes:
    return text.strip().encode("latin-1")


header_text = st.text(
    st.characters(
        codec="latin-1",
        exclude_categories=["Cc"],  # no control characters: h11 refuses to send them
    ),
    max_size=30,
).map(str.strip)
NUMBER_HEADER_VALUES = [
    "60",
    "0",
    "0.5",
    "1",
    "-1",
    "2",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e999",
    "1e308",
    "abc",
    "",
    "1_000",
    "0x10",
]
number_header = pick((3, st.sampled_from(NUMBER_HEADER_VALUES)), (1, header_text))
cache_control = pick(
    (
        4,
        st.sampled_from(
            [
                "no-cache",
                "no-store",
                "no-cache, no-store",
                "max-age=0",
                "max-age=60",
                "max-age=nan",
                "max-age=-1",
                "max-age=inf",
                "max-age=1e999",
                "max-age=",
                "max-age=abc",
                "private, max-age=10",
                "MAX-AGE=5, NO-STORE",
            ]
        ),
    ),
    (1, header_text),
)
name_header = pick((3, st.sampled_from(["fuzz", "a", "x" * 201, "é"])), (2, header_text))
content_type = pick(
    (
        4,
        st.sampled_from(
            [
                "application/json",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/json; charset=latin-1",
            ]
        ),
    ),
    (1, header_text),
)
auth_headers = pick(
    (12, st.just({"Authorization": f"Bearer {KEY}"})),
    (4, st.just({"Authorization": f"Bearer {FREE_KEY}"})),
    (2, st.just({"x-api-key": KEY})),
    (1, st.just({})),
    (
        1,
        st.sampled_from(
            [
                {"Authorization": "Bearer sk-wrong"},
                {"Authorization": "Bearer"},
                {"Authorization": f"Basic {KEY}"},
                {"Authorization": f"bearer {KEY}"},
                {"x-api-key": ""},
            ]
        ),
    ),
    (1, header_text.map(lambda t: {"Authorization": t})),
)
OPTIONAL_HEADERS: dict[str, st.SearchStrategy[str]] = {
    "Cache-Control": cache_control,
    "X-Semcache-TTL": number_header,
    "X-Semcache-Threshold": number_header,
    "X-Semcache-Namespace": name_header,
    "X-Semcache-Doc-Version": name_header,
    "X-Semcache-User": name_header,
    "X-Semcache-Feature": name_header,
    "X-Semcache-Urgency": pick((2, st.sampled_from(["high", "low"])), (1, header_text)),
    "X-Semcache-Task": pick((2, st.sampled_from(["summarize", "nope"])), (1, header_text)),
    "anthropic-version": st.sampled_from(["2023-06-01", "bogus"]),
    "Content-Type": content_type,
    "Content-Encoding": st.sampled_from(["gzip", "identity", "br", "x"]),
    "Accept": st.sampled_from(["text/event-stream", "application/json", "*/*", "x/y"]),
}


@st.composite
def headers(draw: st.DrawFn) -> tuple[tuple[str, bytes], ...]:
    out = {k: v.encode("latin-1") for k, v in draw(auth_headers).items()}
    if draw(st.integers(0, 2)) > 0:
        for name, strategy in OPTIONAL_HEADERS.items():
            if draw(st.integers(0, 5)) == 0:
                out[name] = _latin1(draw(strategy))
    return tuple(out.items())


def _finite_in(raw: str, low: float, high: float | None) -> bool:
    try:
        value = float(raw)
    except ValueError:
        return False
    return math.isfinite(value) and value >= low and (high is None or value <= high)


def bad_control_header(pairs: tuple[tuple[str, bytes], ...]) -> str | None:
    """Why the proxy must refuse these headers, if it must (mirrors RequestControls)."""
    values = {k.lower(): v.decode("latin-1") for k, v in pairs}
    for name, low, high in (("x-semcache-ttl", 0.0, None), ("x-semcache-threshold", -1.0, 1.0)):
        raw = values.get(name, "").strip()
        if raw and not _finite_in(raw, low, high):
            return f"{name}: {raw!r} is not a finite number in range"
    for directive in values.get("cache-control", "").split(","):
        name, _, raw = directive.strip().lower().partition("=")
        if name == "max-age" and not _finite_in(raw, 0.0, None):
            return f"Cache-Control max-age={raw!r} is not a finite number >= 0"
    return None


# --------------------------------------------------------------------------------------------
# Strategies: requests per endpoint

MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"]
CLAUDES = ["claude-haiku-4-5", "claude-sonnet-4-5"]
entry_ref = pick(
    (6, st.integers(0, 10_000).map(lambda i: ("real", i))),
    (
        2,
        st.sampled_from(
            ["does-not-exist", "..", ".", "%", "%2e%2e", "a" * 5000, "\ud800", "é", "1 OR 1=1"]
        ).map(lambda t: ("raw", t)),
    ),
    (1, odd_text.map(lambda t: ("raw", t))),
)

models = pick((8, st.sampled_from(MODELS)), (1, names))
threshold = pick((4, st.floats(-1.5, 1.5)), (1, numbers))
lookup_body = obj(
    {"query": query_text, "model": models},
    {"namespace": names, "doc_version": names, "context": context, "threshold": threshold},
)
store_body = obj(
    {"query": query_text, "model": models, "response": json_values},
    {
        "namespace": names,
        "doc_version": names,
        "context": context,
        "ttl_s": pick((6, st.floats(1, 3600)), (2, numbers), (1, st.sampled_from(HUGE_INTS))),
        "metadata": st.dictionaries(keys, json_values, max_size=3),
    },
)
wrong_hit_body = obj({"query": query_text})
invalidate_body = obj(
    {},
    {"namespace": names, "model": models, "doc_version": names, "all": st.booleans()},
)
# Model names are echoed in response headers (X-Semcache-Model) and sent upstream.
odd_models = pick(
    (
        2,
        st.sampled_from(
            [
                "gpt-4o-mini\r\nX-Injected: 1",
                "gpt-4o-mini\n",
                "\U0001f600",
                "modèle",
                "gpt-4o-mini ",
                " gpt-4o-mini",
                "GPT-4O-MINI",
                "gpt-4o-mini\x00",
                "../../v1/models",
                "m" * 10_000,
                "no-such-model",
            ]
        ),
    ),
    (1, odd_text),
)
stream_options = pick(
    (4, st.fixed_dictionaries({"include_usage": st.booleans()})), (1, st.just({}))
)
temperature = pick((5, st.floats(0, 2)), (1, numbers))
tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.sampled_from(["get_weather", "lookup"]), "parameters": st.just({})}
            ),
        }
    ),
    max_size=2,
)
system_blocks = st.lists(
    st.fixed_dictionaries(
        {"type": st.just("text"), "text": chat_text}, optional={"cache_control": json_values}
    ),
    max_size=2,
)
chat_body = obj(
    {
        "model": pick(
            (16, st.sampled_from(MODELS)),
            (2, st.sampled_from(["cheap", *CLAUDES])),
            (3, odd_models),
        ),
        "messages": messages,
    },
    {
        "stream": st.booleans(),
        "stream_options": stream_options,
        "n": pick((4, st.just(1)), (1, st.integers(2, 3))),
        "temperature": temperature,
        "top_p": st.floats(0, 1),
        "max_tokens": pick((6, st.integers(1, 64)), (1, st.integers(1))),
        "max_completion_tokens": st.integers(1, 64),
        "stop": st.lists(odd_text, max_size=3),
        "system": pick((3, chat_text), (1, system_blocks)),
        "tools": tools,
        "user": odd_text,
        "seed": st.integers(),
        "response_format": st.just({"type": "json_object"}),
    },
)
anthropic_tools = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["get_weather", "lookup"]), "input_schema": st.just({})},
        optional={"description": odd_text},
    ),
    max_size=2,
)
messages_body = obj(
    {
        "model": pick(
            (16, st.sampled_from(CLAUDES)), (2, st.sampled_from(MODELS)), (3, odd_models)
        ),
        "max_tokens": pick((6, st.integers(1, 64)), (1, st.integers(1))),
        "messages": messages,
    },
    {
        "system": pick((3, chat_text), (2, system_blocks)),
        "stream": st.booleans(),
        "temperature": temperature,
        "top_k": st.integers(0, 100),
        "top_p": st.floats(0, 1),
        "stop_sequences": st.lists(odd_text, max_size=3),
        "metadata": st.fixed_dictionaries({"user_id": odd_text}),
        "tools": anthropic_tools,
    },
)

# (method, route, body strategy or None, weight, takes an entry id)
CACHE_ASIDE: list[tuple[str, str, st.SearchStrategy[Any] | None, int]] = [
    ("POST", "/v1/cache/lookup", lookup_body, 10),
    ("POST", "/v1/cache/store", store_body, 10),
    ("POST", "/v1/cache/entries/{id}/wrong-hits", wrong_hit_body, 3),
    ("GET", "/v1/cache/entries/{id}", None, 3),
    ("DELETE", "/v1/cache/entries/{id}", None, 1),
    ("POST", "/v1/cache/invalidate", invalidate_body, 1),
    ("GET", "/v1/cache/stats", None, 1),
]
PROXY = {"/v1/chat/completions": chat_body, "/v1/messages": messages_body}
POST_ROUTES = [
    "/v1/cache/lookup",
    "/v1/cache/store",
    "/v1/cache/entries/{id}/wrong-hits",
    "/v1/cache/invalidate",
    "/v1/chat/completions",
    "/v1/messages",
]


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


def _nested(depth: int, kind: str) -> bytes:
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
            token = _nested(depth, draw(st.sampled_from(["array", "object", "mixed"])))
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


def _bad_time(params: tuple[tuple[str, str], ...]) -> str | None:
    for name, value in params:
        if name not in ("since", "until"):
            continue
        try:
            number = float(value.strip())
        except ValueError:
            continue
        if not math.isfinite(number):
            return f"{name}={value!r} is not a finite time"
    return None


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
    must_reject = _bad_time(clean) if route == "/v1/usage" and method == "GET" else None
    return Req(
        method,
        route,
        headers=hdrs,
        params=clean,
        entry=draw(entry_ref) if "{id}" in route else None,
        must_reject=must_reject,
    )


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
            b'{"query": "q", "model": "m", "context": ' + _nested(50_000, "array") + b"}",
        ),
        _post("/v1/cache/lookup", _nested(50_000, "array")),
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
