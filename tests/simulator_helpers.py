"""Run the upstream simulator as a real HTTP server inside a test process.

``serve_simulator()`` starts uvicorn on a free loopback port in a background thread and yields
a ``RunningSimulator`` once it answers; leaving the ``with`` block stops it. Other test modules
(the proxy's, the benchmarks') can use it the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import uvicorn

from semcache.netbind import listen_socket
from semcache.simulator import SimulatorConfig, SimulatorState, create_simulator_app
from semcache.simulator import simulator_state as state_of

__all__ = [
    "CLAUDE",
    "GPT",
    "LONG_TEXT",
    "RunningSimulator",
    "serve_in_thread",
    "serve_simulator",
    "user",
]

GPT = "gpt-4o-mini"
CLAUDE = "claude-haiku-4-5"
# About 1,500 tokens: over both providers' 1,024-token caching minimum.
LONG_TEXT = " ".join(f"Fact {i}: the simulator remembers prefix number {i}." for i in range(130))


def user(text: str) -> list[Any]:
    """One user message, as both SDKs take it."""
    return [{"role": "user", "content": text}]


@dataclass(frozen=True)
class RunningSimulator:
    base_url: str  # for the anthropic SDK: http://127.0.0.1:PORT
    state: SimulatorState

    @property
    def openai_base_url(self) -> str:
        """For the openai SDK, whose base URL ends in /v1."""
        return self.base_url + "/v1"

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.base_url + "/sim/stats").json()

    def reset(self) -> None:
        httpx.post(self.base_url + "/sim/reset").raise_for_status()

    def schedule_faults(self, faults: list[str | None]) -> None:
        httpx.post(self.base_url + "/sim/faults", json={"faults": faults}).raise_for_status()

    def openai_client(self) -> openai.OpenAI:
        """A fresh simulator (reset) and an openai SDK client for it, without retries."""
        self.reset()
        return openai.OpenAI(
            base_url=self.openai_base_url, api_key="sk-test-key-1234", max_retries=0
        )

    def anthropic_client(self) -> anthropic.Anthropic:
        """A fresh simulator (reset) and an anthropic SDK client for it, without retries."""
        self.reset()
        return anthropic.Anthropic(
            base_url=self.base_url, api_key="sk-ant-test-5678", max_retries=0
        )


@contextmanager
def serve_in_thread(
    app: Any, *, start_timeout_s: float = 20, stop_timeout_s: float = 10, **config: Any
) -> Iterator[str]:
    """uvicorn serving ``app`` on a free loopback port in a background thread, in this process;
    yields its base URL once it has started. ``config``: more ``uvicorn.Config`` options."""
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=stop_timeout_s)
        sock.close()


@contextmanager
def serve_simulator(config: SimulatorConfig | None = None) -> Iterator[RunningSimulator]:
    app = create_simulator_app(config or SimulatorConfig())
    with serve_in_thread(app, lifespan="off", timeout_graceful_shutdown=2) as url:
        yield RunningSimulator(base_url=url, state=state_of(app))
