"""Daily and monthly USD budgets per tenant, user and feature.

A soft limit reached raises an alert and lets the request through; a hard limit reached
answers 429 with an error that names the budget and when it resets (the next UTC midnight, or
the first of next month). Periods are UTC calendar days and months. Cache hits are recorded
as $0 spent and their avoided cost as saved.

``SpendLedger`` is the narrow storage interface (record, and totals over a time range), so a
SQL ledger over the attribution rows can replace ``MemorySpendLedger`` without touching the
checks.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from ..errors import ConfigError, RateLimited
from ..tomlfile import schema_errors

__all__ = [
    "BudgetBreach",
    "MemorySpendLedger",
    "Scope",
    "SpendBudgets",
    "SpendDecision",
    "SpendLedger",
    "SpendLimit",
    "SpendLimitSchema",
    "SpendLimits",
    "SpendSchema",
    "SpendTotals",
    "WrittenLedger",
    "dollars",
    "period_bounds",
    "scopes_for",
]

SCOPE_KINDS = ("tenant", "user", "feature")
PERIODS = ("daily", "monthly")
_ZERO = Decimal(0)


@dataclass(frozen=True)
class Scope:
    """Who a budget belongs to; users and features are scoped by their tenant."""

    kind: str
    name: str
    tenant: str

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


def scopes_for(tenant: str, user: str | None = None, feature: str | None = None) -> list[Scope]:
    """The budget scopes a request counts against."""
    scopes = [Scope("tenant", tenant, tenant)]
    if user:
        scopes.append(Scope("user", user, tenant))
    if feature:
        scopes.append(Scope("feature", feature, tenant))
    return scopes


@dataclass(frozen=True)
class SpendLimit:
    """Soft and hard USD limits per day and per month; None means no limit."""

    daily_soft: Decimal | None = None
    daily_hard: Decimal | None = None
    monthly_soft: Decimal | None = None
    monthly_hard: Decimal | None = None

    def get(self, period: str, hard: bool) -> Decimal | None:
        value: Decimal | None = getattr(self, f"{period}_{'hard' if hard else 'soft'}")
        return value


def _usd(value: Any) -> Decimal:
    # Through str() so that a TOML float 0.1 becomes Decimal("0.1"), not its binary twin.
    try:
        ok = not isinstance(value, bool) and isinstance(value, int | float | str | Decimal)
        amount = Decimal(str(value)) if ok else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        raise PydanticCustomError(
            "usd_amount",
            "expected a non-negative USD amount, got {value}",
            {"value": repr(value)},
        )
    return amount


_Usd = Annotated[Decimal, PlainValidator(_usd)]


class SpendLimitSchema(BaseModel):
    """One budget table (``[spend.tenant]``, ``[spend.overrides."tenant:acme"]``): USD or absent."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    daily_soft: _Usd | None = None
    daily_hard: _Usd | None = None
    monthly_soft: _Usd | None = None
    monthly_hard: _Usd | None = None

    def limit(self) -> SpendLimit:
        return SpendLimit(**self.model_dump())


def _scope_key(key: str) -> str:
    kind, _, name = key.partition(":")
    if kind not in SCOPE_KINDS or not name:
        raise PydanticCustomError(
            "scope_key", "must look like 'tenant:acme' (kind tenant, user or feature)"
        )
    return key


