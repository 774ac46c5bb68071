"""The dashboard: its page (``/dashboard``, static files, no key needed to load them) and its
data (``GET /v1/dashboard/data``, which needs a key once keys are configured).

A tenant key sees its own tenant; an admin key (``key=tenant:tier:admin``) sees every tenant,
or the one ``tenant=`` names.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from ..dashboard import STATIC_DIR, DashboardSources, dashboard_data
from ..errors import ClientError, InvalidRequest
from ..levers.usage import parse_time
from .deps import principal_of, services_of

__all__ = ["router", "static_files"]

router = APIRouter()

# The range shown when the page asks for none: the last 24 hours.
DEFAULT_RANGE_S = 86400.0


def static_files() -> StaticFiles:
    """The page's scripts, styles and the vendored chart library (mounted at /dashboard/)."""
    return StaticFiles(directory=STATIC_DIR)


@router.get("/dashboard", include_in_schema=False)
async def dashboard_page() -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/dashboard/", include_in_schema=False)
async def dashboard_slash() -> Response:
    return RedirectResponse("/dashboard")


class Forbidden(ClientError):
    status_code = 403
    type = "permission_error"
    code = "forbidden"


@router.get("/v1/dashboard/data")
async def data(request: Request) -> dict[str, Any]:
    """Everything the page draws, for ``since``..``until`` (default: the last 24 hours)."""
    services = services_of(request)
    principal = principal_of(request)
    params = request.query_params
    asked = (params.get("tenant") or "").strip() or None
    if principal.admin:
        tenant = asked
    elif asked is not None and asked != principal.tenant:
        raise Forbidden("only an admin key sees other tenants; this key sees its own")
    else:
        tenant = principal.tenant
    now = time.time()
    until = parse_time("until", params.get("until")) or now
    since = parse_time("since", params.get("since"))
    if since is None:
        since = until - DEFAULT_RANGE_S
    if since >= until:
        raise InvalidRequest("since must be before until", code="invalid_time")
    await services.proxy.policy.flush()
    sources = DashboardSources(
        attribution=services.usage.attribution,
        levers=services.usage.levers,
        spend=services.proxy.policy.spending.budgets,
        metrics=services.metrics,
        journal=services.journal,
    )
    result = await asyncio.to_thread(
        dashboard_data, sources, tenant=tenant, since=since, until=until, now=now
    )
    return {"admin": principal.admin, **result}
