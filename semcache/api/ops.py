"""Operational endpoints: liveness, readiness and Prometheus metrics (no API key needed)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import StorageError
from .deps import services_of

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """The store answers, so lookups and stores can be served."""
    services = services_of(request)
    try:
        await asyncio.to_thread(services.store.check)
    except StorageError as exc:
        return JSONResponse({"status": "unavailable", "reason": exc.message}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format; rendered in a thread because a gauge reads SQL."""
    body = await asyncio.to_thread(services_of(request).metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
