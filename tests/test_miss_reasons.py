"""Why a request missed: ``miss_reason`` (and ``verifier_score``) in the cache-aside lookup JSON
and ``X-Semcache-Miss-Reason`` on lookup and proxy answers, each reason produced end to end
against real servers (the cache-aside API, and the proxy with the openai SDK in front of the
simulator)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import KEYS, auth
from proxy_fixtures import openai_client, semcache_in_front_of
from servers import ServerProcess
from simulator_helpers import RunningSimulator

# Near-copies the cosine floor lets through and the verifier rejects (tests/test_verifier.py).
DOLLARS = "How many US dollars is 100 euros?"
EUROS = "How many euros is 100 US dollars?"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A cache-aside server of its own: no sweep during the test, so an expired entry stays."""
    data = tmp_path_factory.mktemp("miss-reasons")
    server = ServerProcess(
        ["serve", "--data-dir", str(data)],
        env={
            "SEMCACHE_API_KEYS": ",".join(f"{k}={t}" for t, k in KEYS.items()),
            "SEMCACHE_SWEEP_INTERVAL_S": "3600",
        },
        log_path=data / "server.log",
    )
    with server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def ns() -> str:
    return f"reasons-{uuid.uuid4().hex[:8]}"


def store(client: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("model", "gpt-4o-mini")
    r = client.post("/v1/cache/store", json=body, headers=auth("alice"))
    assert r.status_code == 201, r.text
    return dict(r.json())


def missed(client: httpx.Client, reason: str, **body: Any) -> dict[str, Any]:
    """Look up, assert a MISS with ``reason`` in the JSON and the header; the JSON."""
    body.setdefault("model", "gpt-4o-mini")
    r = client.post("/v1/cache/lookup", json=body, headers=auth("alice"))
    assert r.status_code == 200, r.text
    got = dict(r.json())
    assert (got["hit"], got["status"], got["miss_reason"]) == (False, "MISS", reason), got
    assert r.headers["X-Semcache-Miss-Reason"] == reason
    return got


def test_a_hit_has_no_miss_reason(cache: httpx.Client) -> None:
    space = ns()
    store(cache, namespace=space, query="How do I reset my password?", response="x")
    r = cache.post(
        "/v1/cache/lookup",
        json={"model": "gpt-4o-mini", "namespace": space, "query": "How do I reset my password?"},
        headers=auth("alice"),
    )
    body = r.json()
    assert body["hit"] is True and body["miss_reason"] is None and body["verifier_score"] is None
    assert "X-Semcache-Miss-Reason" not in r.headers


def test_an_empty_partition_is_no_candidate(cache: httpx.Client) -> None:
    got = missed(cache, "no-candidate", namespace=ns(), query="What is the weather in Oslo?")
    assert got["similarity"] is None and got["verifier_score"] is None


def test_an_unrelated_neighbour_is_below_threshold(cache: httpx.Client) -> None:
    space = ns()
    store(cache, namespace=space, query="How do I reset my password?", response="x")
    got = missed(cache, "below-threshold", namespace=space, query="What is the weather in Oslo?")
    assert got["similarity"] < 0.5 and got["verifier_score"] is None


def test_a_near_copy_the_verifier_rejects_carries_its_score(cache: httpx.Client) -> None:
    space = ns()
    store(cache, namespace=space, query=DOLLARS, response="about 108 dollars")
    r = cache.post(
        "/v1/cache/lookup",
        json={"model": "gpt-4o-mini", "namespace": space, "query": EUROS},
        headers=auth("alice"),
    )
    got = r.json()
    assert got["miss_reason"] == "verifier-rejected", got
    assert 0.0 <= got["verifier_score"] < 0.5 and got["similarity"] > 0.8
    assert float(r.headers["X-Semcache-Verifier-Score"]) == round(got["verifier_score"], 4)
    assert r.headers["X-Semcache-Miss-Reason"] == "verifier-rejected"


def test_a_reported_wrong_hit_is_a_hit_floor(cache: httpx.Client) -> None:
    space = ns()
    entry = store(cache, namespace=space, query="How do I reset my password?", response="x")
    wrong = "How can I reset my password?"
    url = f"/v1/cache/entries/{entry['id']}/wrong-hits"
    assert cache.post(url, json={"query": wrong}, headers=auth("alice")).status_code == 200
    missed(cache, "hit-floor", namespace=space, query=wrong)


def test_the_same_question_in_another_conversation_is_context_differs(
    cache: httpx.Client,
) -> None:
    space = ns()
    q = "Which plan should I pick?"
    earlier = [{"role": "system", "content": "You sell phone plans."}]
    store(cache, namespace=space, query=q, context=earlier, response="the unlimited one")
    other = [{"role": "system", "content": "You sell insurance."}]
    missed(cache, "context-differs", namespace=space, query=q, context=other)


def test_an_expired_match_is_expired(cache: httpx.Client) -> None:
    space = ns()
    q = "What are your opening hours?"
    store(cache, namespace=space, query=q, response="9 to 5", ttl_s=1)
    time.sleep(1.3)
    missed(cache, "expired", namespace=space, query=q)


# -- the proxy ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(
    sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("miss-reasons-proxy")
    with semcache_in_front_of(sim, data) as running:
        yield running


@pytest.fixture()
def oai(proxy: ServerProcess) -> openai.OpenAI:
    return openai_client(proxy)


def create(client: openai.OpenAI, text: str, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-4o-mini")
    raw = client.chat.completions.with_raw_response.create(
        messages=[{"role": "user", "content": text}], **kwargs
    )
    raw.parse()
    return raw.headers


def until_hit(client: openai.OpenAI, text: str) -> None:
    """Wait for the background store of a proxied answer: an exact hit."""
    deadline = time.monotonic() + 10
    while create(client, text)["X-Semcache-Status"] != "HIT-EXACT":
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.05)


def test_proxy_first_request_is_no_candidate(oai: openai.OpenAI) -> None:
    headers = create(oai, "What is the capital of Norway?")
    assert headers["X-Semcache-Status"] == "MISS"
    assert headers["X-Semcache-Miss-Reason"] == "no-candidate"


def test_proxy_verifier_rejection_carries_its_score(oai: openai.OpenAI) -> None:
    assert create(oai, DOLLARS)["X-Semcache-Miss-Reason"] == "no-candidate"
    until_hit(oai, DOLLARS)
    headers = create(oai, EUROS)
    assert headers["X-Semcache-Status"] == "MISS"
    assert headers["X-Semcache-Miss-Reason"] == "verifier-rejected"
    assert 0.0 <= float(headers["X-Semcache-Verifier-Score"]) < 0.5


def test_proxy_hit_refused_by_max_age(oai: openai.OpenAI) -> None:
    q = "How long does shipping to Canada take?"
    assert create(oai, q)["X-Semcache-Miss-Reason"] == "no-candidate"
    until_hit(oai, q)
    time.sleep(1.1)
    headers = create(oai, q, extra_headers={"Cache-Control": "max-age=1"})
    assert headers["X-Semcache-Status"] == "MISS"
    assert headers["X-Semcache-Miss-Reason"] == "max-age"
    assert "X-Semcache-Miss-Reason" not in create(oai, q)  # a plain repeat still hits


def test_proxy_bypass_and_refresh_causes(oai: openai.OpenAI) -> None:
    q = "Tell me a fun fact about otters."
    hot = create(oai, q, temperature=1.8)
    assert (hot["X-Semcache-Status"], hot["X-Semcache-Miss-Reason"]) == ("BYPASS", "temperature")
    several = create(oai, q, n=2)
    assert (several["X-Semcache-Status"], several["X-Semcache-Miss-Reason"]) == (
        "BYPASS",
        "n-gt-1",
    )
    fresh = create(oai, q, extra_headers={"Cache-Control": "no-cache"})
    assert (fresh["X-Semcache-Status"], fresh["X-Semcache-Miss-Reason"]) == ("REFRESH", "no-cache")
