"""Embeddings through the proxy, cached item by item: the openai SDK as the client, the
simulator as upstream."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from proxy_fixtures import KEY, openai_client, semcache_in_front_of
from servers import ServerProcess
from simulator_helpers import LONG_TEXT, RunningSimulator

MODEL = "text-embedding-3-small"


@pytest.fixture(scope="module")
def server(
    sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with semcache_in_front_of(sim, tmp_path_factory.mktemp("proxy-embeddings")) as running:
        yield running


@pytest.fixture()
def client(server: ServerProcess) -> openai.OpenAI:
    return openai_client(server)


def embed(client: openai.OpenAI, **kwargs: Any) -> tuple[httpx.Headers, Any]:
    kwargs.setdefault("model", MODEL)
    raw = client.embeddings.with_raw_response.create(**kwargs)
    return raw.headers, raw.parse()


def last_upstream_body(sim: RunningSimulator) -> dict[str, Any]:
    recent = httpx.get(sim.base_url + "/sim/requests").json()
    body = recent[-1]["body"]
    assert recent[-1]["path"] == "/v1/embeddings"
    return dict(body)


def words(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


def test_a_batch_sends_only_its_uncached_items_upstream(
    client: openai.OpenAI, sim: RunningSimulator
) -> None:
    a, b, c = words("alpha"), words("beta"), words("gamma")
    before = sim.stats()["requests"]
    headers, first = embed(client, input=[a, b])
    assert headers["x-semcache-status"] == "MISS"
    assert headers["x-semcache-cached-items"] == "0/2"
    assert [d.index for d in first.data] == [0, 1]
    assert last_upstream_body(sim)["input"] == [a, b]
    assert first.usage.prompt_tokens > 0

    headers, second = embed(client, input=[b, c])
    assert headers["x-semcache-status"] == "MISS"
    assert headers["x-semcache-cached-items"] == "1/2"
    assert last_upstream_body(sim)["input"] == [c]  # b came from the cache
    assert [d.index for d in second.data] == [0, 1]
    assert second.data[0].embedding == first.data[1].embedding
    assert second.data[1].embedding != first.data[0].embedding

    headers, third = embed(client, input=[c, a, b])
    assert headers["x-semcache-status"] == "HIT-EXACT"
    assert headers["x-semcache-cached-items"] == "3/3"
    assert [d.embedding for d in third.data] == [
        second.data[1].embedding,
        first.data[0].embedding,
        first.data[1].embedding,
    ]
    # Usage counts every item, cached or not, as the provider would have billed it.
    _, only_a = embed(client, input=[a])
    assert third.usage.prompt_tokens == second.usage.prompt_tokens + only_a.usage.prompt_tokens
    assert sim.stats()["requests"] == before + 2


def test_a_single_string_misses_then_hits_in_either_format(
    client: openai.OpenAI, sim: RunningSimulator
) -> None:
    text = words("How do I reset my password?")
    before = sim.stats()["requests"]
    # The SDK asks for base64 unless told otherwise, and decodes it.
    headers, first = embed(client, input=text)
    assert headers["x-semcache-status"] == "MISS"
    assert last_upstream_body(sim)["encoding_format"] == "base64"
    assert len(first.data) == 1 and len(first.data[0].embedding) == 1536
    headers, again = embed(client, input=text, encoding_format="float")
    assert headers["x-semcache-status"] == "HIT-EXACT"
    assert again.data[0].embedding == first.data[0].embedding
    assert again.usage.prompt_tokens == first.usage.prompt_tokens
    raw = httpx.post(
        str(client.base_url.join("embeddings")),
        json={"model": MODEL, "input": text, "encoding_format": "base64"},
        headers={
            "Authorization": f"Bearer {KEY}",
            "X-Semcache-Namespace": str(client.default_headers["X-Semcache-Namespace"]),
        },
    )
    assert raw.headers["x-semcache-status"] == "HIT-EXACT"
    assert isinstance(raw.json()["data"][0]["embedding"], str)
    # dimensions change the vector: an entry of its own.
    headers, short = embed(client, input=text, dimensions=256)
    assert headers["x-semcache-status"] == "MISS" and len(short.data[0].embedding) == 256
    assert sim.stats()["requests"] == before + 2


def test_embeddings_are_priced_and_a_hit_saves_their_cost(client: openai.OpenAI) -> None:
    text = words(LONG_TEXT)
    headers, first = embed(client, input=text)
    cost = Decimal(headers["x-semcache-cost-usd"])
    # text-embedding-3-small: $0.02 per 1M tokens.
    assert cost == (Decimal(first.usage.prompt_tokens) * Decimal("0.02") / 1_000_000).quantize(
        Decimal("0.000001")
    )
    assert cost > 0
    headers, _ = embed(client, input=text)
    assert headers["x-semcache-status"] == "HIT-EXACT"
    assert Decimal(headers["x-semcache-cost-usd"]) == 0
    assert Decimal(headers["x-semcache-saved-usd"]) == cost
    assert headers["x-request-id"].startswith("req_semcache_")


def test_bad_input_is_a_400_before_the_upstream(
    client: openai.OpenAI, sim: RunningSimulator
) -> None:
    before = sim.stats()["requests"]
    with pytest.raises(openai.BadRequestError, match="input must be"):
        client.embeddings.create(model=MODEL, input=[])
    with pytest.raises(openai.BadRequestError, match="empty string"):
        client.embeddings.create(model=MODEL, input=["fine", ""])
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model=MODEL, input="x", dimensions=0)
    with pytest.raises(openai.BadRequestError, match="model must be a model id"):
        client.embeddings.create(model="text embedding", input="x")
    assert sim.stats()["requests"] == before
