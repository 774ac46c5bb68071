"""Settings of the upstream simulator, and the names of its per-request controls.

``SimulatorConfig`` is a frozen value object: the app copies what it needs at creation and
keeps everything that changes (counters, fault queue, cache memory) in its own state object.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

__all__ = [
    "DEFAULT_MODELS",
    "FAULT_NAMES",
    "HEADER_ANSWER_TOKENS",
    "HEADER_FAULT",
    "HEADER_PER_TOKEN_MS",
    "HEADER_RETRY_AFTER",
    "HEADER_TTFT_MS",
    "SimulatorConfig",
]

# Request headers a test sends to steer one request. Lower-case, as Starlette looks them up.
HEADER_FAULT = "x-sim-fault"
HEADER_RETRY_AFTER = "x-sim-retry-after"
HEADER_TTFT_MS = "x-sim-ttft-ms"
HEADER_PER_TOKEN_MS = "x-sim-per-token-ms"
HEADER_ANSWER_TOKENS = "x-sim-answer-tokens"

# Every fault the simulator can inject, by the name used in headers and schedules.
FAULT_NAMES: frozenset[str] = frozenset(
    {"429", "500", "502", "503", "504", "529", "hang", "drop", "context_length"}
)

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "claude-haiku-4-5",
    "claude-sonnet-4-5",
)


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated provider behaves. All delays are in milliseconds, durations in seconds.

    ``fault_schedule`` holds fault names (or ``None`` for a normal answer) applied, in order, to
    the next valid requests that carry no ``X-Sim-Fault`` header of their own.
    """

    ttft_ms: float = 0.0
    per_token_ms: float = 0.0
    default_max_tokens: int = 64
    required_api_key: str | None = None
    fault_schedule: tuple[str | None, ...] = ()
    openai_cache_min_tokens: int = 1024
    anthropic_cache_min_tokens: int = 1024
    models: tuple[str, ...] = DEFAULT_MODELS
    # Default lifetime of a cached prompt prefix; both providers keep one about five minutes.
    cache_ttl_s: float = 300.0
    # Upper bound on a "hang" fault, so a client with no timeout cannot pin a task forever.
    hang_s: float = 300.0
    # A prompt longer than this is refused with the provider's context-length error.
    context_window_tokens: int = 200_000
    recent_requests: int = 100

    def __post_init__(self) -> None:
        # Accept any sequence from callers but store tuples, so the object stays hashable.
        object.__setattr__(self, "fault_schedule", tuple(self.fault_schedule))
        object.__setattr__(self, "models", tuple(self.models))
        for name in ("ttft_ms", "per_token_ms", "cache_ttl_s", "hang_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"simulator {name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "default_max_tokens",
            "openai_cache_min_tokens",
            "anthropic_cache_min_tokens",
            "context_window_tokens",
            "recent_requests",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"simulator {name} must be >= 1, got {getattr(self, name)}")
        if self.required_api_key == "":
            raise ConfigError("simulator required_api_key must be non-empty or None")
        unknown = [f for f in self.fault_schedule if f is not None and f not in FAULT_NAMES]
        if unknown:
            raise ConfigError(
                f"unknown simulator fault(s) {unknown}; known: {', '.join(sorted(FAULT_NAMES))}"
            )
