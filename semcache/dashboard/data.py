"""What the dashboard shows, as one JSON document (``GET /v1/dashboard/data``).

docs/ARCHITECTURE.md, "Dashboard". Everything over a time range comes from the attribution
rows (the same rows ``/v1/usage`` sums, so the numbers agree); budgets from the spend ledger the
levers check; upstream latency and errors from this process's metrics; recent misses and
wrong-hit reports from this process's request journal. ``tenant=None`` is every tenant (an
admin key); a tenant key only ever gets its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..cache.status import CacheStatus
from ..levers.config import LeversConfig
from ..levers.spend import PERIODS, Scope, SpendBudgets
from ..levers.usage import usage_summary
from ..metrics import CacheMetrics
from ..requestlog import RequestJournal
from ..store.attribution import AttributionStore

__all__ = ["ANSWERED", "DashboardSources", "bucket_seconds", "dashboard_data"]

# Statuses of requests that got an answer; a hit rate is hits over these.
ANSWERED = tuple(str(s) for s in CacheStatus)
HITS = (str(CacheStatus.HIT_EXACT), str(CacheStatus.HIT_SEMANTIC))
_MISSES = (str(CacheStatus.MISS), str(CacheStatus.REFRESH), str(CacheStatus.BYPASS))
# Bucket widths a timeline may use; the smallest that gives at most _MAX_BUCKETS is taken.
_WIDTHS = (10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
_MAX_BUCKETS = 120
_TOP = 10
_RECENT = 50


@dataclass(frozen=True)
class DashboardSources:
    """Where the dashboard's numbers come from."""

    attribution: AttributionStore
    levers: LeversConfig
    spend: SpendBudgets
    metrics: CacheMetrics
    journal: RequestJournal


def bucket_seconds(since: float, until: float) -> int:
    """The timeline's bucket width for a range: at most 120 buckets."""
    span = max(until - since, 1.0)
    for width in _WIDTHS:
        if span / width <= _MAX_BUCKETS:
            return width
    return math.ceil(span / _MAX_BUCKETS)


def dashboard_data(
    sources: DashboardSources,
    *,
    tenant: str | None,
    since: float,
    until: float,
    now: float,
) -> dict[str, Any]:
    """The whole dashboard for ``tenant`` (None: all) over ``[since, until)``."""
    attribution = sources.attribution
    width = bucket_seconds(since, until)
    # Buckets on round times (every 5 minutes on the 5 minutes), the first one holding since.
    origin = math.floor(since / width) * width
    totals = attribution.aggregate(tenant=tenant, group_by=["status"], since=since, until=until)
    by_status = {g["key"]["status"]: g["requests"] for g in totals["groups"]}
    answered = sum(by_status.get(s, 0) for s in ANSWERED)
    hits = sum(by_status.get(s, 0) for s in HITS)
    top = {
        field: _top(
            attribution.aggregate(tenant=tenant, group_by=[field], since=since, until=until)
        )
        for field in ("tenant", "user", "feature", "model")
    }
    everyone = attribution.aggregate(tenant=tenant, group_by=["tenant"])
    return {
        "tenant": tenant,
        "tenants": sorted(g["key"]["tenant"] for g in everyone["groups"]),
        "range": {"since": since, "until": until, "bucket_s": width, "now": now},
        "total": {
            **totals["total"],
            "by_status": by_status,
            "answered": answered,
            "hits": hits,
            "hit_rate": round(hits / answered, 4) if answered else None,
            "rejected_rate_limit": by_status.get("REJECTED-RATE", 0),
            "rejected_budget": by_status.get("REJECTED-BUDGET", 0),
            "rejected_other": sum(
                n
                for s, n in by_status.items()
                if s.startswith("REJECTED-") and s not in ("REJECTED-RATE", "REJECTED-BUDGET")
            ),
            "errors": sum(n for s, n in by_status.items() if s.startswith("ERROR-")),
        },
        "timeline": _timeline(
            attribution.timeline(
                tenant=tenant, since=since, until=until, bucket_s=width, origin=origin
            ),
            origin,
            until,
            width,
        ),
        "top": top,
        "budgets": _budgets(sources, tenant, since, until, now),
        "upstream": sources.metrics.upstream_summary(),
        "anomalies": _anomalies(sources, tenant, since, until),
        **_recent(sources.journal, tenant, since, until),
    }


def _top(result: dict[str, Any]) -> list[dict[str, Any]]:
    groups = sorted(result["groups"], key=lambda g: (-g["cost_usd"], -g["requests"]))
    out = []
    for group in groups[:_TOP]:
        ((_, name),) = group["key"].items()
        out.append(
            {
                "name": name,
                "requests": group["requests"],
                "cost_usd": group["cost_usd"],
                "saved_usd": group["saved_usd"],
                "tokens": group["prompt_tokens"] + group["completion_tokens"],
            }
        )
    return out


