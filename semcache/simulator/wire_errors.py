"""Errors as each provider puts them on the wire.

Handlers raise one provider-neutral ``WireError``; the endpoint that caught it renders it in
its own provider's shape, so a fault or a validation error looks the same to an SDK as the
real thing would.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from fastapi.responses import JSONResponse

from ..errors import SemcacheError

__all__ = [
    "ErrorKind",
    "WireError",
    "fault_error",
    "render_anthropic_error",
    "render_openai_error",
]

ErrorKind = Literal[
    "invalid_request",
    "context_length",
    "authentication",
    "not_found",
    "rate_limit",
    "server",
    "bad_gateway",
    "unavailable",
    "timeout",
    "overloaded",
]

# kind -> (OpenAI error type, OpenAI code)
_OPENAI: dict[str, tuple[str, str | None]] = {
    "invalid_request": ("invalid_request_error", None),
    "context_length": ("invalid_request_error", "context_length_exceeded"),
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "not_found": ("invalid_request_error", "not_found"),
    "rate_limit": ("requests", "rate_limit_exceeded"),
    "server": ("server_error", None),
    "bad_gateway": ("server_error", "bad_gateway"),
    "unavailable": ("server_error", "service_unavailable"),
    "timeout": ("server_error", "timeout"),
    "overloaded": ("server_error", "overloaded"),
}

# kind -> Anthropic error type
_ANTHROPIC: dict[str, str] = {
    "invalid_request": "invalid_request_error",
    "context_length": "invalid_request_error",
    "authentication": "authentication_error",
    "not_found": "not_found_error",
    "rate_limit": "rate_limit_error",
    "server": "api_error",
    "bad_gateway": "api_error",
    "unavailable": "api_error",
    "timeout": "timeout_error",
    "overloaded": "overloaded_error",
}


class WireError(SemcacheError):
    """A response the simulated provider answers with instead of a completion."""

    def __init__(
        self,
        status: int,
        kind: ErrorKind,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        fault: str | None = None,
    ) -> None:
        super().__init__(message, headers=headers)
        self.status_code = status
        self.kind = kind
        self.param = param
        # The fault that caused it, if any; echoed in a response header for debugging.
        self.fault = fault

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.fault is not None:
            headers["x-sim-fault-injected"] = self.fault
        return headers


def render_openai_error(exc: WireError) -> JSONResponse:
    err_type, code = _OPENAI[exc.kind]
    body: dict[str, Any] = {
        "error": {"message": exc.message, "type": err_type, "param": exc.param, "code": code}
    }
    headers = exc.response_headers()
    headers["x-request-id"] = "req_" + secrets.token_hex(16)
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def render_anthropic_error(exc: WireError) -> JSONResponse:
    request_id = "req_" + secrets.token_hex(12)
    body = {
        "type": "error",
        "error": {"type": _ANTHROPIC[exc.kind], "message": exc.message},
        "request_id": request_id,
    }
    headers = exc.response_headers()
    headers["request-id"] = request_id
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def fault_error(fault: str, *, retry_after: str, prompt_tokens: int, window: int) -> WireError:
    """The error a status-code fault answers with; ``hang`` and ``drop`` are not errors."""
    if fault == "429":
        return WireError(
            429,
            "rate_limit",
            "Rate limit reached for requests (simulated). Please try again later.",
            headers={"retry-after": retry_after},
            fault=fault,
        )
    if fault == "context_length":
        return WireError(
            400,
            "context_length",
            f"prompt is too long: {max(prompt_tokens, window + 1)} tokens > {window} maximum; "
            f"this model's maximum context window is {window} tokens (simulated).",
            param="messages",
            fault=fault,
        )
    simple: dict[str, tuple[int, ErrorKind, str]] = {
        "500": (500, "server", "The server had an error while processing your request."),
        "502": (502, "bad_gateway", "Bad gateway."),
        "503": (503, "unavailable", "The service is temporarily unavailable."),
        "504": (504, "timeout", "The upstream timed out while processing your request."),
        "529": (529, "overloaded", "Overloaded"),
    }
    if fault not in simple:
        raise ValueError(f"fault {fault!r} is not answered with an error")
    status, kind, message = simple[fault]
    return WireError(status, kind, message + " (simulated)", fault=fault)
