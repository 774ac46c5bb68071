"""Hypothesis strategies for near-valid bodies of each endpoint (cache-aside and proxy),
entry ids, and the tables of routes the request strategies choose from."""

from __future__ import annotations

from typing import Any

from fuzz_values import (
    HUGE_INTS,
    chat_text,
    context,
    json_values,
    keys,
    messages,
    names,
    numbers,
    obj,
    odd_text,
    pick,
    query_text,
)
from hypothesis import strategies as st

MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"]
CLAUDES = ["claude-haiku-4-5", "claude-sonnet-4-5"]
entry_ref = pick(
    (6, st.integers(0, 10_000).map(lambda i: ("real", i))),
    (
        2,
        st.sampled_from(
            ["does-not-exist", "..", ".", "%", "%2e%2e", "a" * 5000, "\ud800", "é", "1 OR 1=1"]
        ).map(lambda t: ("raw", t)),
    ),
    (1, odd_text.map(lambda t: ("raw", t))),
)

models = pick((8, st.sampled_from(MODELS)), (1, names))
threshold = pick((4, st.floats(-1.5, 1.5)), (1, numbers))
lookup_body = obj(
    {"query": query_text, "model": models},
    {"namespace": names, "doc_version": names, "context": context, "threshold": threshold},
)
store_body = obj(
    {"query": query_text, "model": models, "response": json_values},
    {
        "namespace": names,
        "doc_version": names,
        "context": context,
        "ttl_s": pick((6, st.floats(1, 3600)), (2, numbers), (1, st.sampled_from(HUGE_INTS))),
        "metadata": st.dictionaries(keys, json_values, max_size=3),
    },
)
wrong_hit_body = obj({"query": query_text})
invalidate_body = obj(
    {},
    {"namespace": names, "model": models, "doc_version": names, "all": st.booleans()},
)
# Model names are echoed in response headers (X-Semcache-Model) and sent upstream.
odd_models = pick(
    (
        2,
        st.sampled_from(
            [
                "gpt-4o-mini\r\nX-Injected: 1",
                "gpt-4o-mini\n",
                "\U0001f600",
                "modèle",
                "gpt-4o-mini ",
                " gpt-4o-mini",
                "GPT-4O-MINI",
                "gpt-4o-mini\x00",
                "../../v1/models",
                "m" * 10_000,
                "no-such-model",
            ]
        ),
    ),
    (1, odd_text),
)
stream_options = pick(
    (4, st.fixed_dictionaries({"include_usage": st.booleans()})), (1, st.just({}))
)
temperature = pick((5, st.floats(0, 2)), (1, numbers))
tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.sampled_from(["get_weather", "lookup"]), "parameters": st.just({})}
            ),
        }
    ),
    max_size=2,
)
system_blocks = st.lists(
    st.fixed_dictionaries(
        {"type": st.just("text"), "text": chat_text}, optional={"cache_control": json_values}
    ),
    max_size=2,
)
chat_body = obj(
    {
        "model": pick(
            (16, st.sampled_from(MODELS)),
            (2, st.sampled_from(["cheap", *CLAUDES])),
            (3, odd_models),
        ),
        "messages": messages,
    },
    {
        "stream": st.booleans(),
        "stream_options": stream_options,
        "n": pick((4, st.just(1)), (1, st.integers(2, 3))),
        "temperature": temperature,
        "top_p": st.floats(0, 1),
        "max_tokens": pick((6, st.integers(1, 64)), (1, st.integers(1))),
        "max_completion_tokens": st.integers(1, 64),
        "stop": st.lists(odd_text, max_size=3),
        "system": pick((3, chat_text), (1, system_blocks)),
        "tools": tools,
        "user": odd_text,
        "seed": st.integers(),
        "response_format": st.just({"type": "json_object"}),
    },
)
anthropic_tools = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["get_weather", "lookup"]), "input_schema": st.just({})},
        optional={"description": odd_text},
    ),
    max_size=2,
)
messages_body = obj(
    {
        "model": pick(
            (16, st.sampled_from(CLAUDES)), (2, st.sampled_from(MODELS)), (3, odd_models)
        ),
        "max_tokens": pick((6, st.integers(1, 64)), (1, st.integers(1))),
        "messages": messages,
    },
    {
        "system": pick((3, chat_text), (2, system_blocks)),
        "stream": st.booleans(),
        "temperature": temperature,
        "top_k": st.integers(0, 100),
        "top_p": st.floats(0, 1),
        "stop_sequences": st.lists(odd_text, max_size=3),
        "metadata": st.fixed_dictionaries({"user_id": odd_text}),
        "tools": anthropic_tools,
    },
)

# (method, route, body strategy or None, weight, takes an entry id)
CACHE_ASIDE: list[tuple[str, str, st.SearchStrategy[Any] | None, int]] = [
    ("POST", "/v1/cache/lookup", lookup_body, 10),
    ("POST", "/v1/cache/store", store_body, 10),
    ("POST", "/v1/cache/entries/{id}/wrong-hits", wrong_hit_body, 3),
    ("GET", "/v1/cache/entries/{id}", None, 3),
    ("DELETE", "/v1/cache/entries/{id}", None, 1),
    ("POST", "/v1/cache/invalidate", invalidate_body, 1),
    ("GET", "/v1/cache/stats", None, 1),
]
PROXY = {"/v1/chat/completions": chat_body, "/v1/messages": messages_body}
POST_ROUTES = [
    "/v1/cache/lookup",
    "/v1/cache/store",
    "/v1/cache/entries/{id}/wrong-hits",
    "/v1/cache/invalidate",
    "/v1/chat/completions",
    "/v1/messages",
]
