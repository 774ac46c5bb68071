"""One handler renders every error, in the wire format of the endpoint that failed.

OpenAI's shape, ``{"error": {"type", "message", "code"}}``, everywhere but the Anthropic
endpoint ``/v1/messages``, which answers in Anthropic's ``{"type": "error", "error": {"type",
"message"}}`` so the Anthropic SDK raises its own typed exceptions.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ClientError, InvalidRequest, NotFound, SemcacheError
from ..requestlog import note
from ..wire import ANTHROPIC_WIRE, OPENAI_WIRE, Wire
from .responses import JsonResponse

__all__ = ["error_response", "install_error_handlers", "wire_of_path"]

log = logging.getLogger(__name__)


def wire_of_path(path: str) -> Wire:
    """The wire format whose error shape a path answers in."""
    return ANTHROPIC_WIRE if path.rstrip("/") == "/v1/messages" else OPENAI_WIRE


def error_response(error: SemcacheError, wire: Wire = OPENAI_WIRE) -> JsonResponse:
    """The HTTP response for one semcache error (its code goes into the request log)."""
    note(error=error.code)
    return JsonResponse(
        wire.error_body(error), status_code=error.status_code, headers=error.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure, ours or the framework's, through ``error_response``."""

    async def semcache_error(request: Request, exc: Exception) -> JsonResponse:
        assert isinstance(exc, SemcacheError)
        if not isinstance(exc, ClientError):
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return error_response(exc, wire_of_path(request.url.path))

    async def validation_error(request: Request, exc: Exception) -> JsonResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        error = InvalidRequest(f"invalid request: {problems}")
        return error_response(error, wire_of_path(request.url.path))

    async def http_error(request: Request, exc: Exception) -> JsonResponse:
        assert isinstance(exc, StarletteHTTPException)
        wire = wire_of_path(request.url.path)
        if exc.status_code == 404:
            return error_response(NotFound("no such endpoint; see the README for the API"), wire)
        error = ClientError(str(exc.detail), code=f"http_{exc.status_code}")
        error.status_code = exc.status_code
        if exc.status_code == 405:
            error.code = "method_not_allowed"
        return error_response(error, wire)

    async def unexpected(request: Request, exc: Exception) -> JsonResponse:
        # The traceback goes to the log, never to the client.
        log.error("unhandled error", exc_info=exc)
        error = SemcacheError("internal error; the server log has the details")
        return error_response(error, wire_of_path(request.url.path))

    app.add_exception_handler(SemcacheError, semcache_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
