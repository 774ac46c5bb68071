"""What a fuzzed request's answer must be: a 2xx, or a 4xx in the error shape, never a 5xx;
and which generated requests the server must refuse (``must_reject``)."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
from fuzz_request import Req, shorten


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
        return f"{status} {shorten(response.content, 200)}"
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
                return f"{status} stream carried an error event: {shorten(response.content, 300)}"
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
        return f"{status} with a non-JSON body {shorten(response.content, 200)}"
    if _openai_error_shape(body):
        return None
    if req.path == "/v1/messages" and _anthropic_error_shape(body):
        return None
    return f"{status} not in the error shape: {shorten(response.content, 300)}"


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


def bad_time(params: tuple[tuple[str, str], ...]) -> str | None:
    """Why GET /v1/usage must refuse these parameters, if it must: a since/until that is a
    number but not a finite one."""
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
