"""The proxy with the official openai SDK as the client and the simulator as upstream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from proxy_fixtures import KEY, openai_client, semcache_in_front_of
from servers import ServerProcess
from simulator_helpers import RunningSimulator


@pytest.fixture(scope="module")
def server(
    sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("proxy-openai")
    with semcache_in_front_of(sim, data, forward_client_key="true") as running:
        yield running


@pytest.fixture()
def client(server: ServerProcess) -> openai.OpenAI:
    return openai_client(server)


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def unique(text: str) -> str:
    return f"{text} (case {uuid.uuid4().hex[:6]})"


def create(client: openai.OpenAI, **kwargs: Any) -> tuple[Any, Any]:
    kwargs.setdefault("model", "gpt-4o-mini")
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    return raw.headers, raw.parse()


def test_miss_then_exact_then_semantic_hit(client: openai.OpenAI, sim: RunningSimulator) -> None:
    before = sim.stats()["requests"]
    h1, first = create(client, messages=ask("How do I rotate my API keys safely?"))
    h2, exact = create(client, messages=ask("How do I rotate my API keys safely?"))
    h3, para = create(client, messages=ask("How can I safely rotate my API keys?"))
    # The paraphrase hit the stored entry, so the miss's store has landed: an exact repeat now
    # reads the same entry. (h2 may come from the miss's flight while its store is still
    # running, by design, ``Miss._finish``: then it has no entry id yet.)
    h4, _ = create(client, messages=ask("How do I rotate my API keys safely?"))
    assert (h1["x-semcache-status"], h2["x-semcache-status"]) == ("MISS", "HIT-EXACT")
    assert h3["x-semcache-status"] == "HIT-SEMANTIC"
    assert 0.9 <= float(h3["x-semcache-similarity"]) < 1.0
    assert h4["x-semcache-status"] == "HIT-EXACT"
    assert h4["x-semcache-entry-id"] == h3["x-semcache-entry-id"]
    assert h2.get("x-semcache-entry-id", h3["x-semcache-entry-id"]) == h3["x-semcache-entry-id"]
    assert sim.stats()["requests"] == before + 1
    for hit in (exact, para):
        assert hit.choices[0].message.content == first.choices[0].message.content
        assert hit.id != first.id and hit.id.startswith("chatcmpl-")
        assert hit.model == "gpt-4o-mini"
        assert hit.usage == first.usage


def test_a_reported_wrong_hit_goes_upstream_next_time(
    client: openai.OpenAI, server: ServerProcess, sim: RunningSimulator
) -> None:
    # The same pair as above, in this client's own namespace: the paraphrase hits at first.
    create(client, messages=ask("How do I rotate my API keys safely?"))
    hit_headers, _ = create(client, messages=ask("How can I safely rotate my API keys?"))
    assert hit_headers["x-semcache-status"] == "HIT-SEMANTIC"
    entry_id = hit_headers["x-semcache-entry-id"]
    r = httpx.post(
        f"{server.url}/v1/cache/entries/{entry_id}/wrong-hits",
        json={"query": "How can I safely rotate my API keys?"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 200, r.text
    before = sim.stats()["requests"]
    again, _ = create(client, messages=ask("How can I safely rotate my API keys?"))
    assert again["x-semcache-status"] == "MISS"
    assert sim.stats()["requests"] == before + 1
    # The upstream's answer was stored for the paraphrase itself.
    stored, _ = create(client, messages=ask("How can I safely rotate my API keys?"))
    assert stored["x-semcache-status"] == "HIT-EXACT"
    assert stored["x-semcache-entry-id"] != entry_id


def test_streamed_hit_arrives_in_several_chunks(client: openai.OpenAI) -> None:
    question = unique("Explain what a vector index is")
    _, first = create(client, messages=ask(question))
    headers, stream = create(client, messages=ask(question), stream=True)
    assert headers["x-semcache-status"] == "HIT-EXACT"
    assert headers["content-type"].startswith("text/event-stream")
    chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 3
    assert "".join(pieces) == first.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_streamed_miss_is_relayed_then_stored(client: openai.OpenAI, sim: RunningSimulator) -> None:
    question = unique("Summarise the benefits of WAL mode")
    before = sim.stats()["requests"]
    headers, stream = create(
        client, messages=ask(question), stream=True, stream_options={"include_usage": True}
    )
    assert headers["x-semcache-status"] == "MISS"
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    h2, again = create(client, messages=ask(question))
    assert h2["x-semcache-status"] == "HIT-EXACT"
    assert again.choices[0].message.content == text
    assert again.usage.completion_tokens == chunks[-1].usage.completion_tokens
    assert sim.stats()["requests"] == before + 1


def test_stream_without_usage_option_gets_no_usage_chunk(client: openai.OpenAI) -> None:
    _, stream = create(client, messages=ask(unique("List three prime numbers")), stream=True)
    chunks = list(stream)
    assert all(c.choices for c in chunks), "a usage-only chunk reached a client that never asked"


def test_bypass_for_n_and_hot_temperature(client: openai.OpenAI, sim: RunningSimulator) -> None:
    question = unique("Write a haiku about caching")
    before = sim.stats()["requests"]
    for _ in range(2):
        h, answer = create(client, messages=ask(question), n=2)
        assert h["x-semcache-status"] == "BYPASS" and len(answer.choices) == 2
        h, _ = create(client, messages=ask(question), temperature=1.5)
        assert h["x-semcache-status"] == "BYPASS"
    assert sim.stats()["requests"] == before + 4


def test_cache_control_directives(client: openai.OpenAI, sim: RunningSimulator) -> None:
    question = unique("What is a token bucket?")
    before = sim.stats()["requests"]
    h, _ = create(client, messages=ask(question), extra_headers={"Cache-Control": "no-store"})
    assert h["x-semcache-status"] == "MISS"
    h, _ = create(client, messages=ask(question))
    assert h["x-semcache-status"] == "MISS"  # the no-store answer was not kept
    h, _ = create(client, messages=ask(question))
    assert h["x-semcache-status"] == "HIT-EXACT"
    h, _ = create(client, messages=ask(question), extra_headers={"Cache-Control": "no-cache"})
    assert h["x-semcache-status"] == "REFRESH"
    h, _ = create(client, messages=ask(question), extra_headers={"Cache-Control": "max-age=0"})
    assert h["x-semcache-status"] == "MISS"
    h, _ = create(client, messages=ask(question), extra_headers={"Cache-Control": "max-age=3600"})
    assert h["x-semcache-status"] == "HIT-EXACT"
    assert sim.stats()["requests"] == before + 4


def test_max_age_zero_right_after_a_refresh_goes_upstream(client: openai.OpenAI) -> None:
    """The refresh's answer is still being stored when the next request looks up: that
    request's exact recheck, once the refresh's flight lands, finds the new entry, which is
    older than max-age=0 allows (it was served from cache in about one try of four)."""
    for _ in range(20):
        question = unique("What is a token bucket?")
        create(client, messages=ask(question))
        h, _ = create(client, messages=ask(question), extra_headers={"Cache-Control": "no-cache"})
        assert h["x-semcache-status"] == "REFRESH"
        h, _ = create(client, messages=ask(question), extra_headers={"Cache-Control": "max-age=0"})
        assert h["x-semcache-status"] == "MISS"


def test_fifty_concurrent_identical_misses_make_one_upstream_call(
    server: ServerProcess, sim: RunningSimulator
) -> None:
    question = unique("Describe single-flight request coalescing")

    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
        async with client:

            async def one() -> str:
                raw = await client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini",
                    messages=ask(question),
                    extra_headers={"X-Sim-TTFT-Ms": "800"},
                )
                return str(raw.parse().choices[0].message.content)

            return await asyncio.gather(*(one() for _ in range(50)))

    before = sim.stats()["requests"]
    answers = asyncio.run(run())
    assert sim.stats()["requests"] == before + 1
    assert len(answers) == 50 and len(set(answers)) == 1 and answers[0]


def test_models_list_passes_through(client: openai.OpenAI) -> None:
    assert "gpt-4o-mini" in {m.id for m in client.models.list()}


def test_proxy_needs_a_key(server: ServerProcess) -> None:
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4o-mini", messages=ask("hi"))


def test_bad_request_bodies(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    with pytest.raises(openai.BadRequestError, match="X-Semcache-Threshold"):
        create(client, messages=ask("hi"), extra_headers={"X-Semcache-Threshold": "2"})


def test_client_provider_key_is_forwarded_when_enabled(
    client: openai.OpenAI, sim: RunningSimulator
) -> None:
    def last_key() -> str:
        recent = httpx.get(sim.base_url + "/sim/requests").json()
        return str(recent[-1]["headers"]["authorization"])

    create(client, messages=ask(unique("Whose key pays for this?")))
    assert last_key().endswith("enai")  # semcache's own: sk-upstream-openai
    create(
        client,
        messages=ask(unique("And whose key pays for that?")),
        extra_headers={"X-Upstream-Api-Key": "sk-client-own-key-9876"},
    )
    assert last_key().endswith("9876")
