"""The levers file: tiers, rate limits, spend budgets, routing and prompt-cache annotation.

These settings are nested (per tier, per model, per scope), so they live in one TOML file named
by the ``levers_file`` setting instead of the flat settings table. Every section is optional;
an absent file means the defaults below: no rate limits, no budgets, no routing rules, the
shipped tiers, and prompt-cache annotation on.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .budgets import TierPolicy, tier_policies
from .ratelimit import RateLimits
from .routing import RoutingRules
from .spend import SpendLimits

__all__ = ["LeversConfig", "load_levers"]

_SECTIONS = {
    "tiers",
    "rate_limits",
    "model_tpm",
    "queue",
    "spend",
    "routing",
    "prompt_cache",
    "anomaly",
    "alerts",
}


@dataclass(frozen=True)
class LeversConfig:
    """Everything the cost and traffic levers need, as one value object."""

    tiers: Mapping[str, TierPolicy] = field(default_factory=tier_policies)
    rate_limits: Mapping[str, RateLimits] = field(default_factory=dict)
    model_tpm: Mapping[str, int] = field(default_factory=dict)
    queue_max_wait_s: float = 10.0
    spend: SpendLimits = field(default_factory=SpendLimits)
    routing: RoutingRules = field(default_factory=RoutingRules)
    failure_threshold: int = 3
    cooldown_s: float = 30.0
    annotate_anthropic: bool = True
    annotate_openai: bool = True
    anthropic_min_tokens: int | None = None
    anomaly_factor: float = 3.0
    anomaly_window_days: int = 14
    alert_webhook: str = ""

    def limits_for(self, tier: str) -> RateLimits:
        """The RPM/TPM limits of a tier (``default`` when the tier has none of its own)."""
        return self.rate_limits.get(tier) or self.rate_limits.get("default") or RateLimits()


def _table(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"levers file: [{name}] must be a table")
    return value


def _positive_int_or_none(value: Any, where: str) -> int | None:
    if value in (None, 0):
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"levers file: {where} must be a non-negative integer")
    return value


def load_levers(path: str | Path | None) -> LeversConfig:
    """Read the levers file; no path means every default."""
    if not path:
        return LeversConfig()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read levers file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"levers file {path} is not valid TOML: {exc}") from exc
    unknown = set(data) - _SECTIONS
    if unknown:
        raise ConfigError(f"levers file {path}: unknown section(s) {sorted(unknown)}")
    rate_limits = {
        tier: RateLimits(
            rpm=_positive_int_or_none(raw.get("rpm"), f"rate_limits.{tier}.rpm"),
            tpm=_positive_int_or_none(raw.get("tpm"), f"rate_limits.{tier}.tpm"),
        )
        for tier, raw in _table(data, "rate_limits").items()
    }
    model_tpm = {}
    for model, tpm in _table(data, "model_tpm").items():
        value = _positive_int_or_none(tpm, f"model_tpm.{model}")
        if value:
            model_tpm[model] = value
    queue = _table(data, "queue")
    routing = dict(_table(data, "routing"))
    failure_threshold = routing.pop("failure_threshold", 3)
    cooldown_s = routing.pop("cooldown_s", 30.0)
    prompt_cache = _table(data, "prompt_cache")
    anomaly = _table(data, "anomaly")
    alerts = _table(data, "alerts")
    try:
        return LeversConfig(
            tiers=tier_policies(_table(data, "tiers")),
            rate_limits=rate_limits,
            model_tpm=model_tpm,
            queue_max_wait_s=float(queue.get("max_wait_s", 10.0)),
            spend=SpendLimits.from_mapping(_table(data, "spend")),
            routing=RoutingRules.from_mapping(routing),
            failure_threshold=int(failure_threshold),
            cooldown_s=float(cooldown_s),
            annotate_anthropic=bool(prompt_cache.get("anthropic", True)),
            annotate_openai=bool(prompt_cache.get("openai", True)),
            anthropic_min_tokens=prompt_cache.get("anthropic_min_tokens"),
            anomaly_factor=float(anomaly.get("factor", 3.0)),
            anomaly_window_days=int(anomaly.get("window_days", 14)),
            alert_webhook=str(alerts.get("webhook", "")),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"levers file {path}: {exc}") from exc
