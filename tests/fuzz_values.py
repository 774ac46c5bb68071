"""Hypothesis strategies for the values in generated bodies: odd text, arbitrary JSON,
near-valid objects (``obj``) and chat messages; ``pick`` (weighted choice) and ``encode``."""

from __future__ import annotations

import json
import math
from typing import Any

from fuzz_request import NONCE
from hypothesis import strategies as st


@st.composite
def _pick(draw: st.DrawFn, pairs: tuple[tuple[int, st.SearchStrategy[Any]], ...]) -> Any:
    roll = draw(st.integers(0, sum(w for w, _ in pairs) - 1))
    for weight, strategy in pairs:
        if roll < weight:
            return draw(strategy)
        roll -= weight
    raise AssertionError("unreachable")


def pick(*pairs: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, chosen with the given weights."""
    return _pick(pairs)


ODD_STRINGS = [
    "",
    " ",
    "\t\n",
    "\x00",
    "a\x00b",
    "\ud800",  # a lone surrogate: an escape with ensure_ascii, invalid UTF-8 without
    "a \ud800 b",
    "\udfff\ud800",
    "\ufeff",
    "\u202eevil",
    "\u2028\u2029",
    "e\u0301\u0301\u0301",
    "\U0001f600\U0001f44d\U0001f3fd",
    "\U0010ffff",
    "\uffff",
    "null",
    "NaN",
    "Infinity",
    "%s%n%x",
    "{{ query }}",
    "../../etc/passwd",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "x" * 201,
    "é" * 300,
    "q" * 20_001,
]
odd_text = pick(
    (3, st.text(max_size=30)),
    (2, st.sampled_from(ODD_STRINGS)),
    (1, st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)),
)

PHRASES = [
    "How do I reset my password?",
    "How can I reset my password?",
    "What is the capital of France?",
    "Tell me about Paris",
    "How old is it?",
    "Explain quicksort in one sentence",
    "Translate 'good morning' to French",
    "What is the refund policy?",
]
# Cache-aside queries repeat (hits), proxy texts never do (see Fuzzer.send and NONCE).
query_text = pick(
    (5, st.sampled_from(PHRASES)),
    (3, st.sampled_from(PHRASES).map(lambda p: f"{p} {NONCE}")),
    (2, odd_text),
)
chat_text = pick(
    (7, st.sampled_from(PHRASES).map(lambda p: f"{p} {NONCE}")),
    (2, odd_text.map(lambda t: f"{t} {NONCE}")),
    (1, odd_text),
)

HUGE_INTS = [2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 10**400]
scalars = pick(
    (2, st.none()),
    (2, st.booleans()),
    (3, st.integers()),
    (1, st.sampled_from(HUGE_INTS)),
    (3, st.floats()),  # NaN and infinities go out as json.dumps writes them
    (4, odd_text),
)
keys = pick((4, st.text(max_size=10)), (1, st.sampled_from(ODD_STRINGS[:16])))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=10,
)


WRONG_TYPES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    123,
    1.5,
    math.nan,
    math.inf,
    -math.inf,
    10**400,
    "",
    "x",
    "\ud800",
    [],
    [1],
    ["x"],
    {},
    {"a": 1},
    [{}],
]
junk = pick((2, st.sampled_from(WRONG_TYPES)), (1, json_values))
# How many fields a near-valid object gets wrong: (weight, count).
TOP_MUTATIONS = ((5, 0), (9, 1), (4, 2), (2, 3))
NESTED_MUTATIONS = ((15, 0), (4, 1), (1, 2))


@st.composite
def obj(
    draw: st.DrawFn,
    required: dict[str, st.SearchStrategy[Any]],
    optional: dict[str, st.SearchStrategy[Any]] | None = None,
    mutations: tuple[tuple[int, int], ...] = TOP_MUTATIONS,
) -> dict[str, Any]:
    """A valid JSON object of these fields (the optional ones sometimes), then a few mutations:
    a field replaced by a wrong type or random JSON, a field dropped, an unknown key added."""
    optional = optional or {}
    out: dict[str, Any] = {name: draw(valid) for name, valid in required.items()}
    for name, valid in optional.items():
        if draw(st.integers(0, 2)) == 0:
            out[name] = draw(valid)
    count = draw(pick(*((w, st.just(n)) for w, n in mutations)))
    names = [*required, *optional]
    for _ in range(count):
        action = draw(st.integers(0, 9))
        if action < 7 and names:
            out[draw(st.sampled_from(names))] = draw(junk)
        elif action < 9 and out:
            out.pop(draw(st.sampled_from(sorted(out))))
        else:
            out[draw(keys)] = draw(junk)
    return out


def encode(value: Any, ascii_only: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


names = pick((6, st.sampled_from(["", "fuzz", "docs", "v1", "v2"])), (2, odd_text))
finite = st.floats(allow_nan=False, allow_infinity=False)
numbers = pick(
    (4, finite), (2, st.integers()), (1, st.sampled_from([math.nan, math.inf, -math.inf]))
)

ROLES = ["user", "assistant", "system", "tool", "developer", "function"]
roles = pick(
    (12, st.sampled_from(ROLES)),
    (2, st.sampled_from(["", "USER", " user", "bot", "model"])),
    (1, json_values),
)
content_part = pick(
    (
        5,
        st.fixed_dictionaries(
            {"type": st.just("text"), "text": pick((4, chat_text), (1, json_values))}
        ),
    ),
    (
        2,
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(
                    ["image_url", "image", "tool_use", "tool_result", "document", "input_audio"]
                )
            },
            optional={
                "image_url": json_values,
                "source": json_values,
                "content": json_values,
                "id": odd_text,
                "input": json_values,
                "cache_control": json_values,
            },
        ),
    ),
    (1, st.dictionaries(keys, json_values, max_size=3)),
)
content = pick(
    (14, chat_text),
    (3, st.lists(content_part, min_size=0, max_size=3)),
    (1, st.none()),
)
message = pick(
    (
        30,
        obj(
            {"role": roles, "content": content},
            {
                "name": odd_text,
                "tool_calls": json_values,
                "tool_call_id": odd_text,
                "cache_control": json_values,
            },
            mutations=NESTED_MUTATIONS,
        ),
    ),
    (1, junk),
)
messages = pick(
    (20, st.lists(message, min_size=1, max_size=4)),
    (1, st.just([])),
    (1, junk),
)
context = st.lists(message, max_size=3)
