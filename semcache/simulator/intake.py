"""What both completion endpoints do before they answer: read, record, authenticate, fault.

A request is recorded before anything can reject it, so ``/sim/stats`` counts every POST that
reached the simulator, including the ones it then refused or failed on purpose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from .options import RequestOptions, parse_options
from .state import SimulatorState
from .streaming import hang
from .wire_errors import WireError, fault_error

__all__ = ["Intake", "api_key_of", "check_api_key", "raise_for_fault", "read_request"]


@dataclass(frozen=True)
class Intake:
    """A recorded, authenticated request: its JSON object, its caller's key and its options."""

    body: dict[str, Any]
    api_key: str
    options: RequestOptions


def api_key_of(request: Request) -> str:
    """The key the caller presented, OpenAI style (Bearer) or Anthropic style (x-api-key)."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip()


def check_api_key(request: Request, state: SimulatorState) -> str:
    """The caller's key; a 401 if the simulator requires one and this is not it."""
    key = api_key_of(request)
    required = state.config.required_api_key
    if required is not None and key != required:
        what = "No API key provided" if not key else "Incorrect API key provided"
        raise WireError(401, "authentication", f"{what} (simulated upstream).")
    return key


async def read_request(request: Request, state: SimulatorState) -> Intake:
    """Read and record a completion request, then check its key and ``X-Sim-*`` headers."""
    raw = await request.body()
    try:
        body: Any = json.loads(raw) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        state.record(request.url.path, request.headers, raw.decode("utf-8", "replace"))
        check_api_key(request, state)
        raise WireError(
            400, "invalid_request", f"We could not parse the JSON body of your request: {exc}"
        ) from exc
    state.record(request.url.path, request.headers, body)
    key = check_api_key(request, state)
    if not isinstance(body, dict):
        raise WireError(400, "invalid_request", "The request body must be a JSON object.")
    return Intake(body=body, api_key=key, options=parse_options(request.headers, state.config))


async def raise_for_fault(
    fault: str | None, request: Request, intake: Intake, state: SimulatorState, prompt_tokens: int
) -> None:
    """Raise the error a fault answers with; return for no fault and for ``drop``.

    ``hang`` waits here until the client gives up (or the configured limit passes).
    """
    if fault is None or fault == "drop":
        return
    if fault == "hang":
        await hang(request, state.config.hang_s)
        raise WireError(504, "timeout", "Simulated hang ended without an answer.", fault=fault)
    raise fault_error(
        fault,
        retry_after=intake.options.retry_after,
        prompt_tokens=prompt_tokens,
        window=state.config.context_window_tokens,
    )
