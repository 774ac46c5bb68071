"""The ``X-Sim-*`` request headers that steer a single request, read and checked in one place."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .config import (
    HEADER_ANSWER_TOKENS,
    HEADER_FAULT,
    HEADER_PER_TOKEN_MS,
    HEADER_RETRY_AFTER,
    HEADER_TTFT_MS,
    SimulatorConfig,
)
from .faults import check_fault_name
from .wire_errors import WireError

__all__ = ["RequestOptions", "parse_options"]


@dataclass(frozen=True)
class RequestOptions:
    """Per-request behaviour: the config's defaults with any header overrides applied."""

    fault: str | None
    retry_after: str
    ttft_s: float
    per_token_s: float
    answer_tokens: int | None


def _number(headers: Mapping[str, str], name: str, default: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise WireError(400, "invalid_request", f"header {name} must be a number >= 0, got {raw!r}")
    return value


def parse_options(headers: Mapping[str, str], config: SimulatorConfig) -> RequestOptions:
    """Read the ``X-Sim-*`` headers; a bad value is a 400 so a typo in a test is loud."""
    fault_raw = headers.get(HEADER_FAULT)
    fault = fault_raw.strip().lower() if fault_raw else None
    try:
        check_fault_name(fault)
    except ValueError as exc:
        raise WireError(400, "invalid_request", f"header {HEADER_FAULT}: {exc}") from exc

    answer_tokens: int | None = None
    raw_answer = headers.get(HEADER_ANSWER_TOKENS)
    if raw_answer is not None:
        if not raw_answer.strip().isdigit():
            raise WireError(
                400,
                "invalid_request",
                f"header {HEADER_ANSWER_TOKENS} must be an integer >= 0, got {raw_answer!r}",
            )
        answer_tokens = int(raw_answer)

    retry_after = _number(headers, HEADER_RETRY_AFTER, 1.0)
    return RequestOptions(
        fault=fault,
        # Whole seconds are the common form of Retry-After; keep fractions as given.
        retry_after=str(int(retry_after)) if retry_after.is_integer() else str(retry_after),
        ttft_s=_number(headers, HEADER_TTFT_MS, config.ttft_ms) / 1000.0,
        per_token_s=_number(headers, HEADER_PER_TOKEN_MS, config.per_token_ms) / 1000.0,
        answer_tokens=answer_tokens,
    )
