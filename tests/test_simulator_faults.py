"""The simulator's fault injection and prompt caching, driven by the official SDKs.

The simulator itself (shapes, streams, introspection) is tested in ``test_simulator.py``; the
``sim`` fixture (one simulator per module) is in ``conftest.py``.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest
from simulator_helpers import CLAUDE, GPT, LONG_TEXT, RunningSimulator, serve_simulator, user

from semcache.errors import ConfigError
from semcache.simulator import SimulatorConfig
from semcache.simulator.text import SimTokenizer

# --- Faults ---------------------------------------------------------------------------------

OPENAI_FAULTS = [
    ("429", openai.RateLimitError),
    ("500", openai.InternalServerError),
    ("502", openai.InternalServerError),
    ("503", openai.InternalServerError),
    ("504", openai.InternalServerError),
    ("context_length", openai.BadRequestError),
]
ANTHROPIC_FAULTS = [
    ("429", anthropic.RateLimitError),
    ("500", anthropic.InternalServerError),
    ("503", anthropic.InternalServerError),
    ("529", anthropic.OverloadedError),
    ("context_length", anthropic.BadRequestError),
]


@pytest.mark.parametrize(("fault", "error"), OPENAI_FAULTS)
def test_openai_fault_raises(oai: openai.OpenAI, fault: str, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        oai.chat.completions.create(
            model=GPT,
            messages=user("fault me"),
            extra_headers={"X-Sim-Fault": fault, "X-Sim-Retry-After": "3"},
        )
    exc = info.value
    assert isinstance(exc, openai.APIStatusError)
    assert exc.status_code == (400 if fault == "context_length" else int(fault))
    if fault == "429":
        assert exc.response.headers["retry-after"] == "3"
    if fault == "context_length":
        assert exc.code == "context_length_exceeded"


@pytest.mark.parametrize(("fault", "error"), ANTHROPIC_FAULTS)
def test_anthropic_fault_raises(
    claude: anthropic.Anthropic, fault: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        claude.messages.create(
            model=CLAUDE,
            max_tokens=20,
            messages=user("fault me"),
            extra_headers={"X-Sim-Fault": fault},
        )
    exc = info.value
    assert isinstance(exc, anthropic.APIStatusError)
    assert exc.body is not None
    if fault == "429":
        assert exc.response.headers["retry-after"] == "1"
    if fault == "context_length":
        assert "context window" in str(exc)


def test_hang_lasts_until_the_client_gives_up(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.5).chat.completions.create(
            model=GPT, messages=user("hang"), extra_headers={"X-Sim-Fault": "hang"}
        )


def test_openai_drop_cuts_the_stream(oai: openai.OpenAI) -> None:
    full = oai.chat.completions.create(model=GPT, messages=user("drop me"))
    pieces, finishes = [], []
    with pytest.raises(openai.APIConnectionError):
        stream = oai.chat.completions.create(
            model=GPT, messages=user("drop me"), stream=True, extra_headers={"X-Sim-Fault": "drop"}
        )
        for chunk in stream:
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finishes.append(choice.finish_reason)
    assert full.usage is not None
    assert 1 <= len([p for p in pieces if p]) < full.usage.completion_tokens
    assert not any(finishes)
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(
            model=GPT, messages=user("drop me"), extra_headers={"X-Sim-Fault": "drop"}
        )


def test_anthropic_drop_cuts_the_stream(sim: RunningSimulator) -> None:
    body = {"model": CLAUDE, "max_tokens": 50, "messages": user("drop"), "stream": True}
    events: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST", sim.base_url + "/v1/messages", json=body, headers={"X-Sim-Fault": "drop"}
        ) as response,
    ):
        events.extend(line for line in response.iter_lines() if line.startswith("event: "))
    assert "event: content_block_delta" in events
    assert "event: message_stop" not in events


def test_fault_schedule_applies_in_order(sim: RunningSimulator, oai: openai.OpenAI) -> None:
    sim.schedule_faults(["429", None, "500"])
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model=GPT, messages=user("one"))
    assert oai.chat.completions.create(model=GPT, messages=user("two")).choices
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model=GPT, messages=user("three"))
    assert oai.chat.completions.create(model=GPT, messages=user("four")).choices
    stats = sim.stats()
    assert stats["requests"] == 4
    assert stats["faults_injected"] == 2
    bad = httpx.post(sim.base_url + "/sim/faults", json={"faults": ["nope"]})
    assert bad.status_code == 400


def test_configured_schedule_and_config_validation() -> None:
    with pytest.raises(ConfigError):
        SimulatorConfig(fault_schedule=("boom",))
    with serve_simulator(SimulatorConfig(fault_schedule=("503",))) as running:
        client = anthropic.Anthropic(base_url=running.base_url, api_key="k", max_retries=0)
        with pytest.raises(anthropic.InternalServerError):
            client.messages.create(model=CLAUDE, max_tokens=5, messages=user("x"))
        assert client.messages.create(model=CLAUDE, max_tokens=5, messages=user("x")).content


# --- Prompt caching -------------------------------------------------------------------------


def test_openai_caches_long_prefixes_automatically(sim: RunningSimulator) -> None:
    sim.reset()

    def cached(
        question: str, key: str = "sk-cache-owner", system: str = LONG_TEXT
    ) -> tuple[int, int]:
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key=key, max_retries=0)
        messages: Any = [{"role": "system", "content": system}, *user(question)]
        usage = client.chat.completions.create(model=GPT, messages=messages).usage
        assert usage is not None and usage.prompt_tokens_details is not None
        return usage.prompt_tokens_details.cached_tokens or 0, usage.prompt_tokens

    first, prompt_tokens = cached("first question")
    assert first == 0 and prompt_tokens > 1200
    repeat, _ = cached("first question")
    assert repeat % 128 == 0 and prompt_tokens - 131 <= repeat <= prompt_tokens
    shared, _ = cached("a different second question")
    assert shared >= 1024 and shared % 128 == 0 and shared <= repeat
    assert cached("first question", key="sk-someone-else")[0] == 0
    assert cached("short", system="tiny")[0] == 0
    assert cached("short", system="tiny")[0] == 0


def test_anthropic_caches_up_to_breakpoints(
    sim: RunningSimulator, sim_counter: SimTokenizer
) -> None:
    sim.reset()
    client = anthropic.Anthropic(base_url=sim.base_url, api_key="sk-ant-cache", max_retries=0)
    system: Any = [{"type": "text", "text": LONG_TEXT, "cache_control": {"type": "ephemeral"}}]

    def usage(question: str, system: Any = system) -> anthropic.types.Usage:
        return client.messages.create(
            model=CLAUDE, max_tokens=10, system=system, messages=user(question)
        ).usage

    first = usage("one")
    assert first.cache_creation_input_tokens == sim_counter.count(LONG_TEXT)
    assert first.cache_read_input_tokens == 0
    second = usage("two")
    assert second.cache_read_input_tokens == sim_counter.count(LONG_TEXT)
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens == first.input_tokens < 20

    plain = [{"type": "text", "text": LONG_TEXT + " (no breakpoint)"}]
    for _ in range(2):
        nothing = usage("one", system=plain)
        assert nothing.cache_creation_input_tokens == nothing.cache_read_input_tokens == 0

    # A conversation that grows: the earlier breakpoint is read, the new tail written.
    turn: Any = {
        "type": "text",
        "text": LONG_TEXT + " turn",
        "cache_control": {"type": "ephemeral"},
    }
    opening = client.messages.create(
        model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": [turn]}]
    ).usage
    history: Any = [
        {"role": "user", "content": [{k: v for k, v in turn.items() if k != "cache_control"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{**turn, "text": LONG_TEXT + " again"}]},
    ]
    grown = client.messages.create(model=CLAUDE, max_tokens=10, messages=history).usage
    assert grown.cache_read_input_tokens == opening.cache_creation_input_tokens
    assert (opening.cache_creation_input_tokens or 0) > 1024
    assert (grown.cache_creation_input_tokens or 0) > 1024
    assert grown.input_tokens == 0

    too_many = [{**system[0], "text": f"block {i}"} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError):
        usage("x", system=too_many)
