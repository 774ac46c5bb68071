"""Per-request cache controls from headers: Cache-Control and the X-Semcache-* family."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import InvalidRequest

__all__ = ["RequestControls"]

_NAME_LIMIT = 200


@dataclass(frozen=True)
class RequestControls:
    """What the client asked of the cache for this one request."""

    no_cache: bool = False
    no_store: bool = False
    max_age_s: float | None = None
    ttl_s: float | None = None
    threshold: float | None = None
    namespace: str = ""
    doc_version: str = ""
    user: str | None = None
    feature: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RequestControls:
        """Parse the headers; a malformed value is a 400 that names the header."""
        no_cache = no_store = False
        max_age = None
        for directive in headers.get("cache-control", "").split(","):
            name, _, value = directive.strip().lower().partition("=")
            if name == "no-cache":
                no_cache = True
            elif name == "no-store":
                no_store = True
            elif name == "max-age":
                max_age = _number("Cache-Control max-age", value, minimum=0)
        return cls(
            no_cache=no_cache,
            no_store=no_store,
            max_age_s=max_age,
            ttl_s=_optional_number(headers, "x-semcache-ttl", minimum=0),
            threshold=_optional_number(headers, "x-semcache-threshold", minimum=-1, maximum=1),
            namespace=_name(headers, "x-semcache-namespace"),
            doc_version=_name(headers, "x-semcache-doc-version"),
            user=_name(headers, "x-semcache-user") or None,
            feature=_name(headers, "x-semcache-feature") or None,
        )


def _number(what: str, raw: str, *, minimum: float, maximum: float | None = None) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        # float() takes "nan" and "inf"; a NaN TTL would silently never cache anything.
        raise InvalidRequest(
            f"{what} must be a finite number, got {raw!r}", code="invalid_header"
        ) from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"in [{minimum:g}, {maximum:g}]" if maximum is not None else f">= {minimum:g}"
        raise InvalidRequest(f"{what} must be {bounds}, got {raw}", code="invalid_header")
    return value


def _optional_number(
    headers: Mapping[str, str], name: str, *, minimum: float, maximum: float | None = None
) -> float | None:
    raw = headers.get(name)
    if raw is None or not raw.strip():
        return None
    return _number(_title(name), raw.strip(), minimum=minimum, maximum=maximum)


def _name(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name, "").strip()
    if len(value) > _NAME_LIMIT:
        raise InvalidRequest(
            f"{_title(name)} is longer than {_NAME_LIMIT} characters", code="invalid_header"
        )
    return value


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-")).replace("Ttl", "TTL")
