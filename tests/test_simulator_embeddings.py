"""The simulator's embeddings endpoint, driven by the official openai SDK."""

from __future__ import annotations

import math

import openai
import pytest
from simulator_helpers import RunningSimulator


def test_embeddings_are_deterministic_unit_vectors(oai: openai.OpenAI) -> None:
    first = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    again = oai.embeddings.create(
        model="text-embedding-3-small", input="beta", encoding_format="float"
    )
    assert [d.index for d in first.data] == [0, 1]
    assert len(first.data[0].embedding) == 1536
    # base64 (the SDK's default) and float carry the same float32 values.
    assert again.data[0].embedding == first.data[1].embedding
    assert first.data[0].embedding != first.data[1].embedding
    assert math.isclose(sum(x * x for x in first.data[0].embedding), 1.0, rel_tol=1e-5)
    assert first.usage.prompt_tokens == first.usage.total_tokens == 2
    short = oai.embeddings.create(model="text-embedding-3-small", input="alpha", dimensions=256)
    assert len(short.data[0].embedding) == 256
    large = oai.embeddings.create(model="text-embedding-3-large", input="alpha")
    assert len(large.data[0].embedding) == 3072
    tokens = oai.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4]])
    assert tokens.usage.prompt_tokens == 4


def test_embeddings_validation_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="input"):
        oai.embeddings.create(model="text-embedding-3-small", input="")
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        oai.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)


def test_stats_count_every_post(sim: RunningSimulator, oai: openai.OpenAI) -> None:
    oai.embeddings.create(model="text-embedding-3-small", input="hi")
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="text-embedding-3-small", input=[])
    stats = sim.stats()
    assert stats["by_endpoint"] == {"/v1/embeddings": 2}
    assert stats["requests"] == 2
