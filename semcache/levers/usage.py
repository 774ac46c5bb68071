"""Usage summaries: what a tenant spent and saved, grouped, with anomalous days flagged.

``GET /v1/usage`` and ``semcache report`` both answer through ``usage_summary``; the HTTP side
goes through ``UsageService``, which first writes the attribution rows still buffered in
memory so a summary includes the requests just made.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidRequest
from ..store.attribution import GROUP_FIELDS, AttributionStore, flag_anomalies
from .config import LeversConfig

__all__ = ["UsageService", "check_group_by", "parse_time", "usage_summary"]


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


def check_group_by(group_by: Sequence[str]) -> list[str]:
    """The grouping fields, or a 400 naming the unknown ones."""
    unknown = [g for g in group_by if g not in GROUP_FIELDS]
    if unknown:
        raise InvalidRequest(
            f"cannot group by {', '.join(unknown)}; choose from {', '.join(GROUP_FIELDS)}",
            code="invalid_group_by",
        )
    return list(group_by)


def usage_summary(
    attribution: AttributionStore,
    levers: LeversConfig,
    *,
    tenant: str | None,
    group_by: Sequence[str],
    since: float | None,
    until: float | None,
) -> dict[str, Any]:
    """``{"total", "groups"}`` of the attribution rows; day groups get ``anomaly`` flags."""
    group_by = check_group_by(group_by)
    result = attribution.aggregate(tenant=tenant, group_by=group_by, since=since, until=until)
    if "day" in group_by:
        flag_anomalies(
            result["groups"],
            by=[g for g in group_by if g != "day"],
            factor=levers.anomaly_factor,
            window_days=levers.anomaly_window_days,
        )
    return result


class UsageService:
    """Usage summaries for the API, over rows that include the ones still buffered."""

    def __init__(
        self,
        attribution: AttributionStore,
        levers: LeversConfig,
        flush: Callable[[], Awaitable[object]],
    ) -> None:
        self.attribution = attribution
        self.levers = levers
        self._flush = flush

    async def summary(
        self,
        *,
        tenant: str,
        group_by: Sequence[str],
        since: float | None,
        until: float | None,
    ) -> dict[str, Any]:
        check_group_by(group_by)
        await self._flush()
        return await asyncio.to_thread(
            usage_summary,
            self.attribution,
            self.levers,
            tenant=tenant,
            group_by=group_by,
            since=since,
            until=until,
        )
