from __future__ import annotations

import math
from typing import Any

import pytest

from semcache.levers.tokens import TokenCounter, encoding_for_model
from semcache.simulator.anthropic_api import anthropic_prompt_blocks
from semcache.simulator.config import SimulatorConfig
from semcache.simulator.openai_api import openai_prompt_ids
from semcache.simulator.state import SimulatorState
from semcache.simulator.text import SimTokenizer as SimCounter

OPENAI_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
    "messages": [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Ünïcode, emoji 🎉 and code: `x = 1`", "name": "ana"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And now?"},
                {"type": "image_url", "image_url": {"url": "data:x"}},
            ],
        },
    ],
}

ANTHROPIC_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
    "messages": [
        {"role": "user", "content": "What is in the file?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
        },
    ],
}


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def test_openai_estimate_equals_simulator_count(counter: TokenCounter) -> None:
    simulated = len(openai_prompt_ids(OPENAI_BODY, SimCounter())) + 3  # + reply priming
    estimate = counter.estimate_chat_tokens(
        "gpt-4o-mini", OPENAI_BODY["messages"], tools=OPENAI_BODY["tools"]
    )
    assert estimate == simulated


def test_anthropic_framing_equals_simulator_before_scaling() -> None:
    _, simulated = anthropic_prompt_blocks(ANTHROPIC_BODY, SimulatorState(SimulatorConfig()))
    exact = TokenCounter(approx_factor=1.0)
    args = (ANTHROPIC_BODY["messages"],)
    kwargs = {"system": ANTHROPIC_BODY["system"], "tools": ANTHROPIC_BODY["tools"]}
    assert exact.estimate_chat_tokens("claude-sonnet-4-5", *args, **kwargs) == simulated
    # The documented approximation: o200k count times 1.1, rounded up.
    scaled = TokenCounter().estimate_chat_tokens("claude-sonnet-4-5", *args, **kwargs)
    assert scaled == math.ceil(simulated * 1.1)


def test_encodings_by_model() -> None:
    assert encoding_for_model("gpt-4o-2024-08-06") == "o200k_base"
    assert encoding_for_model("gpt-4.1-nano") == "o200k_base"
    assert encoding_for_model("o3-mini") == "o200k_base"
    assert encoding_for_model("gpt-5") == "o200k_base"
    assert encoding_for_model("gpt-4-0613") == "cl100k_base"
    assert encoding_for_model("gpt-3.5-turbo") == "cl100k_base"
    assert encoding_for_model("claude-haiku-4-5") is None


def test_text_counts(counter: TokenCounter) -> None:
    text = "Привет, как дела? 你好世界"  # o200k has far more non-English merges than cl100k
    o200k = counter.count_text_tokens("gpt-4o", text)
    assert (o200k, counter.count_text_tokens("gpt-4", text)) == (9, 14)
    assert counter.count_text_tokens("claude-3-5-haiku", text) == math.ceil(o200k * 1.1)
    assert counter.count_text_tokens("gpt-4o", "") == 0
    assert counter.is_exact("gpt-4o") and not counter.is_exact("claude-3-5-haiku")


def test_messages_sum_to_the_estimate(counter: TokenCounter) -> None:
    messages = OPENAI_BODY["messages"]
    total = counter.overhead_tokens("gpt-4o", tools=OPENAI_BODY["tools"]) + sum(
        counter.message_tokens("gpt-4o", m) for m in messages
    )
    assert total == counter.estimate_chat_tokens("gpt-4o", messages, tools=OPENAI_BODY["tools"])
