"""One handler renders every error in one JSON shape: ``{"error": {"type", "message", "code"}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ClientError, InvalidRequest, NotFound, SemcacheError

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger(__name__)


def error_response(error: SemcacheError) -> JSONResponse:
    """The HTTP response for one semcache error."""
    return JSONResponse(error.to_body(), status_code=error.status_code, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure, ours or the framework's, through ``error_response``."""

    async def semcache_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SemcacheError)
        if not isinstance(exc, ClientError):
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return error_response(exc)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return error_response(InvalidRequest(f"invalid request: {problems}"))

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(NotFound("no such endpoint; see the README for the API"))
        error = ClientError(str(exc.detail), code=f"http_{exc.status_code}")
        error.status_code = exc.status_code
        if exc.status_code == 405:
            error.code = "method_not_allowed"
        return error_response(error)

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the log, never to the client.
        log.error("unhandled error", exc_info=exc)
        return error_response(SemcacheError("internal error; the server log has the details"))

    app.add_exception_handler(SemcacheError, semcache_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
