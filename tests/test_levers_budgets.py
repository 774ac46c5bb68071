from __future__ import annotations

from typing import Any

import pytest

from semcache.errors import ConfigError
from semcache.levers.budgets import (
    DEFAULT_TIERS,
    HEADER_HISTORY_TRIMMED,
    HEADER_MAX_TOKENS_CLAMPED,
    budget_headers,
    clamp_max_tokens,
    is_urgent,
    tier_policies,
    trim_history,
)
from semcache.levers.tokens import TokenCounter

PRO = DEFAULT_TIERS["pro"]  # 4096, urgency x2


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def test_clamp_lowers_to_the_tier_ceiling_without_mutating() -> None:
    body = {"model": "gpt-4o", "max_tokens": 8000}
    out, clamped_from = clamp_max_tokens(body, PRO, urgent=False)
    assert (out["max_tokens"], clamped_from) == (4096, 8000)
    assert body["max_tokens"] == 8000
    assert budget_headers(clamped_from, 4096) == {HEADER_MAX_TOKENS_CLAMPED: "8000->4096"}


def test_urgency_raises_the_ceiling() -> None:
    out, clamped_from = clamp_max_tokens({"max_tokens": 8000}, PRO, urgent=True)
    assert (out["max_tokens"], clamped_from) == (8000, None)
    out, clamped_from = clamp_max_tokens({"max_tokens": 9000}, PRO, urgent=True)
    assert (out["max_tokens"], clamped_from) == (8192, 9000)
    assert is_urgent("high") and is_urgent(" TRUE ") and not is_urgent(None)
    assert not is_urgent("low")


def test_clamp_handles_both_fields_and_missing_ones() -> None:
    out, clamped_from = clamp_max_tokens({"max_tokens": 5000, "max_completion_tokens": 6000}, PRO)
    assert (out["max_tokens"], out["max_completion_tokens"], clamped_from) == (4096, 4096, 6000)
    out, clamped_from = clamp_max_tokens({"max_completion_tokens": 100}, PRO)
    assert (out["max_completion_tokens"], clamped_from) == (100, None)
    out, _ = clamp_max_tokens({}, PRO, fill_missing="max_completion_tokens")
    assert out == {"max_completion_tokens": 4096}
    assert clamp_max_tokens({}, PRO)[0] == {}
    # A wrong type is the upstream's to reject, not ours to rewrite.
    assert clamp_max_tokens({"max_tokens": "lots"}, PRO)[0] == {"max_tokens": "lots"}


def test_tiers_are_configurable() -> None:
    tiers = tier_policies(
        {"free": {"max_tokens": 256}, "team": {"max_tokens": 2000, "input_tokens": 9000}}
    )
    assert tiers["free"].max_tokens == 256 and tiers["free"].input_tokens == 8000
    assert tiers["team"].ceiling(urgent=True) == 2000  # default factor 1
    with pytest.raises(ConfigError):
        tier_policies({"x": {"max_tokens": 5}})
    with pytest.raises(ConfigError):
        tier_policies({"pro": {"urgency_factor": 0.5}})


def _word(n: int) -> str:
    return " ".join(["word"] * n)


OPENAI_CHAT: list[dict[str, Any]] = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": _word(50)},
    {"role": "assistant", "content": _word(50)},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": _word(40)},
    {"role": "assistant", "content": "Sunny."},
    {"role": "user", "content": "And tomorrow?"},
]


def _check_shape(messages: list[dict[str, Any]]) -> None:
    rest = [m for m in messages if m["role"] != "system"]
    assert rest and rest[0]["role"] == "user"
    content = rest[0]["content"]
    assert not (isinstance(content, list) and content and content[0].get("type") == "tool_result")
    call_ids = {c["id"] for m in messages for c in m.get("tool_calls") or ()}
    uses = {
        b["id"]
        for m in messages
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_use"
    }
    for m in messages:
        if m["role"] == "tool":
            assert m["tool_call_id"] in call_ids
        for b in m["content"] if isinstance(m["content"], list) else ():
            if b.get("type") == "tool_result":
                assert b["tool_use_id"] in uses


def test_trim_drops_oldest_turn_first(counter: TokenCounter) -> None:
    total = counter.estimate_chat_tokens("gpt-4o", OPENAI_CHAT)
    out, dropped = trim_history(OPENAI_CHAT, total - 10, counter, "gpt-4o")
    assert dropped == 2
    assert out == [OPENAI_CHAT[0], *OPENAI_CHAT[3:]]
    assert budget_headers(None, dropped=dropped) == {HEADER_HISTORY_TRIMMED: "2"}
    assert trim_history(OPENAI_CHAT, total, counter, "gpt-4o") == (OPENAI_CHAT, 0)


def test_trim_keeps_system_and_latest_turn_and_tool_pairs(counter: TokenCounter) -> None:
    total = counter.estimate_chat_tokens("gpt-4o", OPENAI_CHAT)
    for budget in range(0, total + 5, 7):
        out, dropped = trim_history(OPENAI_CHAT, budget, counter, "gpt-4o")
        assert out[0] == OPENAI_CHAT[0] and out[-1] == OPENAI_CHAT[-1]
        assert len(out) + dropped == len(OPENAI_CHAT)
        _check_shape(out)
    out, dropped = trim_history(OPENAI_CHAT, 0, counter, "gpt-4o")
    assert out == [OPENAI_CHAT[0], OPENAI_CHAT[-1]] and dropped == 6


ANTHROPIC_CHAT: list[dict[str, Any]] = [
    {"role": "user", "content": _word(30)},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "t1", "content": _word(60)}],
    },
    {"role": "assistant", "content": "Done."},
    {"role": "user", "content": "Now the second file."},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "t2", "name": "f", "input": {}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2", "content": "x"}]},
]


def test_trim_never_orphans_anthropic_tool_results(counter: TokenCounter) -> None:
    model = "claude-sonnet-4-5"
    total = counter.estimate_chat_tokens(model, ANTHROPIC_CHAT, system="Be brief.")
    seen = set()
    for budget in range(0, total + 5, 5):
        out, dropped = trim_history(ANTHROPIC_CHAT, budget, counter, model, system="Be brief.")
        _check_shape(out)
        seen.add(dropped)
        # The latest turn runs from the last real user message through the pending tool result.
        assert out[-3:] == ANTHROPIC_CHAT[-3:]
    assert seen == {0, 4}
