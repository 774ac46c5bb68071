"""A simulator plus a real semcache server in front of it, for the proxy tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import openai
from servers import ServerProcess
from simulator_helpers import RunningSimulator

KEY = "sk-proxy-test"


@contextmanager
def semcache_in_front_of(
    sim: RunningSimulator, data_dir: Path, env: Mapping[str, str] | None = None, **settings: str
) -> Iterator[ServerProcess]:
    """A server in front of ``sim`` with ``settings`` (SEMCACHE_<NAME>) and other variables
    (``env``, such as OTEL_*)."""
    server_env = {
        "SEMCACHE_API_KEYS": f"{KEY}=proxy-tenant",
        "SEMCACHE_OPENAI_BASE_URL": sim.openai_base_url,
        "SEMCACHE_OPENAI_API_KEY": "sk-upstream-openai",
        "SEMCACHE_ANTHROPIC_BASE_URL": sim.base_url,
        "SEMCACHE_ANTHROPIC_API_KEY": "sk-upstream-anthropic",
        "SEMCACHE_UPSTREAM_FORWARD_HEADERS": "x-sim-*",
        "SEMCACHE_UPSTREAM_BACKOFF_BASE_S": "0.05",
        "SEMCACHE_UPSTREAM_BACKOFF_MAX_S": "0.2",
        "SEMCACHE_UPSTREAM_READ_TIMEOUT_S": "1.5",
        **{f"SEMCACHE_{k.upper()}": v for k, v in settings.items()},
        **(env or {}),
    }
    server = ServerProcess(
        ["serve", "--data-dir", str(data_dir)], env=server_env, log_path=data_dir / "server.log"
    )
    with server:
        yield server


def openai_client(server: ServerProcess) -> openai.OpenAI:
    """An SDK client of ``server`` with a namespace of its own: probes of different tests must
    not answer each other semantically."""
    return openai.OpenAI(
        base_url=server.url + "/v1",
        api_key=KEY,
        max_retries=0,
        timeout=30,
        default_headers={"X-Semcache-Namespace": uuid.uuid4().hex},
    )
