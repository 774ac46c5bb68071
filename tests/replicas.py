"""Several real `semcache serve` processes on one PostgreSQL database, and an httpx client
that sends each request to the next replica in turn (as a round-robin load balancer would)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from servers import ServerProcess

__all__ = ["RoundRobin", "replica_count", "round_robin_client", "start_replicas"]


class RoundRobin(httpx.BaseTransport):
    """Sends request n to replica n mod len(replicas)."""

    def __init__(self, replicas: Sequence[ServerProcess]) -> None:
        self.size = len(replicas)
        self._ports = itertools.cycle([r.port for r in replicas])
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(port=next(self._ports))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def round_robin_client(replicas: Sequence[ServerProcess], timeout: float = 30) -> httpx.Client:
    return httpx.Client(base_url=replicas[0].url, transport=RoundRobin(replicas), timeout=timeout)


def replica_count(client: httpx.Client) -> int:
    """How many servers ``client`` spreads its requests over (1 unless it is round-robin):
    that many requests reach each of them once."""
    transport = client._transport  # httpx keeps the mounted transport here
    return transport.size if isinstance(transport, RoundRobin) else 1


@contextmanager
def start_replicas(
    count: int, database_url: str, data: Path, env: dict[str, str] | None = None
) -> Iterator[list[ServerProcess]]:
    """``count`` replicas on ``database_url``, started one after the other (the first runs the
    migrations), all stopped on exit; each logs to ``data/replica-N.log``."""
    full = {
        "SEMCACHE_DATABASE_URL": database_url,
        "SEMCACHE_DATABASE_POOL_SIZE": "4",
        **(env or {}),
    }
    data.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        replicas = []
        for n in range(count):
            server = ServerProcess(
                ["serve", "--data-dir", str(data)], env=full, log_path=data / f"replica-{n}.log"
            )
            replicas.append(stack.enter_context(server))
        yield replicas


# Keys and levers of the shared cluster (conftest ``pg_cluster``): alice and bob as in the
# single-server suite, plus keys whose tenants and tiers the cluster-wide levers apply to.
CLUSTER_KEYS = {
    "alice": "sk-alice-test",
    "bob": "sk-bob-test",
    "rpm": "sk-cluster-rpm",
    "tpm": "sk-cluster-tpm",
    "broke": "sk-cluster-broke",
    "open": "sk-cluster-open",
}
CLUSTER_LEVERS = """
[rate_limits.limited]
rpm = 60

[model_tpm]
"gpt-4.1-mini" = 600

[queue]
max_wait_s = 30

[spend.overrides."tenant:broke"]
daily_hard = 0.0003
"""
# tenant[:tier] per key.
CLUSTER_TENANTS = {"rpm": "rpm:limited"}
