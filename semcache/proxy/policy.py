"""The cost and traffic levers around one proxied request.

docs/ARCHITECTURE.md, "Request flow", steps 4 and 10.

``admit`` runs before the cache: routing, the tier's max_tokens clamp, history trimming and the
key's RPM/TPM quota. ``before_upstream`` runs only on a miss: the spend budget (a hit spends $0,
so it is never refused for money) and the upstream model's TPM queue. ``account`` runs once the
answer is known: cost from the provider's usage, savings, quotas settled, spend recorded, one
attribution row queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..errors import RateLimited, SemcacheError
from ..levers.budgets import budget_headers, clamp_max_tokens, trim_history
from ..levers.config import LeversConfig
from ..levers.pricing import PricingTable, Usage, format_usd
from ..levers.prompt_cache import annotate_anthropic, annotate_openai
from ..levers.ratelimit import Buckets, KeyLimiter, ModelQueue
from ..levers.routing import Router
from ..levers.spend import SpendLedger, scopes_for
from ..levers.tokens import TokenCounter
from ..metrics import CacheMetrics
from ..requestlog import note
from ..store.attribution import AttributionStore, UsageRow
from ..wire.base import ANTHROPIC, Wire
from .background import BackgroundTasks
from .spend_guard import SpendGuard

__all__ = ["Admission", "Caller", "Policy"]

log = logging.getLogger(__name__)

# Below this many characters of prompt, counting tokens inline costs less than the hop to a
# worker thread (``TokenCounter`` counts a few thousand characters in well under 0.1 ms); a
# longer prompt is counted off the event loop, where a 100k-character history cannot stall
# every other request.
_INLINE_COUNT_CHARS = 4000


@dataclass(frozen=True)
class Caller:
    """Who is asking, from the API key and the request headers."""

    tenant: str
    tier: str = "default"
    key_id: str = ""
    user: str | None = None
    feature: str | None = None
    task: str | None = None
    urgent: bool = False


@dataclass
class Admission:
    """A request the levers let in: the body to key and send, and what they changed."""

    body: dict[str, Any]
    requested_model: str
    models: list[str]
    estimated_tokens: int
    headers: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    queued: dict[str, int] = field(default_factory=dict)


def usage_of(provider: str, answer: dict[str, Any] | None) -> Usage:
    """The provider's usage in one shape."""
    raw = (answer or {}).get("usage")
    return Usage.from_anthropic(raw) if provider == ANTHROPIC else Usage.from_openai(raw)


