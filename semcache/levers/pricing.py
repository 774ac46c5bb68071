"""Prices per model and the cost of a call, from the provider's own usage report.

Money is ``Decimal`` throughout and rounded only for display (``format_usd``): a day of
sub-cent calls must add up to the same figure the provider bills. A model missing from the
table is *unpriced* (``Cost.usd is None``), never $0, so a gap in the table cannot pass for
free traffic.

The shipped table is ``semcache/data/pricing.toml``; files given to ``PricingTable.load``
override it model by model (field by field) or add models.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..tomlfile import parse_toml, read_text

__all__ = ["Cost", "ModelPrice", "PricingTable", "Usage", "format_usd"]

_MILLION = Decimal(1_000_000)
_PRICE_FIELDS = ("input", "output", "cached_input", "cache_write", "cache_write_1h")
# What may follow a known model name and still mean the same model: a dated or "-latest"
# snapshot. Anything else ("claude-opus-4-7" after "claude-opus-4") is a different model that
# must come out unpriced rather than at a neighbour's price.
_SNAPSHOT_SUFFIX = re.compile(r"-(?:latest|\d{4}-\d{2}-\d{2}|\d{8}|\d{4})")


def _int(value: Any) -> int:
    # Usage fields are sometimes null or absent (streams, errors); count those as zero.
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class Usage:
    """Tokens of one call, split by how each kind is billed.

    ``input`` counts only the prompt tokens billed at the full input price: cache reads and
    cache writes are separate. ``cache_write_1h`` is the part of ``cache_write`` written with
    Anthropic's one-hour TTL.
    """

    input: int = 0
    output: int = 0
    cached_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Every prompt token, however billed (OpenAI's ``prompt_tokens``)."""
        return self.input + self.cached_read + self.cache_write

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any] | None) -> Usage:
        """From a chat completion's or an embedding's ``usage``, where ``prompt_tokens``
        includes cached ones, or a Responses API response's: the same counts named
        ``input_tokens``, ``input_tokens_details`` and ``output_tokens``."""
        usage = usage or {}
        responses = "prompt_tokens" not in usage and "input_tokens" in usage
        details = usage.get("input_tokens_details" if responses else "prompt_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
        prompt = _int(usage.get("input_tokens" if responses else "prompt_tokens"))
        return cls(
            input=max(prompt - cached, 0),
            output=_int(usage.get("output_tokens" if responses else "completion_tokens")),
            cached_read=cached,
        )

    @classmethod
    def from_anthropic(cls, usage: Mapping[str, Any] | None) -> Usage:
        """From a message's ``usage``; ``input_tokens`` there excludes cache reads and writes."""
        usage = usage or {}
        detail = usage.get("cache_creation")
        one_hour = (
            _int(detail.get("ephemeral_1h_input_tokens")) if isinstance(detail, Mapping) else 0
        )
        return cls(
            input=_int(usage.get("input_tokens")),
            output=_int(usage.get("output_tokens")),
            cached_read=_int(usage.get("cache_read_input_tokens")),
            cache_write=_int(usage.get("cache_creation_input_tokens")),
            cache_write_1h=one_hour,
        )


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens for one model."""

    model: str
    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cost:
    """What a call cost; ``usd`` is None when the model has no price."""

    model: str
    priced: bool
    usd: Decimal | None
    breakdown: Mapping[str, Decimal] = field(default_factory=dict)

    @property
    def display(self) -> str:
        return format_usd(self.usd)


def format_usd(usd: Decimal | None, places: int = 6) -> str:
    """``usd`` rounded half-up to ``places`` decimals, or "unpriced"."""
    if usd is None:
        return "unpriced"
    return str(usd.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    try:
        # Through str() so that a TOML float 0.075 becomes Decimal("0.075"), not its binary twin.
        result = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if not result.is_finite() or result < 0:
        raise ConfigError(f"{where} must be a non-negative number, got {value!r}")
    return result


def _merge(model: str, raw: Any, previous: ModelPrice | None, source: str) -> ModelPrice:
    where = f"{source}: models.{model}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - {*_PRICE_FIELDS, "aliases"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name in _PRICE_FIELDS:
        if name in raw:
            values[name] = _decimal(raw[name], f"{where}.{name}")
        elif previous is not None:
            values[name] = getattr(previous, name)
    for name in ("input", "output"):
        if name not in values:
            raise ConfigError(f"{where}: {name} is required for a new model")
    # A new model with no cache prices is billed at the input price for cached tokens: an
    # overestimate, never a silent discount.
    values.setdefault("cached_input", values["input"])
    values.setdefault("cache_write", values["input"])
    aliases = raw.get("aliases", previous.aliases if previous else ())
    if not isinstance(aliases, list | tuple) or not all(isinstance(a, str) for a in aliases):
        raise ConfigError(f"{where}.aliases must be a list of model names")
    return ModelPrice(model=model, aliases=tuple(aliases), **values)


def _read(path: Path) -> Mapping[str, Any]:
    what = "pricing file"
    text = read_text(path, what)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{what} {path} is not valid JSON: {exc}") from exc
    else:
        data = parse_toml(text, path, what)
    if not isinstance(data, Mapping) or not isinstance(data.get("models", {}), Mapping):
        raise ConfigError(f"{what} {path} must hold a 'models' table")
    return data


class PricingTable:
    """Model prices, looked up by exact name, alias, or snapshot of a known name."""

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices = dict(prices)
        self._names: dict[str, str] = {}
        for price in self._prices.values():
            for alias in price.aliases:
                self._names[alias] = price.model
        # Exact names win over aliases of other models.
        self._names.update({name: name for name in self._prices})

    @classmethod
    def load(cls, *paths: str | Path | None, include_default: bool = True) -> PricingTable:
        """The shipped table, then each file (TOML, or JSON by suffix) laid over it in order."""
        prices: dict[str, ModelPrice] = {}
        sources: list[tuple[Mapping[str, Any], str]] = []
        if include_default:
            text = resources.files("semcache").joinpath("data/pricing.toml").read_text("utf-8")
            source = "semcache/data/pricing.toml"
            sources.append((parse_toml(text, source, "pricing table"), source))
        sources += [(_read(Path(p)), str(p)) for p in paths if p]
        for data, source in sources:
            for model, raw in data.get("models", {}).items():
                prices[model] = _merge(model, raw, prices.get(model), source)
        return cls(prices)

    @classmethod
    def from_mapping(cls, models: Mapping[str, Any]) -> PricingTable:
        """A table from ``{model: {input, output, ...}}``, without the shipped prices."""
        return cls({m: _merge(m, raw, None, "mapping") for m, raw in models.items()})

    def models(self) -> list[str]:
        return sorted(self._prices)

    def resolve(self, model: str) -> str | None:
        """The table's name for ``model``: exact, alias, or the longest name it snapshots."""
        if model in self._names:
            return self._names[model]
        best: str | None = None
        for name in self._names:
            if (
                model.startswith(name)
                and _SNAPSHOT_SUFFIX.fullmatch(model[len(name) :])
                and (best is None or len(name) > len(best))
            ):
                best = name
        return self._names[best] if best is not None else None

    def price(self, model: str) -> ModelPrice | None:
        name = self.resolve(model)
        return self._prices[name] if name is not None else None

    def cost(self, model: str, usage: Usage) -> Cost:
        """The cost of ``usage`` on ``model``, each kind of token at its own price."""
        price = self.price(model)
        if price is None:
            return Cost(model=model, priced=False, usd=None)
        write_1h = min(usage.cache_write_1h, usage.cache_write)
        one_hour_rate = (
            price.cache_write_1h if price.cache_write_1h is not None else price.cache_write
        )
        breakdown = {
            "input": usage.input * price.input / _MILLION,
            "output": usage.output * price.output / _MILLION,
            "cached_read": usage.cached_read * price.cached_input / _MILLION,
            "cache_write": (
                (usage.cache_write - write_1h) * price.cache_write + write_1h * one_hour_rate
            )
            / _MILLION,
        }
        return Cost(
            model=price.model,
            priced=True,
            usd=sum(breakdown.values(), Decimal(0)),
            breakdown=breakdown,
        )

    def prompt_cache_saving(self, model: str, usage: Usage) -> Decimal | None:
        """What reading from the provider's prompt cache saved against the full input price:
        never negative, 0 when nothing was read; None when ``model`` has no price.

        A cache write is not a negative saving: it is a cost, billed in ``cost`` at its own
        price (``cache_write_premium`` is the part above the input price).
        """
        price = self.price(model)
        if price is None:
            return None
        return max(Decimal(0), usage.cached_read * (price.input - price.cached_input) / _MILLION)

    def cache_write_premium(self, model: str, usage: Usage) -> Decimal | None:
        """What writing to the provider's prompt cache cost above the full input price
        (Anthropic bills ``cache_creation_input_tokens`` at 1.25x input, 2x for the one-hour
        TTL): part of ``cost``, never negative; None when ``model`` has no price."""
        price = self.price(model)
        if price is None:
            return None
        written = self.cost(
            model, Usage(cache_write=usage.cache_write, cache_write_1h=usage.cache_write_1h)
        )
        assert written.usd is not None
        return max(Decimal(0), written.usd - usage.cache_write * price.input / _MILLION)

    def estimate(self, model: str, input_tokens: int, output_tokens: int) -> Cost:
        """The cost of a call with every prompt token at the full input price."""
        return self.cost(model, Usage(input=input_tokens, output=output_tokens))
