"""Small checks on request fields, each failing with a provider-neutral 400."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .wire_errors import WireError

__all__ = ["optional_bool", "optional_int", "required_str"]


def _bad(name: str, message: str) -> WireError:
    return WireError(400, "invalid_request", f"'{name}': {message}", param=name)


def required_str(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _bad(name, "a non-empty string is required.")
    return value


def optional_int(
    body: Mapping[str, Any], name: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    # JSON true/false would pass isinstance(..., int); the providers refuse them.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, f"expected an integer, got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise _bad(name, f"must be {bound}, got {value}.")
    return value


def optional_bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(name, f"expected a boolean, got {value!r}.")
    return value
