"""``GET /v1/usage``: what the caller's tenant spent and saved, grouped as asked."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..levers.usage import parse_time
from .deps import principal_of, services_of

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/usage")
async def usage(request: Request) -> dict[str, Any]:
    services = services_of(request)
    principal = principal_of(request)
    params = request.query_params
    result = await services.usage.summary(
        tenant=principal.tenant,
        group_by=[g.strip() for g in params.get("group_by", "").split(",") if g.strip()],
        since=parse_time("since", params.get("since")),
        until=parse_time("until", params.get("until")),
    )
    return {"tenant": principal.tenant, **result}
