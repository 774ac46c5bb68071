"""Token budgets per tier: a ceiling on ``max_tokens`` and history trimmed to an input budget.

Tiers come with API keys (``key=tenant:tier``). A request that says it is urgent (the
``X-Semcache-Urgency`` header) gets its tier's ceiling times the tier's urgency factor. History
is trimmed by whole turns, oldest first: a turn starts at a user message and runs to the next
one, so an assistant's tool calls always travel with their results and a trimmed conversation
still starts with a user message, as Anthropic requires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ..errors import ConfigError
from ..tomlfile import schema_errors
from .tokens import TokenCounter

__all__ = [
    "DEFAULT_TIERS",
    "HEADER_HISTORY_TRIMMED",
    "HEADER_MAX_TOKENS_CLAMPED",
    "HEADER_URGENCY",
    "TierPolicy",
    "TierSchema",
    "TiersSchema",
    "budget_headers",
    "clamp_max_tokens",
    "is_urgent",
    "policies_from",
    "tier_policies",
    "trim_history",
]

HEADER_URGENCY = "X-Semcache-Urgency"
# "<requested>-><applied>", e.g. "8000->1024".
HEADER_MAX_TOKENS_CLAMPED = "X-Semcache-Max-Tokens-Clamped"
# How many messages were dropped from the front of the conversation.
HEADER_HISTORY_TRIMMED = "X-Semcache-History-Trimmed"

_MAX_TOKEN_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_URGENT_VALUES = frozenset({"1", "true", "yes", "on", "high", "urgent"})
_SYSTEM_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True)
class TierPolicy:
    """What one tier may ask for: output ceiling, input budget, and the urgency multiplier."""

    name: str
    max_tokens: int
    input_tokens: int
    urgency_factor: float = 1.0

    def ceiling(self, urgent: bool) -> int:
        """The ``max_tokens`` ceiling for a request, urgent or not."""
        return int(self.max_tokens * self.urgency_factor) if urgent else self.max_tokens


DEFAULT_TIERS: Mapping[str, TierPolicy] = {
    "free": TierPolicy("free", max_tokens=1024, input_tokens=8_000, urgency_factor=1.0),
    "pro": TierPolicy("pro", max_tokens=4096, input_tokens=64_000, urgency_factor=2.0),
    "enterprise": TierPolicy(
        "enterprise", max_tokens=16_384, input_tokens=200_000, urgency_factor=2.0
    ),
}


_PositiveInt = Annotated[int, Field(ge=1)]


class TierSchema(BaseModel):
    """One ``[tiers.<name>]`` table; a field left out keeps the shipped tier's value."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_tokens: _PositiveInt | None = None
    input_tokens: _PositiveInt | None = None
    urgency_factor: Annotated[float, Field(ge=1, allow_inf_nan=False)] | None = None


class TiersSchema(RootModel[dict[str, TierSchema]]):
    """The ``[tiers]`` table: shipped tiers changed field by field, or new tiers in full."""

    model_config = ConfigDict(strict=True, frozen=True)

    @model_validator(mode="after")
    def _new_tiers_are_complete(self) -> TiersSchema:
        incomplete = [
            name
            for name, tier in self.root.items()
            if name not in DEFAULT_TIERS and (tier.max_tokens is None or tier.input_tokens is None)
        ]
        if incomplete:
            names = ", ".join(repr(n) for n in incomplete)
            raise PydanticCustomError(
                "new_tier", f"new tier {names} needs max_tokens and input_tokens"
            )
        return self


def policies_from(schema: TiersSchema) -> dict[str, TierPolicy]:
    """The default tiers with a checked ``[tiers]`` table laid over."""
    tiers = dict(DEFAULT_TIERS)
    for name, tier in schema.root.items():
        fields = tier.model_dump(exclude_none=True)
        base = tiers.get(name)
        tiers[name] = replace(base, **fields) if base else TierPolicy(name=name, **fields)
    return tiers


