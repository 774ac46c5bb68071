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
    """``ready``: the store answers and every configured upstream was reachable at its last
    probe. ``degraded`` (still 200: hits and the cache API are served) when an upstream is
    not. ``unavailable`` (503) when the store is not."""
    services = services_of(request)
    upstreams = services.probe.report() if services.probe else {}
    degraded = services.probe is not None and services.probe.degraded
    try:
        await asyncio.to_thread(services.store.check)
    except StorageError as exc:
        failed = {
            "status": "unavailable",
            "reason": exc.message,
            "store": {"status": "unavailable", "reason": exc.message},
            "upstreams": upstreams,
        }
        return JSONResponse(failed, status_code=503)
    status = "degraded" if degraded else "ready"
    body: dict[str, object] = {"status": status, "store": {"status": "ok"}, "upstreams": upstreams}
    if degraded:
        down = [name for name, u in upstreams.items() if u.get("reachable") is False]
        body["reason"] = "unreachable upstream: " + ", ".join(down)
    return JSONResponse(body)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format; rendered in a thread because a gauge reads SQL."""
    body = await asyncio.to_thread(services_of(request).metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