class Policy:
    """Applies the levers; one per app instance, used from the event loop only.

    ``buckets`` and ``ledger`` are where rate-limit levels and spend totals live: this
    process's memory by default, or the shared store's rows (``semcache.store.counters``) so
    that limits and budgets hold for every replica together.
    """

    def __init__(
        self,
        config: LeversConfig,
        pricing: PricingTable,
        counter: TokenCounter,
        attribution: AttributionStore,
        metrics: CacheMetrics,
        *,
        buckets: Buckets | None = None,
        ledger: SpendLedger | None = None,
    ) -> None:
        self.config = config
        self.pricing = pricing
        self.counter = counter
        self.attribution = attribution
        self.metrics = metrics
        self.router = Router(
            config.routing,
            failure_threshold=config.failure_threshold,
            cooldown_s=config.cooldown_s,
        )
        self._tiers_by_key: dict[str, str] = {}
        self.keys = KeyLimiter(
            lambda key: config.limits_for(self._tiers_by_key.get(key, "")), buckets=buckets
        )
        self.spending = SpendGuard(config, metrics, ledger)
        self._queues = {
            model: ModelQueue(model, tpm, buckets=buckets, recheck_s=0.2 if buckets else None)
            for model, tpm in config.model_tpm.items()
        }
        self._pending: list[UsageRow] = []
        self._settlements = BackgroundTasks("settling a rate limit")

    # -- before the cache ----------------------------------------------------------------------

    async def admit(self, caller: Caller, wire: Wire, body: dict[str, Any]) -> Admission:
        """Route, clamp, trim and count the request against its key's quota (429 if over)."""
        requested = str(body["model"])
        models = self.router.plan(requested, caller.task)
        body = {**body, "model": models[0]}
        if _prompt_chars(body) < _INLINE_COUNT_CHARS:
            body, headers, tokens = self._shape(caller, wire, body, requested, models)
        else:
            body, headers, tokens = await asyncio.to_thread(
                self._shape, caller, wire, body, requested, models
            )
        return await self._acquire(caller, body, requested, models, tokens, headers)

    def _shape(
        self,
        caller: Caller,
        wire: Wire,
        body: dict[str, Any],
        requested: str,
        models: list[str],
    ) -> tuple[dict[str, Any], dict[str, str], int]:
        """The tier's clamp and trim, and the tokens the request is counted for: the body to
        send, the headers saying what changed, and the estimate (prompt plus max output)."""
        headers: dict[str, str] = {}
        if models[0] != requested:
            headers["X-Semcache-Routed-Model"] = models[0]
        prompt = wire.prompt(body)
        policy = self.config.tiers.get(caller.tier)
        if policy is not None:
            fill = prompt.output_cap
            body, clamped_from = clamp_max_tokens(body, policy, caller.urgent, fill_missing=fill)
            dropped = 0
            if prompt.trimmable:
                messages, dropped = trim_history(
                    body["messages"],
                    policy.input_tokens,
                    self.counter,
                    models[0],
                    system=body.get("system"),
                    tools=body.get("tools"),
                )
                if dropped:
                    body["messages"] = messages
                    prompt = wire.prompt(body)
            headers.update(budget_headers(clamped_from, policy.ceiling(caller.urgent), dropped))
        estimate = self.counter.estimate_chat_tokens(
            models[0], prompt.messages, system=prompt.system, tools=prompt.tools
        )
        max_out = (
            body.get("max_tokens")
            or body.get("max_completion_tokens")
            or body.get("max_output_tokens")
            or 0
        )
        return body, headers, estimate + (max_out if isinstance(max_out, int) else 0)

    async def admit_tokens(self, caller: Caller, body: dict[str, Any], tokens: int) -> Admission:
        """Admit a request that is not routed, clamped or trimmed (embeddings): its key's
        quota only, for ``tokens`` prompt tokens."""
        model = str(body["model"])
        return await self._acquire(caller, body, model, [model], tokens, {})

    async def _acquire(
        self,
        caller: Caller,
        body: dict[str, Any],
        requested: str,
        models: list[str],
        tokens: int,
        headers: dict[str, str],
    ) -> Admission:
        self._tiers_by_key[caller.key_id] = caller.tier
        headers.update(await self.keys.acquire(caller.key_id, tokens))
        return Admission(body, requested, models, tokens, headers)

    # -- on a miss, before the upstream -----------------------------------------------------------

    async def before_upstream(self, caller: Caller, admission: Admission, model: str) -> None:
        """Refuse a request over a hard spend budget; wait for the model's TPM budget."""
        estimate = self.pricing.estimate(model, admission.estimated_tokens, 0).usd or Decimal(0)
        await self.spending.check(scopes_for(caller.tenant, caller.user, caller.feature), estimate)
        queue = self._queues.get(model)
        if queue is not None:
            waited = time.perf_counter()
            await queue.acquire(admission.estimated_tokens, self.config.queue_max_wait_s)
            admission.queued[model] = admission.estimated_tokens
            ms = int((time.perf_counter() - waited) * 1000)
            admission.headers["X-Semcache-Queued-Ms"] = str(ms)

    def annotate(self, caller: Caller, provider: str, body: dict[str, Any]) -> dict[str, Any]:
        """The upstream body with provider prompt-cache hints on its stable prefix."""
        if provider == ANTHROPIC and self.config.annotate_anthropic:
            body, added = annotate_anthropic(body, self.config.anthropic_min_tokens, self.counter)
            if added:
                self.metrics.prompt_cache_breakpoints.inc(added)
            return body
        if provider != ANTHROPIC and self.config.annotate_openai:
            return annotate_openai(body, salt=caller.tenant)
        return body

    # -- after -----------------------------------------------------------------------------------

    def account(
        self,
        caller: Caller,
        admission: Admission,
        provider: str,
        *,
        status: str,
        model: str,
        answer: dict[str, Any] | None,
        from_upstream: bool,
    ) -> dict[str, str]:
        """Cost, savings, quota settlement, spend and attribution; returns the cost headers."""
        usage = usage_of(provider, answer)
        cost = self.pricing.cost(model, usage)
        actual = usage.prompt_tokens + usage.output
        if admission.queued or self.keys.limits_tokens(caller.key_id):
            self._settlements.spawn(
                self._settle(caller, admission, model, actual if from_upstream else 0)
            )
        headers: dict[str, str] = {}
        spent: Decimal | None
        cache_saved: Decimal | None
        if from_upstream:
            spent, saved = cost.usd, Decimal(0)
            # Provider prompt caching: reads save money (>= 0); a write is billed in the cost
            # at its own price (1.25x input on Anthropic), never reported as a negative saving.
            cache_saved = self.pricing.prompt_cache_saving(model, usage)
            headers["X-Semcache-Cost-USD"] = format_usd(cost.usd)
            if cache_saved is not None and (usage.cached_read or usage.cache_write):
                headers["X-Semcache-Prompt-Cache-Saved-USD"] = format_usd(cache_saved)
            premium = self.pricing.cache_write_premium(model, usage)
            if premium is not None and usage.cache_write:
                headers["X-Semcache-Prompt-Cache-Write-USD"] = format_usd(premium)
        else:
            # A hit spends nothing and saves what its answer cost the first time.
            spent, saved, cache_saved = Decimal(0), cost.usd or Decimal(0), Decimal(0)
            headers["X-Semcache-Cost-USD"] = format_usd(Decimal(0))
            headers["X-Semcache-Saved-USD"] = format_usd(cost.usd)
        now = time.time()
        scopes = scopes_for(caller.tenant, caller.user, caller.feature)
        self.spending.record(scopes, datetime.fromtimestamp(now, UTC), spent, saved)
        self.metrics.record_cost(model, status, spent, saved, cache_saved)
        row = _usage_row(
            caller,
            model,
            status,
            now=now,
            started=admission.started,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.output,
            cached_tokens=usage.cached_read,
            cost_usd=float(spent) if spent is not None else None,
            saved_usd=float(saved),
            prompt_cache_saved_usd=float(cache_saved or 0),
        )
        self._pending.append(row)
        note(
            model=model,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            cost_usd=row.cost_usd,
            saved_usd=row.saved_usd,
        )
        return headers

    def reject(self, caller: Caller, model: str, error: SemcacheError, started: float) -> str:
        """An attribution row for a request that got no answer, with the status that says why
        (REJECTED-RATE, REJECTED-BUDGET, REJECTED-<4xx> or ERROR-<5xx>); returns it."""
        if isinstance(error, RateLimited):
            budget = error.code == "budget_exceeded"
            status = "REJECTED-BUDGET" if budget else "REJECTED-RATE"
            self.metrics.rejections.labels("budget" if budget else "rate_limit").inc()
        elif error.status_code < 500:
            status = f"REJECTED-{error.status_code}"
            self.metrics.rejections.labels("client_error").inc()
        else:
            status = f"ERROR-{error.status_code}"
        self._pending.append(_usage_row(caller, model, status, now=time.time(), started=started))
        note(cache=status, model=model)
        return status

    async def _settle(self, caller: Caller, admission: Admission, model: str, actual: int) -> None:
        """Correct the key's and the models' token charges to what the call used."""
        await self.keys.settle(caller.key_id, admission.estimated_tokens, actual)
        for queued_model, tokens in admission.queued.items():
            used = actual if queued_model == model else 0
            await self._queues[queued_model].settle(tokens, used)

    async def flush(self) -> int:
        """Write queued attribution rows in one transaction."""
        pending, self._pending = self._pending, []
        if pending:
            try:
                await asyncio.to_thread(self.attribution.add_many, pending)
            except BaseException:
                self._pending[:0] = pending  # keep them for the next flush
                raise
        return len(pending)

    def seed_spend(self) -> None:
        """This month's spend from the attribution rows, so budgets survive a restart."""
        self.spending.seed(self.attribution)

    async def drain(self) -> None:
        """Wait for settlements, alert webhooks and the shared ledger's last write (at
        shutdown)."""
        await self._settlements.drain()
        await self.spending.drain()


def _usage_row(
    caller: Caller,
    model: str,
    status: str,
    *,
    now: float,
    started: float,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cached_tokens: int = 0,
    cost_usd: float | None = 0.0,
    saved_usd: float = 0.0,
    prompt_cache_saved_usd: float = 0.0,
) -> UsageRow:
    """The attribution row of ``caller``'s request, finished at ``now`` (epoch seconds), begun
    at ``started`` (``time.perf_counter``); a refused request spent and saved nothing."""
    return UsageRow(
        ts=now,
        day=datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d"),
        tenant=caller.tenant,
        user=caller.user or "",
        feature=caller.feature or "",
        model=model,
        status=status,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached_tokens,
        cost_usd=cost_usd,
        saved_usd=saved_usd,
        prompt_cache_saved_usd=prompt_cache_saved_usd,
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def _prompt_chars(body: dict[str, Any]) -> int:
    """About how much text the token counter would read: the size of the parts it counts."""
    total = 0
    for name in ("messages", "input", "system", "tools", "instructions"):
        value = body.get(name)
        if isinstance(value, str):
            total += len(value)
        elif value is not None:
            total += len(repr(value))
    return total
