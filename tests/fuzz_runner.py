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

Generation is derandomized, so a run is reproducible for a given version of these files (the
examples change when they or other local source change: hypothesis draws constants from them).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from fuzz_checks import check_answer
from fuzz_failures import (
    TRACE_LINE,
    Failure,
    FatalServerError,
    signature,
    smaller_requests,
)
from fuzz_request import NONCE, Req
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from servers import ServerProcess

TIMEOUT_S = 15.0
HEALTH_EVERY = 100
MIN_REQUESTS = 2_000
# Hangs cost TIMEOUT_S each; past this many the server is treated as wedged and the run stops.
MAX_TIMEOUTS = 4
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


SHRINK_BUDGET = 40  # requests spent minimizing each distinct failure
SHRINK_TIMEOUT_S = 5.0


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
        key = (req.label, *signature(problem, line))
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
        lines = TRACE_LINE.findall(new)
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
            for candidate in smaller_requests(current, value, ascii_only):
                if budget <= 0:
                    break
                budget -= 1
                self.sent["shrink"] += 1
                _, problem, offset, _ = self.exchange(candidate[0], timeout=SHRINK_TIMEOUT_S)
                if problem is None:
                    continue
                if (candidate[0].label, *signature(problem, self._server_line(offset))) == key:
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


def _flip_stream(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if not isinstance(data, dict):
        return body
    data["stream"] = not data.get("stream")
    return json.dumps(data).encode("utf-8", "surrogatepass")


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