def _timeline(
    rows: Sequence[dict[str, Any]], since: float, until: float, width: int
) -> dict[str, Any]:
    """Column arrays, one value per bucket (empty buckets included, as zeros)."""
    count = max(1, math.ceil((until - since) / width))
    statuses = sorted({r["status"] for r in rows} | set(ANSWERED))
    per_status = {s: [0] * count for s in statuses}
    cost = [0.0] * count
    saved = [0.0] * count
    latency_total = [0.0] * count
    latency_n = [0] * count
    for row in rows:
        i = min(count - 1, int((row["start"] - since) // width))
        per_status[row["status"]][i] += row["requests"]
        cost[i] += row["cost_usd"]
        saved[i] += row["saved_usd"]
        if row["status"] in _MISSES:
            latency_total[i] += row["latency_ms"] * row["requests"]
            latency_n[i] += row["requests"]
    answered = [sum(per_status[s][i] for s in ANSWERED) for i in range(count)]

    def rate(status: str) -> list[float | None]:
        return [
            round(per_status[status][i] / answered[i], 4) if answered[i] else None
            for i in range(count)
        ]

    return {
        "starts": [since + i * width for i in range(count)],
        "requests": [sum(per_status[s][i] for s in statuses) for i in range(count)],
        "by_status": per_status,
        "hit_rate_exact": rate(str(CacheStatus.HIT_EXACT)),
        "hit_rate_semantic": rate(str(CacheStatus.HIT_SEMANTIC)),
        "cost_usd": [round(v, 9) for v in cost],
        "saved_usd": [round(v, 9) for v in saved],
        "miss_latency_ms": [
            round(latency_total[i] / latency_n[i], 2) if latency_n[i] else None
            for i in range(count)
        ],
    }


def _budgets(
    sources: DashboardSources, tenant: str | None, since: float, until: float, now: float
) -> list[dict[str, Any]]:
    """Every budget with a limit that a scope in range counts against: spent this period."""
    limits = sources.spend.limits
    seen: dict[tuple[str, str, str], Scope] = {}
    for kind in ("user", "feature"):
        grouped = sources.attribution.aggregate(
            tenant=tenant, group_by=["tenant", kind], since=since, until=until
        )
        for group in grouped["groups"]:
            name = group["key"][kind]
            if name:
                scope = Scope(kind, name, group["key"]["tenant"])
                seen[(kind, name, scope.tenant)] = scope
    tenants = sources.attribution.aggregate(
        tenant=tenant, group_by=["tenant"], since=since, until=until
    )
    for group in tenants["groups"]:
        name = group["key"]["tenant"]
        seen[("tenant", name, name)] = Scope("tenant", name, name)
    for kind, name in limits.overrides:
        if kind == "tenant" and (tenant is None or name == tenant):
            seen.setdefault((kind, name, name), Scope(kind, name, name))
    when = datetime.fromtimestamp(now, UTC)
    out: list[dict[str, Any]] = []
    for scope in sorted(seen.values(), key=lambda s: (s.tenant, s.kind, s.name)):
        limit = limits.for_scope(scope)
        for period in PERIODS:
            soft, hard = limit.get(period, hard=False), limit.get(period, hard=True)
            if soft is None and hard is None:
                continue
            spent = sources.spend.totals(scope, period, when).spent
            ceiling = hard if hard is not None else soft
            out.append(
                {
                    "scope": scope.kind,
                    "name": scope.name,
                    "tenant": scope.tenant,
                    "period": period,
                    "spent_usd": float(spent),
                    "soft_usd": float(soft) if soft is not None else None,
                    "hard_usd": float(hard) if hard is not None else None,
                    "used": round(float(spent / ceiling), 4) if ceiling else None,
                }
            )
    return out


def _anomalies(
    sources: DashboardSources, tenant: str | None, since: float, until: float
) -> list[dict[str, Any]]:
    """Days in range flagged by the usage API's anomaly rule, per tenant and per feature."""
    window = sources.levers.anomaly_window_days
    # The rule compares a day with the days before it: read those too.
    history = since - window * 86400
    first_day = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d")
    out: list[dict[str, Any]] = []
    for by in ("tenant", "feature"):
        summary = usage_summary(
            sources.attribution,
            sources.levers,
            tenant=tenant,
            group_by=["day", by] if by != "tenant" else ["day", "tenant"],
            since=history,
            until=until,
        )
        for group in summary["groups"]:
            key = group["key"]
            if group.get("anomaly") and key["day"] >= first_day:
                out.append(
                    {
                        "day": key["day"],
                        "by": by,
                        "name": key.get(by) or "",
                        "cost_usd": group["cost_usd"],
                        "requests": group["requests"],
                    }
                )
    return sorted(out, key=lambda a: (a["day"], a["by"], a["name"]), reverse=True)


def _recent(
    journal: RequestJournal, tenant: str | None, since: float, until: float
) -> dict[str, Any]:
    """This process's latest misses and wrong-hit reports in range, newest first."""
    records = [
        r
        for r in reversed(journal.recent())
        if since <= r["ts"] < until and (tenant is None or r.get("tenant") == tenant)
    ]
    misses = [r for r in records if r.get("cache") in _MISSES]
    wrong = [
        r
        for r in records
        if str(r.get("path", "")).endswith("/wrong-hits") and r.get("status") == 200
    ]
    return {
        "recent_misses": [_pick(r, _MISS_FIELDS) for r in misses[:_RECENT]],
        "wrong_hits": [_pick(r, _WRONG_FIELDS) for r in wrong[:_RECENT]],
        "wrong_hits_total": len(wrong),
    }


_MISS_FIELDS = (
    "ts",
    "request_id",
    "tenant",
    "route",
    "model",
    "cache",
    "miss_reason",
    "verifier_score",
    "bypass_reason",
    "similarity",
    "status",
    "latency_ms",
)
_WRONG_FIELDS = ("ts", "request_id", "tenant", "entry_id", "similarity", "model")


def _pick(record: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    return {f: record.get(f) for f in fields}
