"""Cost-control levers the proxy applies around an upstream call; pure, no HTTP.

pricing (cost of a call), tokens (estimates before it), budgets (max_tokens ceilings, history
trimming), spend (USD budgets), ratelimit (per key and per model limits), routing (model
choice, fallbacks, cool-downs) and prompt_cache (provider prompt-cache annotation).
"""

from __future__ import annotations

from .budgets import (
    DEFAULT_TIERS,
    HEADER_HISTORY_TRIMMED,
    HEADER_MAX_TOKENS_CLAMPED,
    HEADER_URGENCY,
    TierPolicy,
    budget_headers,
    clamp_max_tokens,
    is_urgent,
    tier_policies,
    trim_history,
)
from .pricing import Cost, ModelPrice, PricingTable, Usage, format_usd
from .prompt_cache import (
    ANTHROPIC_MAX_BREAKPOINTS,
    annotate_anthropic,
    annotate_openai,
    anthropic_min_cacheable_tokens,
    openai_prompt_cache_key,
)
from .ratelimit import KeyLimiter, ModelQueue, RateLimits, TokenBucket, format_reset
from .routing import HEADER_TASK, FailureKind, Router, RoutingRules, classify_failure
from .spend import (
    BudgetBreach,
    MemorySpendLedger,
    Scope,
    SpendBudgets,
    SpendDecision,
    SpendLedger,
    SpendLimit,
    SpendLimits,
    SpendTotals,
    period_bounds,
    scopes_for,
)
from .tokens import TokenCounter, encoding_for_model

__all__ = [
    "ANTHROPIC_MAX_BREAKPOINTS",
    "DEFAULT_TIERS",
    "HEADER_HISTORY_TRIMMED",
    "HEADER_MAX_TOKENS_CLAMPED",
    "HEADER_TASK",
    "HEADER_URGENCY",
    "BudgetBreach",
    "Cost",
    "FailureKind",
    "KeyLimiter",
    "MemorySpendLedger",
    "ModelPrice",
    "ModelQueue",
    "PricingTable",
    "RateLimits",
    "Router",
    "RoutingRules",
    "Scope",
    "SpendBudgets",
    "SpendDecision",
    "SpendLedger",
    "SpendLimit",
    "SpendLimits",
    "SpendTotals",
    "TierPolicy",
    "TokenBucket",
    "TokenCounter",
    "Usage",
    "annotate_anthropic",
    "annotate_openai",
    "anthropic_min_cacheable_tokens",
    "budget_headers",
    "clamp_max_tokens",
    "classify_failure",
    "encoding_for_model",
    "format_reset",
    "format_usd",
    "is_urgent",
    "openai_prompt_cache_key",
    "period_bounds",
    "scopes_for",
    "tier_policies",
    "trim_history",
]
