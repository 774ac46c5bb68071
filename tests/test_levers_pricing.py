from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from semcache.errors import ConfigError
from semcache.levers.pricing import PricingTable, Usage, format_usd
from semcache.simulator.config import DEFAULT_MODELS


@pytest.fixture(scope="module")
def table() -> PricingTable:
    return PricingTable.load()


def test_openai_cached_tokens_priced_separately(table: PricingTable) -> None:
    usage = Usage.from_openai(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 1024},
        }
    )
    assert (usage.input, usage.cached_read, usage.prompt_tokens) == (976, 1024, 2000)
    cost = table.cost("gpt-4o", usage)
    # 976 * 2.50 + 1024 * 1.25 + 500 * 10.00, per million
    assert cost.priced and cost.usd == Decimal("0.00872")
    assert cost.breakdown["cached_read"] == Decimal("0.00128")


def test_openai_cost_to_the_cent_at_volume(table: PricingTable) -> None:
    usage = Usage.from_openai(
        {
            "prompt_tokens": 1_000_000,
            "completion_tokens": 200_000,
            "prompt_tokens_details": {"cached_tokens": 400_000},
        }
    )
    # 600k * 0.15 + 400k * 0.075 + 200k * 0.60 = 0.09 + 0.03 + 0.12
    assert table.cost("gpt-4o-mini", usage).usd == Decimal("0.24")


def test_anthropic_cache_write_then_read(table: PricingTable) -> None:
    write = Usage.from_anthropic(
        {
            "input_tokens": 100,
            "cache_creation_input_tokens": 2000,
            "cache_read_input_tokens": 0,
            "output_tokens": 300,
        }
    )
    assert write.prompt_tokens == 2100
    # 100 * 3 + 2000 * 3.75 + 300 * 15, per million
    assert table.cost("claude-sonnet-4-5", write).usd == Decimal("0.0123")
    read = Usage.from_anthropic(
        {"input_tokens": 120, "cache_read_input_tokens": 2000, "output_tokens": 300}
    )
    # 120 * 3 + 2000 * 0.30 + 300 * 15
    assert table.cost("claude-sonnet-4-5-20250929", read).usd == Decimal("0.00546")


def test_a_cache_write_is_a_premium_never_a_negative_saving(table: PricingTable) -> None:
    write = Usage.from_anthropic(
        {"input_tokens": 100, "cache_creation_input_tokens": 2000, "output_tokens": 300}
    )
    # Nothing read from the cache: nothing saved; the write costs 2000 * (3.75 - 3.00) extra.
    assert table.prompt_cache_saving("claude-sonnet-4-5", write) == Decimal(0)
    assert table.cache_write_premium("claude-sonnet-4-5", write) == Decimal("0.0015")
    read = Usage.from_anthropic(
        {"input_tokens": 120, "cache_read_input_tokens": 2000, "output_tokens": 300}
    )
    # 2000 * (3.00 - 0.30), per million
    assert table.prompt_cache_saving("claude-sonnet-4-5", read) == Decimal("0.0054")
    assert table.cache_write_premium("claude-sonnet-4-5", read) == Decimal(0)
    both = Usage(input=10, cached_read=1000, cache_write=1000, cache_write_1h=400)
    # A read saves 1000 * (15 - 1.5); 600 writes at 18.75 and 400 at 30 cost above 15.
    assert table.prompt_cache_saving("claude-opus-4-1", both) == Decimal("0.0135")
    assert table.cache_write_premium("claude-opus-4-1", both) == Decimal("0.00825")
    openai = Usage.from_openai(
        {"prompt_tokens": 2000, "prompt_tokens_details": {"cached_tokens": 1024}}
    )
    assert table.prompt_cache_saving("gpt-4o", openai) == Decimal("0.00128")  # 1024 * 1.25
    assert table.prompt_cache_saving("llama-3-70b", read) is None
    assert table.cache_write_premium("llama-3-70b", write) is None


def test_anthropic_one_hour_writes_at_their_own_price(table: PricingTable) -> None:
    usage = Usage.from_anthropic(
        {
            "input_tokens": 0,
            "cache_creation_input_tokens": 1000,
            "cache_creation": {"ephemeral_5m_input_tokens": 600, "ephemeral_1h_input_tokens": 400},
            "output_tokens": 0,
        }
    )
    # 600 * 18.75 + 400 * 30.00, per million
    assert table.cost("claude-opus-4-1", usage).usd == Decimal("0.02325")


def test_unpriced_model_is_not_free(table: PricingTable) -> None:
    cost = table.cost("llama-3-70b", Usage(input=1000, output=10))
    assert (cost.priced, cost.usd) == (False, None)
    assert format_usd(cost.usd) == "unpriced"


def test_snapshots_resolve_by_longest_prefix_only(table: PricingTable) -> None:
    assert table.resolve("gpt-4o-2024-08-06") == "gpt-4o"
    assert table.resolve("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert table.resolve("claude-3-5-haiku-latest") == "claude-3-5-haiku"
    assert table.resolve("claude-opus-4-0") == "claude-opus-4"
    # An exact entry beats its prefix, and an unknown sibling is not a snapshot.
    assert table.price("gpt-4o-2024-05-13").input == Decimal("5.00")  # type: ignore[union-attr]
    assert table.resolve("claude-opus-4-7") is None
    assert table.resolve("gpt-4.1-preview-x") is None


def test_simulator_models_are_priced(table: PricingTable) -> None:
    assert all(table.price(m) is not None for m in DEFAULT_MODELS)


def test_override_and_extend_by_file(tmp_path: Path) -> None:
    toml = tmp_path / "prices.toml"
    toml.write_text('[models."gpt-4o"]\noutput = 12\n[models."my-model"]\ninput = 1\noutput = 2\n')
    js = tmp_path / "more.json"
    js.write_text(json.dumps({"models": {"other": {"input": "0.5", "output": "1.5"}}}))
    table = PricingTable.load(toml, js)
    gpt = table.price("gpt-4o")
    assert gpt is not None and gpt.output == Decimal("12") and gpt.input == Decimal("2.50")
    mine = table.price("my-model")
    # No cache prices given: cached tokens cost the full input price, never less.
    assert mine is not None and mine.cached_input == Decimal("1")
    assert table.estimate("other", 1_000_000, 1_000_000).usd == Decimal("2.0")


def test_bad_pricing_files_fail_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[models."new"]\ninput = 1\n')
    with pytest.raises(ConfigError, match="output is required"):
        PricingTable.load(bad)
    bad.write_text('[models."gpt-4o"]\ninptu = 1\n')
    with pytest.raises(ConfigError, match="unknown field"):
        PricingTable.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        PricingTable.load(tmp_path / "missing.toml")


def test_format_usd_rounds_only_for_display() -> None:
    assert format_usd(Decimal("0.0000125")) == "0.000013"
    assert format_usd(Decimal("5"), places=2) == "5.00"


def test_usage_tolerates_missing_fields() -> None:
    assert Usage.from_openai(None) == Usage()
    usage = Usage.from_openai({"prompt_tokens": 10, "prompt_tokens_details": None})
    assert usage == Usage(input=10)
