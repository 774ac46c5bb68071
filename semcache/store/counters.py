"""Rate-limit buckets and spend totals in PostgreSQL, shared by every replica on one database.

``SharedBuckets`` implements ``semcache.levers.ratelimit.Buckets``: a take locks the buckets'
rows (``SELECT ... FOR UPDATE``, in name order so two takes never deadlock), refills them to
the database's clock and takes from all or none, in one transaction. A limit of 60 RPM is
therefore 60 requests a minute for the cluster, exactly, whatever the number of replicas.

``SharedSpendLedger`` implements ``semcache.levers.spend.SpendLedger``: a call's spend is
added to this process's pending totals at once and written (``spent = spent + n``, atomic) by
``flush``, which the policy runs in the background right after each call is accounted, and
totals are the shared rows plus what this process has not written yet. The bound: a budget
check does not see another replica's calls accounted in the last write's round trip (a few
milliseconds), besides calls still in flight everywhere, which no budget check can see (a hard
limit is checked against the estimate before the call and charged the actual cost after).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError

from ..levers.ratelimit import BucketSpec, TokenBucket
from ..levers.spend import Scope, SpendTotals
from .pg_errors import pg_storage_error

__all__ = ["SharedBuckets", "SharedSpendLedger"]

# Made by revision 0006 on PostgreSQL only; not in schema.py, whose tables both backends have.
_meta = MetaData()
rate_buckets = Table(
    "rate_buckets",
    _meta,
    Column("name", String(300), primary_key=True),
    Column("level", Float, nullable=False),
    Column("at", Float, nullable=False),
)
spend_days = Table(
    "spend_days",
    _meta,
    Column("kind", String(10), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("tenant", String(200), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("spent", Numeric, nullable=False),
    Column("saved", Numeric, nullable=False),
)

_NOW = func.extract("epoch", func.clock_timestamp())
_ZERO = Decimal(0)


class SharedBuckets:
    """Token buckets as rows; each method runs its transaction in a worker thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        seed = insert(rate_buckets).values(
            name=bindparam("name"), level=bindparam("capacity"), at=_NOW
        )
        self._seed = seed.on_conflict_do_nothing(index_elements=[rate_buckets.c.name])
        self._lock = (
            select(rate_buckets.c.name, rate_buckets.c.level, rate_buckets.c.at, _NOW)
            .where(rate_buckets.c.name.in_(bindparam("names", expanding=True)))
            .order_by(rate_buckets.c.name)
            .with_for_update()
        )
        self._set = (
            update(rate_buckets)
            .where(rate_buckets.c.name == bindparam("b_name"))
            .values(level=bindparam("b_level"), at=bindparam("b_at"))
        )

    def _locked(
        self, conn: Connection, specs: Sequence[BucketSpec]
    ) -> tuple[list[TokenBucket], float]:
        """The buckets' rows locked for this transaction, refilled to the database's clock."""
        execute = conn.execute
        names = sorted({spec.name for spec in specs})
        execute(self._seed, [{"name": s.name, "capacity": s.capacity} for s in specs])
        rows = {row[0]: row for row in execute(self._lock, {"names": names})}
        now = max(float(row[3]) for row in rows.values())
        buckets = []
        for spec in specs:
            _, level, at, _ = rows[spec.name]
            refilled = min(spec.capacity, level + max(0.0, now - at) * spec.refill_per_s)
            buckets.append(TokenBucket.snapshot(spec.capacity, spec.refill_per_s, refilled, now))
        return buckets, now

    def _write(
        self, conn: Connection, specs: Sequence[BucketSpec], levels: list[float], now: float
    ) -> None:
        conn.execute(
            self._set,
            [
                {"b_name": s.name, "b_level": level, "b_at": now}
                for s, level in zip(specs, levels, strict=True)
            ],
        )

    def _take(self, wants: Sequence[tuple[BucketSpec, float]]) -> tuple[bool, list[TokenBucket]]:
        specs = [spec for spec, _ in wants]
        try:
            with self.engine.begin() as conn:
                buckets, now = self._locked(conn, specs)
                if any(b.level < n for b, (_, n) in zip(buckets, wants, strict=True)):
                    return False, buckets
                levels = [b.level - n for b, (_, n) in zip(buckets, wants, strict=True)]
                self._write(conn, specs, levels, now)
        except SQLAlchemyError as exc:
            raise pg_storage_error("cannot check a rate limit", exc) from exc
        after = [
            TokenBucket.snapshot(s.capacity, s.refill_per_s, level, now)
            for s, level in zip(specs, levels, strict=True)
        ]
        return True, after

    def _settle(self, spec: BucketSpec, estimated: float, actual: float) -> None:
        try:
            with self.engine.begin() as conn:
                (bucket,), now = self._locked(conn, [spec])
                level = min(spec.capacity, bucket.level + estimated - actual)
                self._write(conn, [spec], [level], now)
        except SQLAlchemyError as exc:
            raise pg_storage_error("cannot settle a rate limit", exc) from exc

    def _peek(self, specs: Sequence[BucketSpec]) -> list[TokenBucket]:
        if not specs:
            return []
        try:
            # Locks and refills without writing: the rows keep their level and time, so a
            # read is exact and rolls back.
            with self.engine.connect() as conn, conn.begin():
                buckets, _ = self._locked(conn, specs)
        except SQLAlchemyError as exc:
            raise pg_storage_error("cannot read a rate limit", exc) from exc
        return buckets

    async def take(
        self, wants: Sequence[tuple[BucketSpec, float]]
    ) -> tuple[bool, list[TokenBucket]]:
        return await asyncio.to_thread(self._take, wants)

    async def settle(self, spec: BucketSpec, estimated: float, actual: float) -> None:
        await asyncio.to_thread(self._settle, spec, estimated, actual)

    async def peek(self, specs: Sequence[BucketSpec]) -> list[TokenBucket]:
        return await asyncio.to_thread(self._peek, specs)


