from __future__ import annotations

import copy
from typing import Any

import pytest

from semcache.levers.prompt_cache import (
    annotate_anthropic,
    annotate_openai,
    anthropic_min_cacheable_tokens,
    openai_prompt_cache_key,
)
from semcache.levers.tokens import TokenCounter
from semcache.simulator.anthropic_api import anthropic_prompt_blocks
from semcache.simulator.config import SimulatorConfig
from semcache.simulator.state import SimulatorState

EPHEMERAL = {"type": "ephemeral"}


def _long(n: int) -> str:
    return "word" + " word" * (n - 1)  # n tokens in o200k


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def _marks(body: dict[str, Any]) -> int:
    count = sum("cache_control" in t for t in body.get("tools") or ())
    if isinstance(body.get("system"), list):
        count += sum("cache_control" in b for b in body["system"])
    for m in body["messages"]:
        if isinstance(m["content"], list):
            count += sum("cache_control" in b for b in m["content"])
    return count


def test_long_system_gets_one_breakpoint_and_input_is_untouched(counter: TokenCounter) -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "system": _long(1200),
        "messages": [{"role": "user", "content": "Hi"}],
    }
    original = copy.deepcopy(body)
    out, added = annotate_anthropic(body, None, counter)
    assert body == original
    assert added == 1  # the tools alone are far below 1024 tokens
    assert "cache_control" not in out["tools"][0]
    assert out["system"] == [{"type": "text", "text": _long(1200), "cache_control": EPHEMERAL}]


def test_short_prompts_are_left_alone(counter: TokenCounter) -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
    }
    out, added = annotate_anthropic(body, None, counter)
    assert (out, added) == (body, 0)


def test_never_more_than_four_breakpoints(counter: TokenCounter) -> None:
    doc = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": _long(1100)},
    }
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "tools": [{"name": f"t{i}", "description": _long(300)} for i in range(4)],
        "system": [{"type": "text", "text": _long(1100)}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": _long(1100)}, doc]},
            {"role": "assistant", "content": "Read."},
            {"role": "user", "content": _long(1100)},
        ],
    }
    out, added = annotate_anthropic(body, None, counter)
    assert added == 4 and _marks(out) == 4
    # Stable prefixes first: tools, system, then the earliest document.
    assert out["tools"][-1]["cache_control"] == EPHEMERAL
    assert out["system"][0]["cache_control"] == EPHEMERAL
    assert out["messages"][0]["content"][0]["cache_control"] == EPHEMERAL
    assert isinstance(out["messages"][2]["content"], str)
    anthropic_prompt_blocks(out, SimulatorState(SimulatorConfig()))  # the simulator accepts it

    body["messages"][2]["content"] = [
        {"type": "text", "text": "q", "cache_control": EPHEMERAL},
    ]
    out, added = annotate_anthropic(body, None, counter)
    assert added == 3 and _marks(out) == 4  # the client's own breakpoint counts


def test_minimum_depends_on_the_model(counter: TokenCounter) -> None:
    assert anthropic_min_cacheable_tokens("claude-3-5-haiku-20241022") == 2048
    assert anthropic_min_cacheable_tokens("claude-haiku-4-5") == 4096
    assert anthropic_min_cacheable_tokens("claude-sonnet-4-5") == 1024
    body = {"system": _long(1500), "messages": [{"role": "user", "content": "Hi"}]}
    assert annotate_anthropic({**body, "model": "claude-3-5-haiku"}, None, counter)[1] == 0
    assert annotate_anthropic({**body, "model": "claude-sonnet-4"}, None, counter)[1] == 1
    assert annotate_anthropic({**body, "model": "claude-3-5-haiku"}, 1024, counter)[1] == 1


OPENAI: dict[str, Any] = {
    "model": "gpt-4o",
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "messages": [
        {"role": "system", "content": "You are a support bot for ACME."},
        {"role": "user", "content": "Hello"},
    ],
}


def test_prompt_cache_key_follows_the_stable_prefix() -> None:
    later_turn = {
        **OPENAI,
        "messages": [
            *OPENAI["messages"],
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Where is my order?"},
        ],
    }
    key = openai_prompt_cache_key(OPENAI)
    assert key.startswith("semcache-") and len(key) == 41
    assert openai_prompt_cache_key(later_turn) == key
    other_system = {
        **OPENAI,
        "messages": [{"role": "system", "content": "Other."}, *OPENAI["messages"][1:]],
    }
    assert openai_prompt_cache_key(other_system) != key
    assert openai_prompt_cache_key(OPENAI, salt="tenant-b") != key
    assert openai_prompt_cache_key(later_turn, include_history=True) != openai_prompt_cache_key(
        OPENAI, include_history=True
    )


def test_annotate_openai_sets_the_key_unless_present() -> None:
    out = annotate_openai(OPENAI)
    assert out["prompt_cache_key"] == openai_prompt_cache_key(OPENAI)
    assert "prompt_cache_key" not in OPENAI
    assert annotate_openai({**OPENAI, "prompt_cache_key": "mine"})["prompt_cache_key"] == "mine"
    bare = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    assert "prompt_cache_key" not in annotate_openai(bare)
