from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from postgres_helpers import PgServer, pg_database, pg_server  # noqa: F401  (fixtures)
from replicas import CLUSTER_KEYS, CLUSTER_LEVERS, CLUSTER_TENANTS, start_replicas
from servers import ServerProcess
from simulator_helpers import RunningSimulator, serve_simulator

KEYS = {"alice": "sk-alice-test", "bob": "sk-bob-test"}


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


@pytest.fixture(scope="session")
def encoder():  # type: ignore[no-untyped-def]
    """The bundled MiniLM encoder, loaded once for in-process tests."""
    from semcache.embed import Encoder

    return Encoder()


@pytest.fixture(scope="session")
def cache_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real `semcache serve` with two tenants, shared by the API tests."""
    data = tmp_path_factory.mktemp("cache-server")
    server = ServerProcess(
        ["serve", "--data-dir", str(data)],
        env={
            "SEMCACHE_API_KEYS": ",".join(f"{k}={t}" for t, k in KEYS.items()),
            "SEMCACHE_SWEEP_INTERVAL_S": "0.5",
        },
        log_path=data / "server.log",
    )
    with server:
        yield server


@dataclass
class Cluster:
    """Three replicas on one PostgreSQL database, with their own upstream simulator."""

    replicas: list[ServerProcess]
    sim: RunningSimulator
    database_url: str
    data: Path
    env: dict[str, str]


@pytest.fixture(scope="session")
def pg_cluster(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:  # noqa: F811
    """Three `semcache serve` replicas on one PostgreSQL database, shared by the behaviour
    suite (test_cache_api, through a round-robin client) and the cross-replica tests."""
    database = pg_server.create_database("cluster")
    data = tmp_path_factory.mktemp("cluster")
    levers = data / "levers.toml"
    levers.write_text(CLUSTER_LEVERS)
    keys = ",".join(
        f"{key}={CLUSTER_TENANTS.get(name, name)}" for name, key in CLUSTER_KEYS.items()
    )
    with serve_simulator() as sim:
        env = {
            "SEMCACHE_API_KEYS": keys,
            "SEMCACHE_LEVERS_FILE": str(levers),
            "SEMCACHE_SWEEP_INTERVAL_S": "0.5",
            "SEMCACHE_OPENAI_BASE_URL": sim.openai_base_url,
            "SEMCACHE_OPENAI_API_KEY": "sk-upstream-openai",
            "SEMCACHE_UPSTREAM_FORWARD_HEADERS": "x-sim-*",
        }
        try:
            with start_replicas(3, database.url, data, env) as replicas:
                yield Cluster(replicas, sim, database.url, data, env)
        finally:
            database.drop()


@pytest.fixture()
def client(cache_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cache_server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    """The upstream simulator on a free loopback port, one per test module."""
    with serve_simulator() as running:
        yield running


@pytest.fixture
def oai(sim: RunningSimulator):  # type: ignore[no-untyped-def]
    """An openai SDK client for a freshly reset simulator (no retries)."""
    return sim.openai_client()


@pytest.fixture
def claude(sim: RunningSimulator):  # type: ignore[no-untyped-def]
    """An anthropic SDK client for a freshly reset simulator (no retries)."""
    return sim.anthropic_client()


@pytest.fixture(scope="module")
def sim_counter():  # type: ignore[no-untyped-def]
    """The simulator's token counter."""
    from semcache.simulator.text import SimTokenizer

    return SimTokenizer()
