"""Reading request bodies: size limit, strict UTF-8, JSON, then a pydantic model."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from ..errors import InvalidRequest, PayloadTooLarge

__all__ = ["describe_validation_error", "read_json", "read_model"]

Model = TypeVar("Model", bound=BaseModel)


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
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object", code="empty_body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not valid UTF-8 (byte {exc.start}); encode it as UTF-8",
            code="invalid_utf8",
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}",
            code="invalid_json",
        ) from exc


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
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return "invalid request body: " + "; ".join(problems)


def _too_large(size: int, limit: int) -> str:
    return f"the request body is {size} bytes; the limit is {limit} bytes"
