"""Attribution rows: one per proxied request, and the sums ``/v1/usage`` and reports show."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Integer, case, cast, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from .schema import metadata, requests
from .sqlite import storage_error

__all__ = [
    "GROUP_FIELDS",
    "USAGE_FIELDS",
    "AttributionStore",
    "UsageRow",
    "flag_anomalies",
]

GROUP_FIELDS = ("tenant", "user", "feature", "model", "day", "status")
# The summed fields of a usage total or group, in display order.
USAGE_FIELDS = (
    "requests",
    "cost_usd",
    "saved_usd",
    "prompt_cache_saved_usd",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "unpriced_requests",
)


@dataclass(frozen=True)
class UsageRow:
    """What one request did, ready to insert."""

    ts: float
    day: str
    tenant: str
    user: str
    feature: str
    model: str
    status: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float | None
    saved_usd: float
    prompt_cache_saved_usd: float
    latency_ms: float


class AttributionStore:
    """Inserts and aggregates attribution rows over the store's SQL engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        try:
            metadata.create_all(engine, tables=[requests])
        except SQLAlchemyError as exc:
            raise storage_error("cannot create the attribution table", exc) from exc

    def add_many(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        values = [{**row.__dict__, "priced": row.cost_usd is not None} for row in rows]
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(requests), values)
        except SQLAlchemyError as exc:
            raise storage_error("cannot write attribution rows", exc) from exc

    def aggregate(
        self,
        *,
        tenant: str | None,
        group_by: Sequence[str] = (),
        since: float | None = None,
        until: float | None = None,
    ) -> dict[str, Any]:
        """``{"total": {...}, "groups": [{"key": {...}, ...sums}]}`` for one tenant (or all)."""
        unknown = [g for g in group_by if g not in GROUP_FIELDS]
        if unknown:
            # Callers check what users ask for (levers.usage.check_group_by); this is a bug.
            raise ValueError(f"cannot group by {unknown}")
        conditions = []
        if tenant is not None:
            conditions.append(requests.c.tenant == tenant)
        if since is not None:
            conditions.append(requests.c.ts >= since)
        if until is not None:
            conditions.append(requests.c.ts < until)
        sums = [
            func.count().label("requests"),
            func.coalesce(func.sum(requests.c.cost_usd), 0.0).label("cost_usd"),
            func.coalesce(func.sum(requests.c.saved_usd), 0.0).label("saved_usd"),
            func.coalesce(func.sum(requests.c.prompt_cache_saved_usd), 0.0).label(
                "prompt_cache_saved_usd"
            ),
            func.coalesce(func.sum(requests.c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(requests.c.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(requests.c.cached_tokens), 0).label("cached_tokens"),
            func.coalesce(func.sum(case((requests.c.priced.is_(False), 1), else_=0)), 0).label(
                "unpriced_requests"
            ),
        ]
        columns = [requests.c[g] for g in group_by]
        try:
            with self.engine.connect() as conn:
                total = conn.execute(select(*sums).where(*conditions)).one()._mapping
                rows = (
                    conn.execute(
                        select(*columns, *sums)
                        .where(*conditions)
                        .group_by(*columns)
                        .order_by(*columns)
                    ).all()
                    if columns
                    else []
                )
        except SQLAlchemyError as exc:
            raise storage_error("cannot read attribution rows", exc) from exc
        groups = [
            {"key": {g: row._mapping[g] for g in group_by}, **_sums(row._mapping)} for row in rows
        ]
        return {"total": _sums(total), "groups": groups}

    def timeline(
        self,
        *,
        tenant: str | None,
        since: float,
        until: float,
        bucket_s: float,
        origin: float | None = None,
    ) -> list[dict[str, Any]]:
        """Per time bucket and status: requests, USD spent and saved, mean latency. Buckets
        are ``bucket_s`` wide from ``origin`` (default ``since``; at most ``since``). Oldest
        bucket first; buckets with no rows are left out."""
        origin = since if origin is None else min(origin, since)
        conditions = [requests.c.ts >= since, requests.c.ts < until]
        if tenant is not None:
            conditions.append(requests.c.tenant == tenant)
        offset = (requests.c.ts - origin) / bucket_s
        # SQLite truncates a cast (offset >= 0, so it floors); PostgreSQL's rounds.
        index = (
            cast(offset, Integer) if self.engine.dialect.name == "sqlite" else func.floor(offset)
        )
        bucket = index.label("bucket")
        query = (
            select(
                bucket,
                requests.c.status,
                func.count().label("requests"),
                func.coalesce(func.sum(requests.c.cost_usd), 0.0).label("cost_usd"),
                func.coalesce(func.sum(requests.c.saved_usd), 0.0).label("saved_usd"),
                func.avg(requests.c.latency_ms).label("latency_ms"),
            )
            .where(*conditions)
            .group_by(bucket, requests.c.status)
            .order_by(bucket, requests.c.status)
        )
        try:
            with self.engine.connect() as conn:
                found = conn.execute(query).all()
        except SQLAlchemyError as exc:
            raise storage_error("cannot read attribution rows", exc) from exc
        return [
            {
                "start": origin + int(row.bucket) * bucket_s,
                "status": row.status,
                "requests": int(row.requests),
                "cost_usd": round(float(row.cost_usd), 9),
                "saved_usd": round(float(row.saved_usd), 9),
                "latency_ms": round(float(row.latency_ms or 0.0), 2),
            }
            for row in found
        ]

    def rows(
        self, *, tenant: str | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """Rows (for reports, budgets and tests), oldest first."""
        query = select(requests).order_by(requests.c.id)
        if tenant is not None:
            query = query.where(requests.c.tenant == tenant)
        if since is not None:
            query = query.where(requests.c.ts >= since)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]


def _sums(row: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in USAGE_FIELDS:
        value = row[name]
        out[name] = round(float(value), 9) if name.endswith("_usd") else int(value or 0)
    return out


def flag_anomalies(
    groups: Iterable[dict[str, Any]], *, by: Sequence[str], factor: float, window_days: int
) -> None:
    """Mark each day group whose cost exceeds ``factor`` x the trailing median of its series.

    ``groups`` come from ``aggregate`` grouped by ``day`` plus ``by`` (tenant or feature);
    each gets ``"anomaly": bool``. The trailing window holds the series' previous days that
    have rows, up to ``window_days`` of them; a series needs three such days to be judged.
    """
    series: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for group in sorted(groups, key=lambda g: g["key"]["day"]):
        series.setdefault(tuple(group["key"].get(b) for b in by), []).append(group)
    for days in series.values():
        for i, group in enumerate(days):
            trailing = [d["cost_usd"] for d in days[max(0, i - window_days) : i]]
            group["anomaly"] = bool(
                len(trailing) >= 3
                and statistics.median(trailing) > 0
                and group["cost_usd"] > factor * statistics.median(trailing)
            )
