"""The levers file: tiers, rate limits, spend budgets, routing and prompt-cache annotation.

These settings are nested (per tier, per model, per scope), so they live in one TOML file named
by the ``levers_file`` setting instead of the flat settings table. Every section is optional;
an absent file means the defaults below: no rate limits, no budgets, no routing rules, the
shipped tiers, and prompt-cache annotation on.

``LeversFile`` is the file's schema (pydantic, strict): unknown sections and keys, and values of
the wrong type (``"false"`` for a boolean, ``"lots"`` for a token count), are refused with one
``ConfigError`` that names each bad key by its dotted path. It only reads and checks; the
levers run on the frozen ``LeversConfig`` it produces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError
from ..tomlfile import read_toml, schema_errors
from .budgets import TierPolicy, TiersSchema, policies_from, tier_policies
from .ratelimit import RateLimits
from .routing import RoutingRules, RoutingSchema
from .spend import SpendLimits, SpendSchema

__all__ = ["LeversConfig", "LeversFile", "levers_from_mapping", "load_levers"]


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


_NonNegativeInt = Annotated[int, Field(ge=0)]
_Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_DEFAULTS = LeversConfig()


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _RateLimitsTable(_Table):
    rpm: _NonNegativeInt | None = None  # 0 or absent: unlimited
    tpm: _NonNegativeInt | None = None

    def limits(self) -> RateLimits:
        return RateLimits(rpm=self.rpm or None, tpm=self.tpm or None)


class _QueueTable(_Table):
    max_wait_s: _Seconds = _DEFAULTS.queue_max_wait_s


class _RoutingTable(RoutingSchema):
    failure_threshold: Annotated[int, Field(ge=1)] = _DEFAULTS.failure_threshold
    cooldown_s: _Seconds = _DEFAULTS.cooldown_s


class _PromptCacheTable(_Table):
    anthropic: bool = _DEFAULTS.annotate_anthropic
    openai: bool = _DEFAULTS.annotate_openai
    anthropic_min_tokens: _NonNegativeInt | None = _DEFAULTS.anthropic_min_tokens


class _AnomalyTable(_Table):
    factor: Annotated[float, Field(gt=0, allow_inf_nan=False)] = _DEFAULTS.anomaly_factor
    window_days: Annotated[int, Field(ge=1)] = _DEFAULTS.anomaly_window_days


class _AlertsTable(_Table):
    webhook: str = _DEFAULTS.alert_webhook


class LeversFile(_Table):
    """The schema of the whole levers file: every section and key, each with its type."""

    tiers: TiersSchema = Field(default_factory=lambda: TiersSchema({}))
    rate_limits: dict[str, _RateLimitsTable] = Field(default_factory=dict)
    model_tpm: dict[str, _NonNegativeInt] = Field(default_factory=dict)  # 0: no budget
    queue: _QueueTable = Field(default_factory=_QueueTable)
    spend: SpendSchema = Field(default_factory=SpendSchema)
    routing: _RoutingTable = Field(default_factory=_RoutingTable)
    prompt_cache: _PromptCacheTable = Field(default_factory=_PromptCacheTable)
    anomaly: _AnomalyTable = Field(default_factory=_AnomalyTable)
    alerts: _AlertsTable = Field(default_factory=_AlertsTable)

    def config(self) -> LeversConfig:
        """The value object the levers run on."""
        routing = self.routing
        return LeversConfig(
            tiers=policies_from(self.tiers),
            rate_limits={tier: table.limits() for tier, table in self.rate_limits.items()},
            model_tpm={model: tpm for model, tpm in self.model_tpm.items() if tpm},
            queue_max_wait_s=self.queue.max_wait_s,
            spend=SpendLimits.from_schema(self.spend),
            routing=RoutingRules.from_schema(routing),
            failure_threshold=routing.failure_threshold,
            cooldown_s=routing.cooldown_s,
            annotate_anthropic=self.prompt_cache.anthropic,
            annotate_openai=self.prompt_cache.openai,
            anthropic_min_tokens=self.prompt_cache.anthropic_min_tokens,
            anomaly_factor=self.anomaly.factor,
            anomaly_window_days=self.anomaly.window_days,
            alert_webhook=self.alerts.webhook,
        )


def levers_from_mapping(data: Mapping[str, Any], source: str = "levers") -> LeversConfig:
    """Check a parsed levers file against the schema; every bad key is named in one error."""
    try:
        schema = LeversFile.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(schema_errors(exc))) from None
    return schema.config()


def load_levers(path: str | Path | None) -> LeversConfig:
    """Read the levers file; no path means every default."""
    if not path:
        return LeversConfig()
    return levers_from_mapping(read_toml(path, "levers file"), f"levers file {path}")
