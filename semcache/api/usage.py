"""``GET /v1/usage``: what the caller's tenant spent and saved, grouped as asked."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from ..errors import InvalidRequest
from ..store.attribution import flag_anomalies
from .deps import principal_of, services_of

__all__ = ["parse_time", "router"]

router = APIRouter()


def parse_time(name: str, value: str | None) -> float | None:
    """An ISO date or date-time (UTC when no zone is given), or epoch seconds."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"{name} must be an ISO date (2026-11-27), date-time or epoch seconds, got {value!r}",
            code="invalid_time",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@router.get("/v1/usage")
async def usage(request: Request) -> dict[str, Any]:
    services = services_of(request)
    principal = principal_of(request)
    params = request.query_params
    group_by = [g.strip() for g in params.get("group_by", "").split(",") if g.strip()]
    since = parse_time("since", params.get("since"))
    until = parse_time("until", params.get("until"))
    await services.proxy.policy.flush()
    result = await asyncio.to_thread(
        services.attribution.aggregate,
        tenant=principal.tenant,
        group_by=group_by,
        since=since,
        until=until,
    )
    if "day" in group_by:
        levers = services.proxy.policy.config
        flag_anomalies(
            result["groups"],
            by=[g for g in group_by if g != "day"],
            factor=levers.anomaly_factor,
            window_days=levers.anomaly_window_days,
        )
    return {"tenant": principal.tenant, **result}
