"""/v1/messages answers every error in Anthropic's shape, so the Anthropic SDK raises its own
typed exceptions: 400, 401, 429 (rate limit and spend budget), plain and streamed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from proxy_fixtures import semcache_in_front_of
from servers import ServerProcess
from simulator_helpers import CLAUDE, RunningSimulator

LEVERS = """
[rate_limits.limited]
rpm = 1

[spend.overrides."tenant:broke"]
daily_hard = 0.000001
"""
KEYS = "sk-ok=ok,sk-limited=limited:limited,sk-broke=broke"


@pytest.fixture(scope="module")
def server(
    sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data: Path = tmp_path_factory.mktemp("anthropic-errors")
    (data / "levers.toml").write_text(LEVERS)
    with semcache_in_front_of(
        sim, data, api_keys=KEYS, levers_file=str(data / "levers.toml")
    ) as running:
        yield running


def client(server: ServerProcess, key: str = "sk-ok") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0, timeout=20)


def ask(c: anthropic.Anthropic, **fields: Any) -> Any:
    text = f"Error probe {uuid.uuid4().hex}"
    return c.messages.create(
        **{"model": CLAUDE, "max_tokens": 20, "messages": [{"role": "user", "content": text}]}
        | fields
    )


def anthropic_shape(body: Any, kind: str) -> str:
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    return str(body["error"]["message"])


@pytest.mark.parametrize("stream", [False, True])
def test_a_bad_request_is_the_sdks_bad_request_error(server: ServerProcess, stream: bool) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(client(server), max_tokens=0, stream=stream)
    assert "max_tokens" in anthropic_shape(caught.value.body, "invalid_request_error")


def test_a_bad_key_is_the_sdks_authentication_error(server: ServerProcess) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        ask(client(server, "sk-nobody"))
    anthropic_shape(caught.value.body, "authentication_error")


def test_a_rate_limit_is_the_sdks_rate_limit_error(server: ServerProcess) -> None:
    limited = client(server, "sk-limited")
    ask(limited)
    with pytest.raises(anthropic.RateLimitError) as caught:
        ask(limited)
    anthropic_shape(caught.value.body, "rate_limit_error")
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_a_spend_budget_refusal_is_the_sdks_rate_limit_error(server: ServerProcess) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        ask(client(server, "sk-broke"))
    assert "budget" in anthropic_shape(caught.value.body, "rate_limit_error")


def test_unparseable_json_and_unknown_routes_keep_each_wire_shape(server: ServerProcess) -> None:
    headers = {"x-api-key": "sk-ok", "content-type": "application/json"}
    r = httpx.post(server.url + "/v1/messages", content=b"{nope", headers=headers)
    assert r.status_code == 400
    anthropic_shape(r.json(), "invalid_request_error")
    # The OpenAI endpoints keep OpenAI's shape.
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{nope", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
