"""OpenAI's embeddings format (``POST /v1/embeddings``): request checks, items, vectors.

An embeddings request is cached item by item (proxy/embeddings.py): each input item is one
entry, found by its exact key (cache/keys.py ``embedding_keys``). A vector is kept as the
upstream sent it, a list of floats or base64 (little-endian float32, as OpenAI encodes it),
and served in the format the client asks for: base64 decodes to the same float32 values.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest, UpstreamBadResponse
from .base import require_model

__all__ = [
    "EMBEDDINGS_PATH",
    "EMBEDDINGS_SCOPE",
    "EmbeddingsRequest",
    "embeddings_response",
    "parse_embeddings_request",
    "read_upstream_vectors",
    "vector_in",
]

EMBEDDINGS_SCOPE = "openai-embeddings"
EMBEDDINGS_PATH = "/embeddings"
# OpenAI's limit on the items of one request.
MAX_ITEMS = 2048
_FORMATS = ("float", "base64")

Item = str | list[int]
Vector = list[float] | str


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A checked embeddings request: its items in order (a string or a list of token ids)."""

    model: str
    items: list[Item]
    dimensions: int | None
    encoding_format: str


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_field")


def _is_tokens(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)
    )


def _is_item(value: Any) -> bool:
    return isinstance(value, str) or _is_tokens(value)


def _items(value: Any) -> list[Item]:
    shapes = "a string, an array of strings, an array of token ids or an array of those arrays"
    if _is_item(value):
        items: list[Item] = [value]
    elif isinstance(value, list) and value and all(_is_item(v) for v in value):
        items = list(value)
    else:
        raise _bad(f"input must be {shapes}, none of them empty")
    for n, item in enumerate(items):
        if isinstance(item, str) and not item:
            raise _bad(f"input.{n} must not be an empty string")
    if len(items) > MAX_ITEMS:
        raise _bad(f"input has {len(items)} items; at most {MAX_ITEMS} are allowed")
    return items


def parse_embeddings_request(body: dict[str, Any]) -> EmbeddingsRequest:
    """The request's fields, checked; a 400 names the field."""
    require_model(body)
    model = str(body["model"])
    if "input" not in body:
        raise _bad("input is required")
    items = _items(body["input"])
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        raise _bad("dimensions must be a positive integer")
    fmt = body.get("encoding_format")
    if fmt is None:
        fmt = "float"
    if fmt not in _FORMATS:
        raise _bad("encoding_format must be 'float' or 'base64'")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise _bad("user must be a string")
    return EmbeddingsRequest(model, items, dimensions, fmt)


def vector_in(vector: Vector, encoding_format: str) -> Vector:
    """``vector`` (floats or base64 float32) in the asked format."""
    if encoding_format == "base64":
        if isinstance(vector, str):
            return vector
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    if isinstance(vector, list):
        return vector
    raw = base64.b64decode(vector, validate=True)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _checked_vector(value: Any) -> Vector:
    if (
        isinstance(value, list)
        and value
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
    ):
        return [float(x) for x in value]
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if raw and len(raw) % 4 == 0:
            return value
    raise UpstreamBadResponse("the openai upstream sent an embedding that is no vector")


def read_upstream_vectors(answer: dict[str, Any], count: int) -> list[Vector]:
    """The vectors of an upstream embeddings answer, in the order of the items sent."""
    data = answer.get("data")
    if not isinstance(data, list) or len(data) != count:
        raise UpstreamBadResponse(f"the openai upstream did not answer {count} embedding(s)")
    vectors: list[Vector | None] = [None] * count
    for position, entry in enumerate(data):
        index = entry.get("index", position) if isinstance(entry, dict) else None
        if not isinstance(index, int) or not 0 <= index < count or vectors[index] is not None:
            raise UpstreamBadResponse("the openai upstream's embedding indices do not match")
        vectors[index] = _checked_vector(entry.get("embedding"))
    return [v for v in vectors if v is not None]


def embeddings_response(
    model: str, vectors: list[Vector], encoding_format: str, prompt_tokens: int
) -> dict[str, Any]:
    """The answer to the client: one embedding per input item, at the item's index."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": vector_in(vector, encoding_format)}
            for index, vector in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
