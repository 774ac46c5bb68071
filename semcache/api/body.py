"""Reading request bodies: size limit, strict UTF-8, strict JSON, then a pydantic model.

Every endpoint reads its body here, so one set of rules holds everywhere: a body is UTF-8 JSON
(RFC 8259, parsed by orjson) with no NaN or Infinity, no lone surrogate, no number a double
cannot hold and no nesting deeper than ``MAX_JSON_DEPTH``. Anything else is a 400 that says
what to fix, never a 500 further down (a NaN stored would break every hit on it; a surrogate
cannot be written back out as UTF-8).
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from ..errors import InvalidRequest, PayloadTooLarge

__all__ = [
    "MAX_JSON_DEPTH",
    "describe_validation_error",
    "field_problems",
    "parse_json",
    "read_json",
    "read_model",
]

Model = TypeVar("Model", bound=BaseModel)

# Deeper than any real chat request or tool schema, and well inside what the JSON encoders
# that write the value back out (orjson: 254 levels, the standard library: ~1000) accept.
MAX_JSON_DEPTH = 64


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's JSON body, or a 4xx that says what was wrong with it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(_too_large(int(declared), max_bytes))
    chunks = []
    size = 0
    # Count while reading so a chunked body without Content-Length cannot exceed the limit.
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(_too_large(size, max_bytes))
        chunks.append(chunk)
    return parse_json(b"".join(chunks))


def parse_json(raw: bytes, what: str = "the request body") -> Any:
    """Strictly parsed JSON (see the module docstring); ``InvalidRequest`` otherwise, its
    message naming the JSON as ``what``."""
    if not raw.strip():
        raise InvalidRequest(f"{what} is empty; send a JSON object", code="empty_body")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"{what} is not valid UTF-8 (byte {exc.start}); encode it as UTF-8",
            code="invalid_utf8",
        ) from exc
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno} (NaN, Infinity, lone surrogates and numbers beyond a double are "
            "not JSON)",
            code="invalid_json",
        ) from exc
    # Counting brackets is C-fast; only a body that could be too deep is walked.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise InvalidRequest(
            f"{what} nests arrays and objects deeper than {MAX_JSON_DEPTH} levels",
            code="invalid_json",
        )
    return value


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest (iteratively: no recursion limit to hit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node  # type: ignore[assignment]
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


async def read_model(request: Request, model: type[Model], max_bytes: int) -> Model:
    """The body validated as ``model``; field errors become one 400 naming each field."""
    data = await read_json(request, max_bytes)
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"the request body must be a JSON object, got {type(data).__name__}",
            code="invalid_body",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(describe_validation_error(exc), code="invalid_field") from exc


def describe_validation_error(exc: ValidationError) -> str:
    """One readable sentence per invalid field."""
    return "invalid request body: " + field_problems(exc)


def field_problems(exc: ValidationError) -> str:
    """``field.path: what is wrong`` for each invalid field, joined by semicolons."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def _too_large(size: int, limit: int) -> str:
    return f"the request body is {size} bytes; the limit is {limit} bytes"