def _day(when: datetime) -> str:
    return (when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)).strftime(
        "%Y-%m-%d"
    )


class SharedSpendLedger:
    """Spend per budget scope and UTC day in shared rows (module doc: what a check can miss)."""

    shared = True

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._pending: dict[tuple[Scope, str], list[Decimal]] = defaultdict(lambda: [_ZERO, _ZERO])
        stmt = insert(spend_days).values(
            kind=bindparam("kind"),
            name=bindparam("name"),
            tenant=bindparam("tenant"),
            day=bindparam("day"),
            spent=bindparam("spent"),
            saved=bindparam("saved"),
        )
        self._add = stmt.on_conflict_do_update(
            index_elements=[
                spend_days.c.tenant,
                spend_days.c.kind,
                spend_days.c.name,
                spend_days.c.day,
            ],
            set_={
                "spent": spend_days.c.spent + stmt.excluded.spent,
                "saved": spend_days.c.saved + stmt.excluded.saved,
            },
        )

    def record(self, scope: Scope, when: datetime, spent: Decimal, saved: Decimal) -> None:
        with self._lock:
            row = self._pending[(scope, _day(when))]
            row[0] += spent
            row[1] += saved

    def flush(self) -> None:
        """Write this process's pending totals; kept for the next flush if the write fails."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(lambda: [_ZERO, _ZERO])
        if not pending:
            return
        rows = [
            {
                "kind": scope.kind,
                "name": scope.name,
                "tenant": scope.tenant,
                "day": day,
                "spent": spent,
                "saved": saved,
            }
            # Sorted: two replicas' flushes lock the same rows in the same order.
            for (scope, day), (spent, saved) in sorted(
                pending.items(),
                key=lambda item: (item[0][0].tenant, item[0][0].kind, item[0][0].name, item[0][1]),
            )
        ]
        try:
            with self.engine.begin() as conn:
                conn.execute(self._add, rows)
        except SQLAlchemyError as exc:
            with self._lock:
                for key, (spent, saved) in pending.items():
                    self._pending[key][0] += spent
                    self._pending[key][1] += saved
            raise pg_storage_error("cannot record spend", exc) from exc

    def totals(self, scope: Scope, since: datetime, until: datetime) -> SpendTotals:
        first, last = _day(since), _day(until)
        query = select(
            func.coalesce(func.sum(spend_days.c.spent), 0),
            func.coalesce(func.sum(spend_days.c.saved), 0),
        ).where(
            spend_days.c.tenant == scope.tenant,
            spend_days.c.kind == scope.kind,
            spend_days.c.name == scope.name,
            spend_days.c.day >= first,
            spend_days.c.day < last,
        )
        try:
            with self.engine.connect() as conn:
                spent, saved = conn.execute(query).one()
        except SQLAlchemyError as exc:
            raise pg_storage_error("cannot read spend", exc) from exc
        spent, saved = Decimal(spent), Decimal(saved)
        with self._lock:
            for (pending_scope, day), row in self._pending.items():
                if pending_scope == scope and first <= day < last:
                    spent += row[0]
                    saved += row[1]
        return SpendTotals(spent=spent, saved=saved)
