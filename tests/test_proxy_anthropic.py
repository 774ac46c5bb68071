"""The proxy with the official anthropic SDK as the client and the simulator as upstream."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from proxy_fixtures import KEY, semcache_in_front_of
from servers import ServerProcess
from simulator_helpers import RunningSimulator


@pytest.fixture(scope="module")
def server(
    sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with semcache_in_front_of(sim, tmp_path_factory.mktemp("proxy-anthropic")) as running:
        yield running


@pytest.fixture()
def client(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.url,
        api_key=KEY,
        max_retries=0,
        timeout=30,
        default_headers={"X-Semcache-Namespace": uuid.uuid4().hex},
    )


def create(client: anthropic.Anthropic, text: str, **kwargs: Any) -> tuple[Any, Any]:
    raw = client.messages.with_raw_response.create(
        model="claude-haiku-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": text}],
        **kwargs,
    )
    return raw.headers, raw.parse()


def test_miss_exact_semantic(client: anthropic.Anthropic, sim: RunningSimulator) -> None:
    before = sim.stats()["requests"]
    h1, first = create(client, "How do I cancel my subscription?", system="Be brief.")
    h2, exact = create(client, "How do I cancel my subscription?", system="Be brief.")
    h3, para = create(client, "How can I cancel my subscription?", system="Be brief.")
    h4, _ = create(client, "How can I cancel my subscription?", system="Be verbose.")
    statuses = [h["x-semcache-status"] for h in (h1, h2, h3, h4)]
    assert statuses == ["MISS", "HIT-EXACT", "HIT-SEMANTIC", "MISS"]  # system is context
    assert sim.stats()["requests"] == before + 2
    for hit in (exact, para):
        assert hit.content[0].text == first.content[0].text
        assert hit.id != first.id and hit.id.startswith("msg_")
        assert hit.usage.output_tokens == first.usage.output_tokens


def test_streamed_hit_and_miss(client: anthropic.Anthropic, sim: RunningSimulator) -> None:
    before = sim.stats()["requests"]
    messages = [{"role": "user", "content": "Describe the Anthropic message stream format."}]
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=messages) as s:
        miss_text = "".join(s.text_stream)
        miss_final = s.get_final_message()
    assert miss_final.stop_reason in ("end_turn", "max_tokens")
    raw = client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=messages, stream=True
    )
    assert raw.headers["x-semcache-status"] == "HIT-EXACT"
    events = list(raw.parse())
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
    assert len(deltas) >= 3 and "".join(deltas) == miss_text
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    assert sim.stats()["requests"] == before + 1


def test_openai_entries_never_answer_anthropic_clients(
    client: anthropic.Anthropic, server: ServerProcess
) -> None:
    import httpx

    namespace = client.default_headers["X-Semcache-Namespace"]
    question = "Which regions does the service run in?"
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": question}]},
        headers={"Authorization": f"Bearer {KEY}", "X-Semcache-Namespace": str(namespace)},
        timeout=30,
    )
    assert r.status_code == 200
    headers, message = create(client, question)
    assert headers["x-semcache-status"] == "MISS" and message.type == "message"


def test_missing_max_tokens_is_a_400(server: ServerProcess) -> None:
    import httpx

    r = httpx.post(
        server.url + "/v1/messages",
        json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": KEY},
        timeout=30,
    )
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