def tier_policies(
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, TierPolicy]:
    """The default tiers with ``{tier: {max_tokens, input_tokens, urgency_factor}}`` laid over."""
    try:
        schema = TiersSchema.model_validate(dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError("; ".join(schema_errors(exc, "tiers"))) from None
    return policies_from(schema)


def is_urgent(value: str | None) -> bool:
    """Whether an ``X-Semcache-Urgency`` header value asks for the raised ceiling."""
    return value is not None and value.strip().lower() in _URGENT_VALUES


def clamp_max_tokens(
    body: Mapping[str, Any],
    policy: TierPolicy,
    urgent: bool = False,
    *,
    fill_missing: str | None = None,
) -> tuple[dict[str, Any], int | None]:
    """``body`` with ``max_tokens`` / ``max_completion_tokens`` (the Responses API's
    ``max_output_tokens``) lowered to the tier's ceiling.

    Returns the (copied) body and the largest value the client asked for above the ceiling, or
    None when nothing was lowered. ``fill_missing`` names the field to set to the ceiling when
    the body has neither (OpenAI's default is the model's whole output window); non-integer
    values are left for the upstream to reject.
    """
    ceiling = policy.ceiling(urgent)
    out = dict(body)
    clamped_from: int | None = None
    present = False
    for key in _MAX_TOKEN_KEYS:
        value = out.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        present = True
        if value > ceiling:
            out[key] = ceiling
            clamped_from = max(value, clamped_from or 0)
    if not present and fill_missing is not None and out.get(fill_missing) is None:
        out[fill_missing] = ceiling
    return out, clamped_from


def budget_headers(
    clamped_from: int | None, applied: int | None = None, dropped: int = 0
) -> dict[str, str]:
    """Response headers that say what the budgets changed in the request."""
    headers: dict[str, str] = {}
    if clamped_from is not None:
        headers[HEADER_MAX_TOKENS_CLAMPED] = f"{clamped_from}->{applied}"
    if dropped:
        headers[HEADER_HISTORY_TRIMMED] = str(dropped)
    return headers


def _is_tool_result_carrier(message: Mapping[str, Any]) -> bool:
    # An Anthropic user message whose blocks are all tool_result answers the assistant's
    # tool_use; it belongs to the turn before it, not a new turn.
    content = message.get("content")
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(b, Mapping) and b.get("type") == "tool_result" for b in content)
    )


def _starts_turn(message: Mapping[str, Any]) -> bool:
    return message.get("role") == "user" and not _is_tool_result_carrier(message)


def trim_history(
    messages: Sequence[Mapping[str, Any]],
    budget_tokens: int,
    counter: TokenCounter,
    model: str,
    *,
    system: str | Sequence[Any] | None = None,
    tools: Sequence[Any] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """``messages`` without their oldest turns, until the prompt fits ``budget_tokens``.

    System and developer messages stay wherever they are, and the latest turn (from the last
    user message on) is always kept, so the result may still be over budget; the caller
    decides what to do then. ``system`` and ``tools`` (Anthropic's separate fields, or an
    OpenAI request's tools) count against the budget but are never dropped. Returns the kept
    messages and how many were dropped.
    """
    kept = [dict(m) for m in messages]
    sizes = [counter.message_tokens(model, m) for m in messages]
    total = counter.overhead_tokens(model, system=system, tools=tools) + sum(sizes)
    if total <= budget_tokens:
        return kept, 0

    # Group the non-system messages into turns: each user message opens one, and whatever
    # precedes the first user message forms a turn of its own.
    turns: list[list[int]] = []
    for index, message in enumerate(messages):
        if message.get("role") in _SYSTEM_ROLES:
            continue
        if not turns or _starts_turn(message):
            turns.append([])
        turns[-1].append(index)

    dropped: set[int] = set()
    for turn in turns[:-1]:  # the latest turn is never dropped
        if total <= budget_tokens:
            break
        dropped.update(turn)
        total -= sum(sizes[i] for i in turn)
    result = [m for i, m in enumerate(kept) if i not in dropped]
    return result, len(dropped)
