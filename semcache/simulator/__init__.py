"""A simulated upstream: an HTTP server that speaks OpenAI's and Anthropic's wire formats.

Tests and benchmarks point the SDKs (or semcache's proxy) at it instead of a real provider. It
answers deterministically, counts tokens honestly, models each provider's prompt caching, and
injects faults on request (``X-Sim-Fault``) or from a schedule (``POST /sim/faults``).
"""

from __future__ import annotations

from .app import create_simulator_app, simulator_state
from .cli import add_simulator_arguments, main, run_simulator
from .config import (
    FAULT_NAMES,
    HEADER_ANSWER_TOKENS,
    HEADER_FAULT,
    HEADER_PER_TOKEN_MS,
    HEADER_RETRY_AFTER,
    HEADER_TTFT_MS,
    SimulatorConfig,
)
from .state import SimulatorState

__all__ = [
    "FAULT_NAMES",
    "HEADER_ANSWER_TOKENS",
    "HEADER_FAULT",
    "HEADER_PER_TOKEN_MS",
    "HEADER_RETRY_AFTER",
    "HEADER_TTFT_MS",
    "SimulatorConfig",
    "SimulatorState",
    "add_simulator_arguments",
    "create_simulator_app",
    "main",
    "run_simulator",
    "simulator_state",
]
