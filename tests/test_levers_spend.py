from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from semcache.errors import ConfigError, RateLimited
from semcache.levers.spend import (
    Scope,
    SpendBudgets,
    SpendLimit,
    SpendLimits,
    period_bounds,
    scopes_for,
)

NOW = datetime(2025, 3, 14, 22, 30, tzinfo=UTC)


def _budgets() -> SpendBudgets:
    return SpendBudgets(
        SpendLimits(
            tenant=SpendLimit(daily_soft=Decimal("4"), daily_hard=Decimal("5")),
            user=SpendLimit(monthly_hard=Decimal("20")),
        )
    )


def test_hard_daily_budget_blocks_until_next_utc_midnight() -> None:
    budgets = _budgets()
    scopes = scopes_for("acme", user="bob")
    budgets.record(scopes, NOW, Decimal("3.00"))
    assert budgets.check(scopes, NOW).allowed
    budgets.record(scopes, NOW, Decimal("2.12"))
    decision = budgets.check(scopes, NOW)
    assert not decision.allowed and decision.blocked is not None
    assert decision.blocked.budget == "tenant acme daily budget $5.00"
    assert decision.blocked.resets_at == datetime(2025, 3, 15, tzinfo=UTC)
    with pytest.raises(RateLimited) as err:
        decision.raise_if_blocked(NOW)
    assert err.value.status_code == 429
    assert err.value.headers["Retry-After"] == str(90 * 60)
    body = err.value.to_body()["error"]
    assert "tenant acme daily budget $5.00" in body["message"]
    assert body["resets_at"] == "2025-03-15T00:00:00Z"
    # The soft limit was passed too, and is reported as an alert.
    assert [a.budget for a in decision.alerts] == ["tenant acme daily budget $4.00"]
    # A new UTC day starts from zero.
    assert budgets.check(scopes, NOW + timedelta(hours=2)).allowed


def test_soft_limit_alerts_but_allows() -> None:
    budgets = _budgets()
    scopes = scopes_for("acme")
    budgets.record(scopes, NOW, Decimal("4.50"))
    decision = budgets.check(scopes, NOW)
    assert decision.allowed and len(decision.alerts) == 1
    assert not decision.alerts[0].hard
    # An estimate that would cross the hard limit blocks before the call is made.
    assert not budgets.check(scopes, NOW, pending=Decimal("0.60")).allowed


def test_a_refusal_on_the_estimate_says_estimated_against_spent() -> None:
    budgets = SpendBudgets(
        SpendLimits(tenant=SpendLimit(daily_soft=Decimal("8"), daily_hard=Decimal("10")))
    )
    scopes = scopes_for("acme")
    decision = budgets.check(scopes, NOW, pending=Decimal("12.50"))
    assert decision.blocked is not None
    with pytest.raises(RateLimited) as err:
        decision.raise_if_blocked(NOW)
    assert err.value.to_body()["error"]["message"] == (
        "tenant acme daily budget $10.00: this request's estimated cost $12.50 would exceed "
        "it ($0.00 spent so far); resets at 2025-03-15T00:00:00Z"
    )
    [alert] = decision.alerts
    assert alert.message.startswith(
        "tenant acme daily budget $8.00 soft limit: this request's estimated cost $12.50 "
        "would exceed it ($0.00 spent so far)"
    )
    # Amounts keep their digits instead of being rounded to the cent.
    budgets.record(scopes, NOW, Decimal("9.9985"))
    small = budgets.check(scopes, NOW, pending=Decimal("0.003158")).blocked
    assert small is not None
    assert "estimated cost $0.003158 would exceed it ($9.9985 spent so far)" in small.message
    # Once the spend itself reaches the limit, the budget is exhausted whatever the estimate.
    budgets.record(scopes, NOW, Decimal("0.0015"))
    spent = budgets.check(scopes, NOW, pending=Decimal("0.003158")).blocked
    assert spent is not None
    assert spent.message.startswith("tenant acme daily budget $10.00 exhausted ($10.00 spent)")
    tiny = SpendBudgets(SpendLimits(tenant=SpendLimit(daily_hard=Decimal("0.000001"))))
    refused = tiny.check(scopes, NOW, pending=Decimal("0.00002")).blocked
    assert refused is not None and refused.budget == "tenant acme daily budget $0.000001"


def test_monthly_budget_resets_on_the_first() -> None:
    budgets = _budgets()
    scopes = scopes_for("acme", user="bob")
    for day in range(1, 5):  # bob spends $20 over four days
        budgets.record(scopes[1:], datetime(2025, 12, day, tzinfo=UTC), Decimal("5"))
    when = datetime(2025, 12, 31, 23, 59, tzinfo=UTC)
    decision = budgets.check(scopes, when)
    assert decision.blocked is not None
    assert decision.blocked.budget == "user bob monthly budget $20.00"
    assert decision.blocked.resets_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert budgets.check(scopes, datetime(2026, 1, 1, tzinfo=UTC)).allowed


def test_cache_hits_spend_nothing_and_count_as_saved() -> None:
    budgets = _budgets()
    tenant = Scope("tenant", "acme", "acme")
    budgets.record([tenant], NOW, Decimal("0"), saved=Decimal("0.75"))
    budgets.record([tenant], NOW, None, saved=Decimal("0.25"))
    totals = budgets.totals(tenant, "daily", NOW)
    assert (totals.spent, totals.saved) == (Decimal("0"), Decimal("1.00"))


def test_users_are_scoped_by_tenant_and_overrides_apply() -> None:
    limits = SpendLimits.from_mapping(
        {"tenant": {"daily_hard": 1}, "overrides": {"tenant:big": {"daily_hard": "100"}}}
    )
    budgets = SpendBudgets(limits)
    budgets.record(scopes_for("big", user="bob"), NOW, Decimal("50"))
    assert budgets.check(scopes_for("big"), NOW).allowed
    assert budgets.check(scopes_for("small", user="bob"), NOW).allowed
    budgets.record(scopes_for("small"), NOW, Decimal("1"))
    assert not budgets.check(scopes_for("small"), NOW).allowed
    with pytest.raises(ConfigError):
        SpendLimits.from_mapping({"tenant": {"daily": 1}})
    with pytest.raises(ConfigError):
        SpendLimits.from_mapping({"overrides": {"acme": {"daily_hard": 1}}})


def test_period_bounds_treat_naive_times_as_utc() -> None:
    start, end = period_bounds("monthly", datetime(2024, 2, 29, 12))
    assert (start, end) == (datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))