class SpendSchema(BaseModel):
    """The ``[spend]`` table: limits per scope kind, and per named scope under ``overrides``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    tenant: SpendLimitSchema = Field(default_factory=SpendLimitSchema)
    user: SpendLimitSchema = Field(default_factory=SpendLimitSchema)
    feature: SpendLimitSchema = Field(default_factory=SpendLimitSchema)
    overrides: dict[Annotated[str, AfterValidator(_scope_key)], SpendLimitSchema] = Field(
        default_factory=dict
    )


@dataclass(frozen=True)
class SpendLimits:
    """Limits per scope kind, and per named scope where ``overrides`` says so."""

    tenant: SpendLimit = SpendLimit()
    user: SpendLimit = SpendLimit()
    feature: SpendLimit = SpendLimit()
    # (kind, name) -> limit, e.g. ("tenant", "acme"); replaces the kind's default whole.
    overrides: Mapping[tuple[str, str], SpendLimit] = field(default_factory=dict)

    def for_scope(self, scope: Scope) -> SpendLimit:
        override = self.overrides.get((scope.kind, scope.name))
        if override is not None:
            return override
        limit: SpendLimit = getattr(self, scope.kind)
        return limit

    @classmethod
    def from_schema(cls, schema: SpendSchema) -> SpendLimits:
        """From a checked ``[spend]`` table."""
        overrides: dict[tuple[str, str], SpendLimit] = {}
        for key, limit in schema.overrides.items():
            kind, _, name = key.partition(":")
            overrides[(kind, name)] = limit.limit()
        return cls(
            tenant=schema.tenant.limit(),
            user=schema.user.limit(),
            feature=schema.feature.limit(),
            overrides=overrides,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SpendLimits:
        """From ``{tenant|user|feature: {daily_hard: 5, ...}, overrides: {"tenant:a": {...}}}``."""
        try:
            schema = SpendSchema.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError("; ".join(schema_errors(exc, "spend"))) from None
        return cls.from_schema(schema)


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """Start and reset time (exclusive end) of the UTC day or month containing ``now``."""
    now = _utc(now)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day, day + timedelta(days=1)
    if period == "monthly":
        start = day.replace(day=1)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        return start, end
    raise ValueError(f"unknown period {period!r}")


@dataclass(frozen=True)
class SpendTotals:
    """USD spent upstream and saved by cache hits over some range."""

    spent: Decimal = _ZERO
    saved: Decimal = _ZERO


class SpendLedger(Protocol):
    """Where spend is kept: add one call, and sum a scope over a time range."""

    def record(self, scope: Scope, when: datetime, spent: Decimal, saved: Decimal) -> None: ...

    def totals(self, scope: Scope, since: datetime, until: datetime) -> SpendTotals: ...


@runtime_checkable
class WrittenLedger(SpendLedger, Protocol):
    """A ledger that keeps ``record`` calls pending until ``flush`` writes them elsewhere (the
    shared store's rows, ``semcache.store.counters.SharedSpendLedger``)."""

    def flush(self) -> None: ...


class MemorySpendLedger:
    """A ledger in process memory, kept per UTC day (budgets never need finer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._days: dict[tuple[Scope, date], list[Decimal]] = defaultdict(lambda: [_ZERO, _ZERO])

    def record(self, scope: Scope, when: datetime, spent: Decimal, saved: Decimal) -> None:
        with self._lock:
            row = self._days[(scope, _utc(when).date())]
            row[0] += spent
            row[1] += saved

    def totals(self, scope: Scope, since: datetime, until: datetime) -> SpendTotals:
        first, last = _utc(since).date(), _utc(until).date()
        with self._lock:
            rows = [
                row for (s, day), row in self._days.items() if s == scope and first <= day < last
            ]
        return SpendTotals(
            spent=sum((r[0] for r in rows), _ZERO), saved=sum((r[1] for r in rows), _ZERO)
        )

    def prune(self, before: datetime) -> None:
        """Forget days before ``before`` (no budget looks further back than a month)."""
        cutoff = _utc(before).date()
        with self._lock:
            for key in [k for k in self._days if k[1] < cutoff]:
                del self._days[key]


def dollars(amount: Decimal) -> str:
    """``amount`` for a message: to the micro-dollar as the cost headers give it (three
    significant digits below that), trailing zeros past the cents dropped, so an estimate of
    $0.0031 or a spend of $9.9985 is not rounded to a figure it is not."""
    places = 6 if amount == 0 or amount.adjusted() >= -6 else 2 - amount.adjusted()
    text = f"{amount.quantize(Decimal(1).scaleb(-places)):f}"
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"


@dataclass(frozen=True)
class BudgetBreach:
    """One budget at or over one of its limits, or that a request's estimate would cross."""

    scope: Scope
    period: str
    hard: bool
    limit: Decimal
    spent: Decimal
    resets_at: datetime
    # The estimated cost of the request being checked ($0 when there is none).
    pending: Decimal = _ZERO

    @property
    def reached(self) -> bool:
        """Whether the limit is reached by what was spent already, without the request."""
        return self.spent >= self.limit

    @property
    def budget(self) -> str:
        """The budget's name, e.g. "tenant acme daily budget $5.00"."""
        return f"{self.scope.label} {self.period} budget {dollars(self.limit)}"

    @property
    def message(self) -> str:
        """What happened: the limit reached by the spend so far, or crossed by the estimate."""
        reset = self.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.reached:
            state = "exhausted" if self.hard else "soft limit reached"
            return f"{self.budget} {state} ({dollars(self.spent)} spent); resets at {reset}"
        kind = "" if self.hard else " soft limit"
        return (
            f"{self.budget}{kind}: this request's estimated cost {dollars(self.pending)} would "
            f"exceed it ({dollars(self.spent)} spent so far); resets at {reset}"
        )


@dataclass(frozen=True)
class SpendDecision:
    """Whether a request may spend: soft alerts to raise, and the hard limit that blocks it."""

    alerts: tuple[BudgetBreach, ...] = ()
    blocked: BudgetBreach | None = None

    @property
    def allowed(self) -> bool:
        return self.blocked is None

    def raise_if_blocked(self, now: datetime) -> None:
        """Raise the 429 for the blocking budget, with Retry-After until it resets."""
        if self.blocked is None:
            return
        wait = max(1, math.ceil((self.blocked.resets_at - _utc(now)).total_seconds()))
        raise RateLimited(
            self.blocked.message,
            code="budget_exceeded",
            headers={"Retry-After": str(wait)},
            extra={
                "budget": self.blocked.budget,
                "resets_at": self.blocked.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )


class SpendBudgets:
    """Checks scopes against their limits and records what calls spent and saved."""

    def __init__(self, limits: SpendLimits, ledger: SpendLedger | None = None) -> None:
        self.limits = limits
        self.ledger: SpendLedger = ledger if ledger is not None else MemorySpendLedger()

    def check(
        self, scopes: Sequence[Scope], now: datetime, pending: Decimal = _ZERO
    ) -> SpendDecision:
        """The decision for a request about to spend ``pending`` (an estimate, or 0).

        A hard limit blocks once reached (spent >= limit) or when ``pending`` would cross it;
        a soft limit alerts on the same terms. With several hard limits reached, the one that
        resets last is named, since the request cannot pass before then.
        """
        alerts: list[BudgetBreach] = []
        blocks: list[BudgetBreach] = []
        for scope in scopes:
            limit = self.limits.for_scope(scope)
            for period in PERIODS:
                soft, hard = limit.get(period, hard=False), limit.get(period, hard=True)
                if soft is None and hard is None:
                    continue
                start, end = period_bounds(period, now)
                spent = self.ledger.totals(scope, start, end).spent
                for value, is_hard, out in ((soft, False, alerts), (hard, True, blocks)):
                    if value is not None and (spent >= value or spent + pending > value):
                        breach = BudgetBreach(scope, period, is_hard, value, spent, end, pending)
                        out.append(breach)
        blocked = max(blocks, key=lambda b: b.resets_at) if blocks else None
        return SpendDecision(alerts=tuple(alerts), blocked=blocked)

    def record(
        self,
        scopes: Iterable[Scope],
        now: datetime,
        spent: Decimal | None,
        saved: Decimal = _ZERO,
    ) -> None:
        """Add one call's cost (None for an unpriced model counts as 0) and savings."""
        for scope in scopes:
            self.ledger.record(scope, now, spent if spent is not None else _ZERO, saved)

    def totals(self, scope: Scope, period: str, now: datetime) -> SpendTotals:
        """What ``scope`` spent and saved in the current day or month."""
        start, end = period_bounds(period, now)
        return self.ledger.totals(scope, start, end)
