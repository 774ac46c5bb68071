"""Upstream faults through the proxy: retries, backoff, Retry-After, mapping, no stored errors."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from proxy_fixtures import openai_client, semcache_in_front_of
from servers import ServerProcess, free_port
from simulator_helpers import RunningSimulator

from semcache.upstream.retry import RetryPolicy, parse_retry_after


@pytest.fixture(scope="module")
def server(
    sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("proxy-faults")
    with semcache_in_front_of(sim, data, stale_if_error_s="3600") as running:
        yield running


@pytest.fixture()
def client(server: ServerProcess) -> openai.OpenAI:
    return openai_client(server)


def ask(text: str | None = None) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text or f"Fault probe {uuid.uuid4().hex}"}]


def fault(name: str, **extra: str) -> dict[str, str]:
    return {"X-Sim-Fault": name, **extra}


def test_retries_429_then_succeeds(client: openai.OpenAI, sim: RunningSimulator) -> None:
    before = sim.stats()["requests"]
    sim.schedule_faults(["429", "503"])
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ask())
    assert raw.headers["x-semcache-status"] == "MISS"
    assert sim.stats()["requests"] == before + 3


def test_retry_after_is_honoured(client: openai.OpenAI, sim: RunningSimulator) -> None:
    sim.schedule_faults(["429"])
    started = time.monotonic()
    client.chat.completions.create(
        model="gpt-4o-mini", messages=ask(), extra_headers={"X-Sim-Retry-After": "1"}
    )
    assert time.monotonic() - started >= 1.0  # waited at least what the upstream asked


def test_retry_after_over_the_cap_fails_at_once(
    client: openai.OpenAI, sim: RunningSimulator
) -> None:
    before = sim.stats()["requests"]
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=ask(),
            extra_headers=fault("429", **{"X-Sim-Retry-After": "120"}),
        )
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "120"
    assert sim.stats()["requests"] == before + 1


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("500", 502, "upstream_bad_response"),
        ("502", 502, "upstream_bad_response"),
        ("503", 503, "upstream_unavailable"),
        ("529", 503, "upstream_unavailable"),
        ("504", 504, "upstream_timeout"),
        ("hang", 504, "upstream_timeout"),
    ],
)
def test_persistent_faults_map_to_gateway_errors(
    client: openai.OpenAI, sim: RunningSimulator, name: str, status: int, code: str
) -> None:
    before = sim.stats()["requests"]
    messages = ask()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, extra_headers=fault(name)
        )
    error = caught.value
    assert error.status_code == status
    body = error.response.json()["error"]
    assert body["code"] == code and "upstream" in body["message"]
    assert sim.stats()["requests"] == before + 3  # one call plus two retries
    # The error was not stored: the same request now reaches the upstream and succeeds.
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert raw.headers["x-semcache-status"] == "MISS"


def test_client_errors_pass_through_without_retry(
    client: openai.OpenAI, sim: RunningSimulator
) -> None:
    before = sim.stats()["requests"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=ask(), extra_headers=fault("context_length")
        )
    assert caught.value.response.json()["error"]["code"] == "context_length_exceeded"
    assert sim.stats()["requests"] == before + 1


def test_dropped_stream_reaches_the_client_as_an_error_and_is_not_stored(
    client: openai.OpenAI, sim: RunningSimulator
) -> None:
    messages = ask()
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True, extra_headers=fault("drop")
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert raw.headers["x-semcache-status"] == "MISS"


def test_dropped_plain_answer_is_retried(client: openai.OpenAI, sim: RunningSimulator) -> None:
    sim.schedule_faults(["drop"])
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=ask())
    assert answer.choices[0].message.content


def test_stale_if_error_serves_an_expired_entry(
    client: openai.OpenAI, sim: RunningSimulator
) -> None:
    messages = ask()
    client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, extra_headers={"X-Semcache-TTL": "1"}
    )
    time.sleep(1.2)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, extra_headers=fault("500")
    )
    assert raw.headers["x-semcache-stale"] == "true"
    assert raw.headers["x-semcache-status"] == "HIT-EXACT"


def test_unreachable_upstream_is_503(tmp_path: Any) -> None:
    env = {
        "SEMCACHE_OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "SEMCACHE_UPSTREAM_MAX_RETRIES": "0",
    }
    with ServerProcess(["serve", "--data-dir", str(tmp_path)], env=env) as down:
        r = httpx.post(
            down.url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": ask()},
            timeout=30,
        )
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "upstream_unavailable"


def test_backoff_is_full_jitter_and_capped() -> None:
    policy = RetryPolicy(max_retries=5, base_s=1.0, max_s=4.0, retry_after_max_s=10)
    import random

    rng = random.Random(7)
    delays = [policy.delay(3, None, rng) for _ in range(200)]
    assert all(d is not None and 0 <= d <= 4.0 for d in delays)
    assert len({round(d or 0, 3) for d in delays}) > 100  # jittered, not fixed
    assert (
        policy.delay(0, 2.5, rng) == pytest.approx(2.5, abs=1.0)
        and policy.delay(0, 2.5, rng) >= 2.5
    )
    assert policy.delay(0, 11, rng) is None
    assert policy.delay(5, None, rng) is None


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


def test_per_provider_read_timeout(sim: RunningSimulator) -> None:
    import asyncio

    from semcache.errors import UpstreamTimeout
    from semcache.upstream import ProviderEndpoint, RetryPolicy, UpstreamClient, UpstreamConfig

    config = UpstreamConfig(
        openai=ProviderEndpoint(sim.openai_base_url, read_timeout_s=0.3),
        anthropic=ProviderEndpoint(sim.base_url),
        read_timeout_s=60,
        retry=RetryPolicy(max_retries=0),
        forward_headers=("x-sim-*",),
    )

    async def run() -> float:
        client = UpstreamClient(config)
        started = time.monotonic()
        try:
            with pytest.raises(UpstreamTimeout):
                await client.send(
                    "openai",
                    "/chat/completions",
                    {"model": "m", "messages": ask()},
                    stream=False,
                    client_headers={"x-sim-fault": "hang"},
                )
        finally:
            await client.aclose()
        return time.monotonic() - started

    assert asyncio.run(run()) < 30  # the provider's 0.3 s, not the shared 60 s


def test_forwarded_headers_match_names_and_prefixes() -> None:
    from semcache.upstream import UpstreamConfig

    config = UpstreamConfig(forward_headers=("x-gateway-*", "x-request-id"))
    assert config.forwards("x-gateway-route") and config.forwards("x-request-id")
    assert config.forwards("anthropic-beta")
    assert not config.forwards("authorization") and not config.forwards("x-request-idx")
