"""``POST /v1/embeddings`` in OpenAI's format: deterministic unit vectors from the text's hash.

The same item (a string or a list of token ids) always gets the same vector. ``dimensions``
shortens it as text-embedding-3 does (the leading components, normalised again);
``encoding_format: base64`` sends the float32 values little-endian, base64-encoded. The
vectors carry no meaning: similar texts are no closer than any others.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

import numpy as np
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .intake import Intake, raise_for_fault, read_request
from .responses_events import dropped_json
from .state import SimulatorState, rate_limit_headers
from .streaming import delay
from .validation import optional_int, required_str
from .wire_errors import WireError, render_openai_error

__all__ = ["add_embeddings_routes", "simulated_vector"]

_NATIVE = {"text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
_DEFAULT_NATIVE = 1536
_FIXED = frozenset({"text-embedding-ada-002"})  # models that cannot shorten their vectors
_MAX_ITEMS = 2048


def _bad(message: str, param: str = "input") -> WireError:
    return WireError(400, "invalid_request", message, param=param)


def _is_tokens(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)
    )


def _items(value: Any) -> list[Any]:
    if isinstance(value, str) or _is_tokens(value):
        items = [value]
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(v, str) or _is_tokens(v) for v in value)
    ):
        items = list(value)
    else:
        raise _bad("'$.input' is invalid. Please check the API reference.")
    if any(isinstance(item, str) and not item for item in items):
        raise _bad("'$.input' is invalid: an input must not be an empty string.")
    if len(items) > _MAX_ITEMS:
        raise _bad(f"'$.input' has {len(items)} items; the maximum is {_MAX_ITEMS}.")
    return items


def simulated_vector(item: str | list[int], model: str, dimensions: int | None) -> list[float]:
    """The item's vector: float32 values (so base64 loses nothing), unit length."""
    canonical = json.dumps([model, item], separators=(",", ":"), ensure_ascii=False)
    seed = int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big")
    native = _NATIVE.get(model, _DEFAULT_NATIVE)
    vector = np.random.default_rng(seed).standard_normal(native)[: dimensions or native]
    unit = (vector / np.linalg.norm(vector)).astype(np.float32)
    return [float(x) for x in unit]


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


async def _answer(request: Request, state: SimulatorState, intake: Intake) -> Response:
    started = time.perf_counter()
    body = intake.body
    model = required_str(body, "model")
    if "input" not in body:
        raise _bad("Missing required parameter: 'input'.")
    items = _items(body["input"])
    native = _NATIVE.get(model, _DEFAULT_NATIVE)
    dimensions = optional_int(body, "dimensions", minimum=1, maximum=native)
    if dimensions is not None and model in _FIXED:
        raise _bad("This model does not support specifying dimensions.", "dimensions")
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        raise _bad("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    tokens = sum(len(i) if isinstance(i, list) else state.tokens.count(i) for i in items)
    fault = state.take_fault(intake.options.fault)
    await raise_for_fault(fault, request, intake, state, tokens)

    answer = {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": index,
                "embedding": _encode(simulated_vector(item, model, dimensions), encoding_format),
            }
            for index, item in enumerate(items)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    headers = {
        "x-request-id": "req_" + secrets.token_hex(16),
        "openai-processing-ms": str(max(1, int((time.perf_counter() - started) * 1000))),
        **rate_limit_headers(state, tokens, "x-ratelimit-{}-{}"),
    }
    state.last_request_id = headers["x-request-id"]
    if fault is not None:
        headers["x-sim-fault-injected"] = fault
    await delay(intake.options.ttft_s)
    if fault == "drop":
        return dropped_json(answer, headers)
    return JSONResponse(answer, headers=headers)


def add_embeddings_routes(app: FastAPI, state: SimulatorState) -> None:
    """Serve ``POST /v1/embeddings`` from ``state``."""

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        try:
            intake = await read_request(request, state)
            return await _answer(request, state, intake)
        except WireError as exc:
            return render_openai_error(exc)
