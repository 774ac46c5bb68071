"""The proxy's spend budgets: checked before a miss's upstream call, recorded after each
answer, alerted once per budget and period, and, with a shared ledger, written to the shared
store right after each call so that every replica's budget sees it.

docs/ARCHITECTURE.md, "Request flow", steps 4 and 10.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal

from ..errors import SemcacheError, UpstreamUnavailable
from ..levers.config import LeversConfig
from ..levers.spend import (
    BudgetBreach,
    Scope,
    SpendBudgets,
    SpendLedger,
    WrittenLedger,
    scopes_for,
)
from ..metrics import CacheMetrics
from ..store.attribution import AttributionStore
from ..upstream.webhook import post_webhook
from .background import BackgroundTasks

__all__ = ["SpendGuard"]

log = logging.getLogger(__name__)


class SpendGuard:
    """The spend budgets of one app instance, used from the event loop only.

    ``ledger`` is where the totals live: this process's memory by default, or the shared
    store's rows (``semcache.store.counters``), read in a worker thread and written right
    after each call.
    """

    def __init__(
        self, config: LeversConfig, metrics: CacheMetrics, ledger: SpendLedger | None = None
    ) -> None:
        self.alert_webhook = config.alert_webhook
        self.metrics = metrics
        self.budgets = SpendBudgets(config.spend, ledger)
        self._shared_ledger = ledger if isinstance(ledger, WrittenLedger) else None
        self._ledger_dirty = asyncio.Event()
        self._ledger_writer: asyncio.Task[None] | None = None
        self._alerted: set[tuple[str, str, str]] = set()
        self._background = BackgroundTasks("a spend alert webhook")

    async def check(self, scopes: list[Scope], estimate: Decimal) -> None:
        """Refuse (``RateLimited``) a call of ``estimate`` USD over a hard budget of any of
        ``scopes``; alert on the soft ones it crosses."""
        now = datetime.now(UTC)
        if self._shared_ledger is not None:
            decision = await asyncio.to_thread(self.budgets.check, scopes, now, estimate)
        else:
            decision = self.budgets.check(scopes, now, pending=estimate)
        for breach in decision.alerts:
            self._alert(breach)
        decision.raise_if_blocked(now)

    def record(
        self, scopes: list[Scope], when: datetime, spent: Decimal | None, saved: Decimal
    ) -> None:
        """Add one call's spend and savings to the totals of ``scopes``."""
        self.budgets.record(scopes, when, spent, saved)
        if self._shared_ledger is not None:
            self._write_soon()

    def seed(self, attribution: AttributionStore) -> None:
        """Load this month's spend from the attribution rows, so budgets survive a restart.
        A shared ledger keeps its own rows and needs none."""
        if self._shared_ledger is not None:
            return
        start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        for row in attribution.rows(since=start.timestamp()):
            scopes = scopes_for(row["tenant"], row["user"] or None, row["feature"] or None)
            spent = Decimal(str(row["cost_usd"])) if row["cost_usd"] is not None else None
            when = datetime.fromtimestamp(row["ts"], UTC)
            self.budgets.record(scopes, when, spent, Decimal(str(row["saved_usd"])))

    async def drain(self) -> None:
        """Wait for alert webhooks still being posted (at shutdown; each is bounded by 5 s)
        and the shared ledger's last write."""
        await self._background.drain()
        if self._shared_ledger is not None:
            await asyncio.to_thread(self._shared_ledger.flush)

    def _write_soon(self) -> None:
        """Have the shared ledger written now; calls accounted meanwhile go in the next write."""
        self._ledger_dirty.set()
        if self._ledger_writer is None or self._ledger_writer.done():
            self._ledger_writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        ledger = self._shared_ledger
        assert ledger is not None
        while self._ledger_dirty.is_set():
            self._ledger_dirty.clear()
            try:
                await asyncio.to_thread(ledger.flush)
            except SemcacheError as exc:
                # The totals stay pending in this process (counted by its own checks) and go
                # in the next write; the attribution flush retries the same way.
                log.warning("spend not written yet: %s", exc.message)
                return

    def _alert(self, breach: BudgetBreach) -> None:
        period_key = breach.resets_at.isoformat()
        key = (breach.scope.label, breach.period, period_key)
        if key in self._alerted:
            return
        self._alerted.add(key)
        log.warning("spend alert: %s", breach.message)
        self.metrics.budget_alerts.labels(breach.scope.kind, breach.period).inc()
        if self.alert_webhook:
            self._background.spawn(self._post_alert(breach))

    async def _post_alert(self, breach: BudgetBreach) -> None:
        payload = {
            "budget": breach.budget,
            "message": breach.message,
            "spent_usd": str(breach.spent),
            "estimated_usd": str(breach.pending),
            "limit_usd": str(breach.limit),
            "resets_at": breach.resets_at.isoformat(),
        }
        try:
            await post_webhook(self.alert_webhook, payload)
        except UpstreamUnavailable as exc:
            # An alert that cannot be delivered must not fail the request; the log line and
            # the metric above still record it.
            log.warning("spend alert webhook failed: %s", exc.message)
