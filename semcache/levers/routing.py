"""Routing: which model serves a request, what to try next when it fails, and cool-downs.

A task rule (``X-Semcache-Task``) wins over the model the client named, since the operator set
it up to pick the model for that task; otherwise an alias (``cheap``, ``smart``) maps to its
model; otherwise the named model is used as is. Each model may have a fallback chain, tried in
order when the upstream fails in a way another model may not: a 5xx, overload, upstream
rate limit, timeout, or a context-length error (a model with a bigger window may fit). Other
4xx answers are the client's fault and are returned as they are.

A model that fails ``failure_threshold`` times in a row (context-length errors excepted, they
say nothing about its health) cools down for ``cooldown_s`` and is left out of plans.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError
from ..tomlfile import schema_errors

__all__ = [
    "HEADER_TASK",
    "FailureKind",
    "Router",
    "RoutingRules",
    "RoutingSchema",
    "classify_failure",
]

HEADER_TASK = "X-Semcache-Task"

_CONTEXT_LENGTH = re.compile(
    r"context[_ ]length|context window|prompt is too long|maximum context|too many tokens"
    r"|exceed(?:s|ed)? (?:the )?context",
    re.IGNORECASE,
)


class FailureKind(StrEnum):
    """How an upstream call failed, as far as routing cares."""

    SERVER_ERROR = "server_error"  # 500, 502, 504 from the provider
    OVERLOADED = "overloaded"  # 503, 529, connection refused
    RATE_LIMITED = "rate_limited"  # the provider's own 429
    TIMEOUT = "timeout"  # no answer in time
    CONTEXT_LENGTH = "context_length"  # the prompt does not fit this model
    CLIENT_ERROR = "client_error"  # any other 4xx: the request is wrong everywhere

    @property
    def falls_back(self) -> bool:
        """Whether another model may succeed where this one failed."""
        return self is not FailureKind.CLIENT_ERROR

    @property
    def counts_against_health(self) -> bool:
        """Whether this failure moves the model toward a cool-down."""
        return self not in (FailureKind.CLIENT_ERROR, FailureKind.CONTEXT_LENGTH)


def classify_failure(
    status: int | None, *, code: str | None = None, message: str = "", timeout: bool = False
) -> FailureKind:
    """The kind of an upstream failure from its status (None: no answer), error code and text."""
    if timeout:
        return FailureKind.TIMEOUT
    if status is None:
        return FailureKind.OVERLOADED
    if code == "context_length_exceeded" or (
        status in (400, 413, 422) and _CONTEXT_LENGTH.search(message or "")
    ):
        return FailureKind.CONTEXT_LENGTH
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status in (503, 529):
        return FailureKind.OVERLOADED
    if status == 504 or status == 408:
        return FailureKind.TIMEOUT
    if status >= 500:
        return FailureKind.SERVER_ERROR
    return FailureKind.CLIENT_ERROR


class RoutingSchema(BaseModel):
    """Task -> model, alias -> model, and model -> fallback chain, as the levers file gives them."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    tasks: dict[str, str] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(default_factory=dict)
    fallbacks: dict[str, Sequence[str]] = Field(default_factory=dict)


@dataclass(frozen=True)
class RoutingRules:
    """Task -> model, alias -> model, and model -> fallback chain."""

    tasks: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    fallbacks: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def from_schema(cls, schema: RoutingSchema) -> RoutingRules:
        """From checked routing rules."""
        return cls(
            tasks=dict(schema.tasks),
            aliases=dict(schema.aliases),
            fallbacks={model: tuple(chain) for model, chain in schema.fallbacks.items()},
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RoutingRules:
        """From ``{tasks: {...}, aliases: {...}, fallbacks: {model: [model, ...]}}``."""
        try:
            schema = RoutingSchema.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError("; ".join(schema_errors(exc, "routing"))) from None
        return cls.from_schema(schema)

    def resolve(self, requested_model: str, task: str | None = None) -> str:
        """The primary model for a request."""
        if task and task in self.tasks:
            return self.aliases.get(self.tasks[task], self.tasks[task])
        return self.aliases.get(requested_model, requested_model)


@dataclass
class _Health:
    failures: int = 0
    cool_until: float = 0.0


class Router:
    """Plans the models to try for a request and tracks which ones are cooling down."""

    def __init__(
        self,
        rules: RoutingRules,
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or cooldown_s < 0:
            raise ConfigError("failure_threshold must be at least 1, cooldown_s not negative")
        self.rules = rules
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._health: dict[str, _Health] = {}

    def cooling_down(self, model: str) -> bool:
        health = self._health.get(model)
        return health is not None and health.cool_until > self._clock()

    def plan(self, requested_model: str, task: str | None = None) -> list[str]:
        """The models to try in order: the primary, then its fallbacks, minus cooling ones.

        When every candidate is cooling down, the one whose cool-down ends first is still
        returned, so a request probes it rather than failing without trying anything.
        """
        primary = self.rules.resolve(requested_model, task)
        chain = [primary]
        for model in self.rules.fallbacks.get(primary, ()):
            resolved = self.rules.aliases.get(model, model)
            if resolved not in chain:
                chain.append(resolved)
        ready = [m for m in chain if not self.cooling_down(m)]
        if ready:
            return ready
        return [min(chain, key=lambda m: self._health[m].cool_until)]

    def report_failure(self, model: str, kind: FailureKind) -> bool:
        """Count a failure; returns whether the caller should move on to the next model."""
        if kind.counts_against_health:
            health = self._health.setdefault(model, _Health())
            health.failures += 1
            # The count is kept through the cool-down, so one more failure after it ends
            # (a failed probe) cools the model again at once.
            if health.failures >= self.failure_threshold:
                health.cool_until = self._clock() + self.cooldown_s
        return kind.falls_back

    def report_success(self, model: str) -> None:
        """A good answer ends the model's run of failures."""
        self._health.pop(model, None)
