"""The levers file's schema: every key is known, every value has its type, errors name the key."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from semcache.errors import ConfigError
from semcache.levers.config import LeversConfig, load_levers
from semcache.levers.ratelimit import RateLimits
from semcache.levers.routing import RoutingRules
from semcache.levers.spend import SpendLimits


def _load(tmp_path: Path, text: str) -> LeversConfig:
    path = tmp_path / "levers.toml"
    path.write_text(text)
    return load_levers(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    message = caught.value.message
    assert message.startswith(f"levers file {tmp_path / 'levers.toml'}: "), message
    return message


@pytest.mark.parametrize(
    ("section", "typo"),
    [
        ("queue", "max_wiat_s = 5"),
        ("prompt_cache", "antropic = false"),
        ("anomaly", "window_day = 7"),
        ("alerts", "web_hook = 'https://hooks.example.internal/x'"),
        ("routing", "cooldown = 5"),
        ("rate_limits.free", "rpn = 5"),
        ("tiers.free", "max_token = 5"),
        ("spend.tenant", "daily = 5"),
    ],
)
def test_a_misspelt_key_fails_naming_it(tmp_path: Path, section: str, typo: str) -> None:
    key = typo.split(" = ")[0]
    message = _error(tmp_path, f"[{section}]\n{typo}\n")
    assert message.endswith(f": {section}.{key}: unknown key")


def test_a_string_is_not_a_boolean(tmp_path: Path) -> None:
    message = _error(tmp_path, '[prompt_cache]\nanthropic = "false"\n')
    assert message.endswith("prompt_cache.anthropic: expected a boolean, got 'false'")
    message = _error(tmp_path, "[prompt_cache]\nopenai = 0\n")
    assert message.endswith("prompt_cache.openai: expected a boolean, got 0")
    assert _load(tmp_path, "[prompt_cache]\nanthropic = false\n").annotate_anthropic is False


def test_a_mistyped_token_count_names_the_key_and_the_type(tmp_path: Path) -> None:
    message = _error(tmp_path, '[tiers.free]\nmax_tokens = "lots"\n')
    assert message.endswith("tiers.free.max_tokens: expected an integer, got 'lots'")
    assert "positive" not in message
    message = _error(tmp_path, "[tiers.free]\nmax_tokens = 0\n")
    assert message.endswith("tiers.free.max_tokens: must be at least 1, got 0")


def test_every_bad_key_is_named_in_one_error(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        '[queue]\nmax_wiat_s = 5\n[prompt_cache]\nanthropic = "false"\n'
        '[tiers.free]\nmax_tokens = "lots"\n',
    )
    assert message.split(": ", 1)[1] == (
        "tiers.free.max_tokens: expected an integer, got 'lots'; "
        "queue.max_wiat_s: unknown key; "
        "prompt_cache.anthropic: expected a boolean, got 'false'"
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[routng]\n", "routng: unknown section"),
        ("queue = 5\n", "queue: expected a table, got 5"),
        ("[rate_limits.free]\nrpm = -1\n", "rate_limits.free.rpm: must be at least 0, got -1"),
        ("[rate_limits.free]\nrpm = true\n", "rate_limits.free.rpm: expected an integer, got true"),
        ('[model_tpm]\n"gpt-4.1" = 1.5\n', 'model_tpm."gpt-4.1": expected an integer, got 1.5'),
        ("[queue]\nmax_wait_s = inf\n", "queue.max_wait_s: expected a finite number, got inf"),
        ("[queue]\nmax_wait_s = -1\n", "queue.max_wait_s: must be at least 0"),
        ('[queue]\nmax_wait_s = "10"\n', "queue.max_wait_s: expected a number, got '10'"),
        ("[routing]\nfailure_threshold = 0\n", "routing.failure_threshold: must be at least 1"),
        ("[routing]\nfallbacks = { a = 'b' }\n", "routing.fallbacks.a: expected a list, got 'b'"),
        ("[routing]\naliases = { a = 1 }\n", "routing.aliases.a: expected a string, got 1"),
        ("[anomaly]\nfactor = 0\n", "anomaly.factor: must be positive, got 0"),
        ("[anomaly]\nwindow_days = 2.5\n", "anomaly.window_days: expected an integer"),
        ("[alerts]\nwebhook = 1\n", "alerts.webhook: expected a string, got 1"),
        (
            "[tiers.team]\nmax_tokens = 5\n",
            "tiers: new tier 'team' needs max_tokens and input_tokens",
        ),
        ("[tiers.pro]\nurgency_factor = 0.5\n", "tiers.pro.urgency_factor: must be at least 1"),
        (
            "[spend.tenant]\ndaily_hard = -1\n",
            "spend.tenant.daily_hard: expected a non-negative USD",
        ),
        (
            '[spend.tenant]\ndaily_hard = "x"\n',
            "spend.tenant.daily_hard: expected a non-negative USD",
        ),
        ("[spend.overrides.acme]\ndaily_hard = 1\n", "spend.overrides.acme: must look like"),
        (
            "[prompt_cache]\nanthropic_min_tokens = 'auto'\n",
            "prompt_cache.anthropic_min_tokens: expected an integer, got 'auto'",
        ),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, words: str) -> None:
    assert words in _error(tmp_path, text)


def test_a_full_file_reads_into_the_value_object(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        """
[tiers.pro]
max_tokens = 2000
[tiers.team]
max_tokens = 3000
input_tokens = 9000
urgency_factor = 3
[rate_limits.default]
rpm = 60
[rate_limits.free]
rpm = 0
tpm = 4000
[model_tpm]
"gpt-4o" = 2000000
"gpt-4o-mini" = 0
[queue]
max_wait_s = 2
[spend.tenant]
daily_soft = 0.1
[spend.overrides."user:bob"]
monthly_hard = "12.50"
[routing]
aliases = { cheap = "gpt-4o-mini" }
fallbacks = { "gpt-4o" = ["gpt-4.1", "cheap"] }
failure_threshold = 5
cooldown_s = 1
[prompt_cache]
openai = false
anthropic_min_tokens = 2048
[anomaly]
factor = 2.5
window_days = 7
[alerts]
webhook = "https://hooks.example.internal/semcache"
""",
    )
    assert config.tiers["pro"].max_tokens == 2000 and config.tiers["pro"].input_tokens == 64_000
    assert config.tiers["team"].ceiling(urgent=True) == 9000
    assert config.limits_for("free") == RateLimits(rpm=None, tpm=4000)
    assert config.limits_for("pro") == RateLimits(rpm=60)
    assert config.model_tpm == {"gpt-4o": 2_000_000}  # 0: no budget
    assert config.queue_max_wait_s == 2.0 and isinstance(config.queue_max_wait_s, float)
    assert config.spend.tenant.daily_soft == Decimal("0.1")
    assert config.spend.overrides[("user", "bob")].monthly_hard == Decimal("12.50")
    assert config.routing.fallbacks["gpt-4o"] == ("gpt-4.1", "cheap")
    assert (config.failure_threshold, config.cooldown_s) == (5, 1.0)
    assert (config.annotate_anthropic, config.annotate_openai) == (True, False)
    assert config.anthropic_min_tokens == 2048
    assert (config.anomaly_factor, config.anomaly_window_days) == (2.5, 7)
    assert config.alert_webhook == "https://hooks.example.internal/semcache"


def test_empty_or_absent_file_means_the_defaults(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == LeversConfig()
    assert _load(tmp_path, "[queue]\n[prompt_cache]\n") == LeversConfig()
    assert load_levers(None) == LeversConfig() == load_levers("")


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"cannot read levers file {tmp_path}/no")):
        load_levers(tmp_path / "no.toml")
    (tmp_path / "levers.toml").write_text("[queue\n")
    with pytest.raises(ConfigError, match=r"levers file .* is not valid TOML"):
        load_levers(tmp_path / "levers.toml")


def test_section_helpers_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^spend\.tenant\.daily: unknown key$"):
        SpendLimits.from_mapping({"tenant": {"daily": 1}})
    with pytest.raises(ConfigError, match=r"^routing\.routes: unknown key$"):
        RoutingRules.from_mapping({"routes": {}})
    rules = RoutingRules.from_mapping({"fallbacks": {"a": ("b", "c")}})
    assert rules.fallbacks == {"a": ("b", "c")}
