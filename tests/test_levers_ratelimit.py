from __future__ import annotations

import asyncio
import math

import pytest

from semcache.errors import RateLimited
from semcache.levers.ratelimit import KeyLimiter, ModelQueue, RateLimits, TokenBucket, format_reset


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_refills_and_settles() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, 10, clock)
    assert bucket.try_take(100) and not bucket.try_take(1)
    assert bucket.time_until(50) == pytest.approx(5.0)
    clock.advance(5)
    assert bucket.try_take(50) and bucket.level == pytest.approx(0)
    bucket.settle(50, 20)  # estimated 50, used 20: refund 30
    assert bucket.level == pytest.approx(30)
    bucket.settle(10, 60)  # used 50 more than estimated: charged, into debt
    assert bucket.level == pytest.approx(-20)
    assert bucket.time_until(10) == pytest.approx(3.0)
    clock.advance(1000)
    assert bucket.level == 100  # never above capacity
    assert bucket.time_until(101) == math.inf


def test_reset_durations_look_like_openai() -> None:
    assert format_reset(0.12) == "120ms"
    assert format_reset(6) == "6s"
    assert format_reset(60) == "1m0s"
    assert format_reset(86.4) == "1m26.4s"
    assert format_reset(3723) == "1h2m3s"
    assert format_reset(0) == "0s"


def test_key_limiter_rpm_and_headers() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(RateLimits(rpm=2, tpm=1000), clock)
    headers = asyncio.run(limiter.acquire("k", 100))
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "1"
    assert headers["x-ratelimit-remaining-tokens"] == "900"
    assert headers["x-ratelimit-reset-requests"] == "30s"
    assert headers["x-ratelimit-reset-tokens"] == "6s"
    asyncio.run(limiter.acquire("k", 100))
    with pytest.raises(RateLimited) as err:
        asyncio.run(limiter.acquire("k", 100))
    assert err.value.status_code == 429
    assert err.value.headers["Retry-After"] == "30"
    assert err.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert "RPM" in err.value.message
    asyncio.run(limiter.acquire("other", 100))  # keys are independent


def test_key_limiter_tpm_refusal_keeps_the_request_slot_and_settles() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(lambda key: RateLimits(rpm=10, tpm=600), clock)
    asyncio.run(limiter.acquire("k", 500))
    with pytest.raises(RateLimited, match="TPM"):
        asyncio.run(limiter.acquire("k", 200))
    assert asyncio.run(limiter.headers("k"))["x-ratelimit-remaining-requests"] == "9"
    asyncio.run(limiter.settle("k", 500, 100))  # actual usage was lower: 400 back
    asyncio.run(limiter.acquire("k", 200))
    with pytest.raises(RateLimited, match="too large"):
        asyncio.run(limiter.acquire("k", 601))
    assert asyncio.run(limiter.headers("k"))["x-ratelimit-remaining-requests"] == "8"


def test_a_key_without_limits_gets_no_headers() -> None:
    limiter = KeyLimiter(RateLimits())
    assert asyncio.run(limiter.acquire("k", 10**9)) == {}


async def _spin() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_model_queue_admits_in_order_after_refill() -> None:
    async def run() -> None:
        clock = FakeClock()
        queue = ModelQueue("gpt-4o", tpm=600, clock=clock)  # 10 tokens a second
        await queue.acquire(600, max_wait_s=0)
        first = asyncio.create_task(queue.acquire(100, max_wait_s=60))
        second = asyncio.create_task(queue.acquire(50, max_wait_s=60))
        await _spin()
        assert queue.waiting == 2
        clock.advance(5)  # 50 tokens: enough for the second, but it waits its turn
        queue.wake()
        await _spin()
        assert not first.done() and not second.done()
        clock.advance(5)
        queue.wake()
        await _spin()
        assert first.done() and not second.done()
        clock.advance(5)
        queue.wake()
        await _spin()
        assert second.done() and queue.waiting == 0

    asyncio.run(run())


def test_model_queue_times_out_with_retry_after() -> None:
    async def run() -> None:
        clock = FakeClock()
        queue = ModelQueue("gpt-4o", tpm=600, clock=clock)
        await queue.acquire(600, max_wait_s=0)
        waiter = asyncio.create_task(queue.acquire(300, max_wait_s=1.0))
        await _spin()
        clock.advance(1.5)
        queue.wake()
        await _spin()
        with pytest.raises(RateLimited) as err:
            await waiter
        assert err.value.headers["Retry-After"] == "29"  # 285 tokens short at 10/s
        with pytest.raises(RateLimited):
            await queue.acquire(601, max_wait_s=60)  # can never fit

    asyncio.run(run())


def test_model_queue_waits_in_real_time_and_settles() -> None:
    async def run() -> None:
        queue = ModelQueue("m", tpm=60_000)  # 1000 tokens a second, real clock
        await queue.acquire(60_000, max_wait_s=0)
        await asyncio.wait_for(queue.acquire(20, max_wait_s=1.0), timeout=1.0)
        await queue.settle(60_000, 0)  # nothing was used after all: the budget comes back
        await asyncio.wait_for(queue.acquire(50_000, max_wait_s=0), timeout=0.1)

    asyncio.run(run())


def test_cancelled_waiter_leaves_the_queue() -> None:
    async def run() -> None:
        clock = FakeClock()
        queue = ModelQueue("m", tpm=600, clock=clock)
        await queue.acquire(600, max_wait_s=0)
        big = asyncio.create_task(queue.acquire(500, max_wait_s=60))
        small = asyncio.create_task(queue.acquire(10, max_wait_s=60))
        await _spin()
        big.cancel()
        await _spin()
        clock.advance(1)
        queue.wake()
        await _spin()
        assert small.done() and queue.waiting == 0

    asyncio.run(run())
