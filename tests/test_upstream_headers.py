"""On a miss the upstream's request id, processing time and quota headers reach the client;
a hit carries semcache's own request id; semcache's x-ratelimit-* win where it enforces."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
from proxy_fixtures import KEY, openai_client, semcache_in_front_of
from servers import ServerProcess
from simulator_helpers import CLAUDE, GPT, RunningSimulator, user


@pytest.fixture(scope="module")
def server(
    sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data: Path = tmp_path_factory.mktemp("upstream-headers")
    (data / "levers.toml").write_text("[rate_limits.limited]\nrpm = 60\n")
    keys = f"{KEY}=proxy-tenant,sk-limited=limited:limited"
    with semcache_in_front_of(
        sim, data, api_keys=keys, levers_file=str(data / "levers.toml")
    ) as running:
        yield running


@pytest.mark.parametrize("stream", [False, True])
def test_openai_miss_carries_the_upstreams_ids_and_quota(
    server: ServerProcess, sim: RunningSimulator, stream: bool
) -> None:
    client = openai_client(server)
    messages = user(f"Header probe {uuid.uuid4().hex}")
    raw = client.chat.completions.with_raw_response.create(
        model=GPT, messages=messages, stream=stream
    )
    if stream:
        list(raw.parse())
    assert raw.headers["x-semcache-status"] == "MISS"
    assert raw.request_id == sim.stats()["last_request_id"] != ""
    assert int(raw.headers["openai-processing-ms"]) >= 1
    assert raw.headers["x-ratelimit-limit-requests"] == "10000"  # the simulator's quota
    hit = client.chat.completions.with_raw_response.create(model=GPT, messages=messages)
    assert hit.headers["x-semcache-status"] == "HIT-EXACT"
    assert hit.request_id is not None and hit.request_id.startswith("req_semcache_")
    assert hit.request_id != raw.request_id


def test_semcaches_own_limits_win(server: ServerProcess) -> None:
    client = openai_client(server).with_options(api_key="sk-limited")
    raw = client.chat.completions.with_raw_response.create(
        model=GPT, messages=user(f"Limited {uuid.uuid4().hex}")
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "60"
    assert int(raw.headers["x-ratelimit-remaining-requests"]) < 60


def test_anthropic_miss_carries_the_upstreams_request_id(
    server: ServerProcess, sim: RunningSimulator
) -> None:
    claude = anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)
    messages = user(f"Claude header probe {uuid.uuid4().hex}")
    raw = claude.messages.with_raw_response.create(model=CLAUDE, max_tokens=20, messages=messages)
    assert raw.headers["x-semcache-status"] == "MISS"
    assert raw.headers["request-id"] == sim.stats()["last_request_id"]
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "10000"
    hit = claude.messages.with_raw_response.create(model=CLAUDE, max_tokens=20, messages=messages)
    assert hit.headers["request-id"].startswith("req_semcache_")
