"""One exception hierarchy for semcache.

    SemcacheError
    ├── ConfigError                 bad settings; the CLI prints one line and exits non-zero
    ├── ClientError                 the caller did something wrong; carries a 4xx status
    │   ├── InvalidRequest          400: malformed JSON, missing/mistyped fields, bad values
    │   ├── AuthenticationError     401: missing or unknown API key
    │   ├── NotFound                404: unknown entry id or route
    │   ├── PayloadTooLarge         413: body over the size limit
    │   └── RateLimited             429: quota or budget exhausted
    ├── UpstreamError               the provider failed; carries 502/503/504
    │   ├── UpstreamUnavailable     503: connection refused, provider overloaded
    │   ├── UpstreamTimeout         504: connect or read timeout
    │   └── UpstreamBadResponse     502: an error status or a malformed answer
    └── StorageError                503: the SQL store or a vector index failed

Every error renders as OpenAI's shape, ``{"error": {"type", "message", "code"}}``; the
``type`` and ``code`` class attributes fill it in. Foreign errors (SQLAlchemy, FAISS, httpx)
are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "ClientError",
    "ConfigError",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "SemcacheError",
    "StorageError",
    "UpstreamBadResponse",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class SemcacheError(Exception):
    """Base class of every error semcache raises on purpose."""

    status_code: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def to_body(self) -> dict[str, Any]:
        """The OpenAI-shaped JSON body for this error."""
        error: dict[str, Any] = {"type": self.type, "message": self.message, "code": self.code}
        error.update(self.extra)
        return {"error": error}


class ConfigError(SemcacheError):
    """A setting, config file or startup condition is invalid."""

    code = "config_error"


class ClientError(SemcacheError):
    """The request was wrong; the status is a 4xx."""

    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidRequest(ClientError):
    """400: the body or a header does not say something semcache can act on."""


class AuthenticationError(ClientError):
    """401: no API key, or one that semcache does not know."""

    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ClientError):
    """404: the entry or route does not exist (for this tenant)."""

    status_code = 404
    type = "not_found_error"
    code = "not_found"


class PayloadTooLarge(ClientError):
    """413: the request body is over the configured size limit."""

    status_code = 413
    code = "payload_too_large"


class RateLimited(ClientError):
    """429: a rate limit, quota or spend budget says no for now."""

    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(SemcacheError):
    """The upstream provider failed; the status is 502, 503 or 504."""

    status_code = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """503: the provider refused the connection or is overloaded."""

    status_code = 503
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    """504: the provider did not answer in time."""

    status_code = 504
    code = "upstream_timeout"


class UpstreamBadResponse(UpstreamError):
    """502: the provider answered with an error or something unreadable."""

    status_code = 502
    code = "upstream_bad_response"


class StorageError(SemcacheError):
    """503: the SQL store or a vector index failed; nothing was half-written."""

    status_code = 503
    type = "server_error"
    code = "storage_error"
