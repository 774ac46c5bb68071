"""Limits, single-flight and faults across replicas: three real `semcache serve` processes on
one PostgreSQL database (conftest ``pg_cluster``), driven with the openai SDK and httpx.

A limit per process would let each replica admit its own share (an RPM of 60 admitting 180
over three replicas); these tests fail that way. PostgreSQL stopped under load and a replica
SIGKILLed mid-burst must lose nothing that was acknowledged."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import openai
from conftest import Cluster
from postgres_helpers import PgServer
from replicas import CLUSTER_KEYS, round_robin_client, start_replicas
from servers import ServerProcess


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {CLUSTER_KEYS[name]}"}


def chat(server: ServerProcess, name: str, text: str, **extra: Any) -> httpx.Response:
    headers = {**bearer(name), **extra.pop("headers", {})}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        return client.post("/v1/chat/completions", json=body, headers=headers)


def test_an_rpm_limit_of_60_holds_for_three_replicas_together(pg_cluster: Cluster) -> None:
    replicas = pg_cluster.replicas
    prompt = f"rate probe {uuid.uuid4().hex}"  # a miss, then exact hits: all count

    def ask(i: int) -> httpx.Response:
        return chat(replicas[i % 3], "rpm", prompt, headers={"X-Semcache-Namespace": "rpm"})

    started = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(120)))
    elapsed = time.monotonic() - started
    admitted = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(admitted) + len(refused) == 120, {r.status_code for r in answers}
    # 60 in the bucket, plus one a second refilled while the burst ran; with a bucket per
    # replica all 120 would pass (40 on each).
    assert 60 <= len(admitted) <= 60 + math.ceil(elapsed) + 1, (len(admitted), elapsed)
    assert {r.headers["x-ratelimit-limit-requests"] for r in admitted} == {"60"}
    for r in refused:
        assert "requests per minute (RPM): limit 60" in r.json()["error"]["message"]
        assert int(r.headers["retry-after"]) >= 1
    # Each replica refused some: request i went to replica i % 3.
    assert {i % 3 for i, r in enumerate(answers) if r.status_code == 429} == {0, 1, 2}


def test_a_model_tpm_budget_is_shared_by_the_replicas(pg_cluster: Cluster) -> None:
    """600 TPM for gpt-4.1-mini; three calls of ~260 estimated tokens on three replicas: two
    fit, the third queues until a settlement on another replica refunds what was not used."""

    async def run() -> list[httpx.Response]:
        async def one(n: int) -> httpx.Response:
            async with httpx.AsyncClient(base_url=pg_cluster.replicas[n].url, timeout=60) as c:
                return await c.post(
                    "/v1/chat/completions",
                    json={
                        "model": "gpt-4.1-mini",
                        "max_tokens": 250,
                        "messages": [{"role": "user", "content": f"TPM probe {n}"}],
                    },
                    headers={
                        **bearer("tpm"),
                        "X-Semcache-Namespace": uuid.uuid4().hex,
                        "X-Sim-TTFT-Ms": "700",
                    },
                )

        return await asyncio.gather(*(one(n) for n in range(3)))

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
    waits = sorted(int(r.headers["x-semcache-queued-ms"]) for r in responses)
    # Per replica, each would have had 600 to itself and none would wait.
    assert waits[0] < 300 and waits[-1] >= 300, waits


def test_a_spend_budget_holds_for_the_cluster(pg_cluster: Cluster) -> None:
    """tenant broke: $0.0003 a day. Calls go to the replicas in turn until one refuses; what
    was spent stays within one call of the budget (per replica it would be three budgets)."""
    spent = Decimal(0)
    costs: list[Decimal] = []
    refused: httpx.Response | None = None
    for n in range(200):
        r = chat(
            pg_cluster.replicas[n % 3],
            "broke",
            f"spend probe {n} {uuid.uuid4().hex}",
            max_tokens=50,
        )
        if r.status_code == 429:
            refused = r
            break
        assert r.status_code == 200, r.text
        cost = Decimal(r.headers["x-semcache-cost-usd"])
        costs.append(cost)
        spent += cost
    assert refused is not None, f"never refused; spent {spent}"
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert len(costs) >= 3  # the budget was reached over calls on every replica
    assert spent - max(costs) < Decimal("0.0003") <= spent + max(costs), (spent, costs)
    time.sleep(1.0)  # the last call's spend is written in the background, right after it
    for server in pg_cluster.replicas:
        r = chat(server, "broke", f"after the budget {uuid.uuid4().hex}", max_tokens=50)
        assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded"


def test_thirty_identical_misses_over_three_replicas_make_one_upstream_call(
    pg_cluster: Cluster,
) -> None:
    sim = pg_cluster.sim
    sim.reset()
    prompt = f"single flight over three {uuid.uuid4().hex}"
    # The upstream takes 3 s to answer, so all thirty are in flight at once.
    headers = {"x-sim-ttft-ms": "3000", "X-Semcache-Namespace": "flight3"}

    def ask(i: int) -> httpx.Response:
        return chat(pg_cluster.replicas[i % 3], "open", prompt, headers=headers)

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(ask, range(30)))
    assert {r.status_code for r in answers} == {200}
    assert len({r.json()["choices"][0]["message"]["content"] for r in answers}) == 1
    assert sim.stats()["requests"] == 1


def test_usage_is_a_cluster_total(pg_cluster: Cluster) -> None:
    """/v1/usage reads the shared attribution rows: calls on every replica, on any replica."""
    client = openai.OpenAI(
        base_url=pg_cluster.replicas[0].url + "/v1", api_key=CLUSTER_KEYS["alice"], max_retries=0
    )
    tag = uuid.uuid4().hex
    for n, server in enumerate(pg_cluster.replicas):
        client.base_url = httpx.URL(server.url + "/v1/")
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"usage {tag} {n}"}],
            extra_headers={"X-Semcache-Feature": tag},
        )
    for server in pg_cluster.replicas:
        # A summary flushes its own replica's buffered rows; the others write theirs within
        # their next flush (every second).
        deadline = time.monotonic() + 10
        while True:
            r = httpx.get(
                server.url + "/v1/usage",
                params={"group_by": "feature"},
                headers=bearer("alice"),
                timeout=30,
            )
            assert r.status_code == 200, r.text
            groups = [g for g in r.json()["groups"] if g["key"].get("feature") == tag]
            if (groups and groups[0]["requests"] == 3) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert groups and groups[0]["requests"] == 3, r.json()


def _store(client: httpx.Client, n: int, tag: str) -> tuple[int, dict[str, Any], str]:
    r = client.post(
        "/v1/cache/store",
        json={"query": f"{tag} question {n}", "model": "m", "response": {"n": n}},
        headers=bearer("open"),
    )
    body = r.json()
    return r.status_code, body, dict(r.headers).get("retry-after", "")


def test_postgresql_restarted_under_load_loses_nothing_acknowledged(
    pg_cluster: Cluster, pg_server: PgServer
) -> None:
    tag = uuid.uuid4().hex
    acknowledged: dict[int, str] = {}
    failures: list[tuple[int, dict[str, Any], str]] = []
    stop = threading.Event()
    counter = iter(range(10**6))
    lock = threading.Lock()

    def load() -> None:
        with round_robin_client(pg_cluster.replicas, timeout=30) as client:
            while not stop.is_set():
                with lock:
                    n = next(counter)
                status, body, retry = _store(client, n, tag)
                if status == 201:
                    acknowledged[n] = body["id"]
                else:
                    failures.append((status, body, retry))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.5)
        before = len(acknowledged)
        pg_server.stop()
        time.sleep(2.0)
        during = len(acknowledged)
        pg_server.start_again()
        time.sleep(3.0)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=60)
    assert before > 0 and len(acknowledged) > during, (before, during, len(acknowledged))
    assert failures, "the outage was not seen"
    for status, body, retry in failures:
        assert status == 503, (status, body)
        assert body["error"]["code"] in {"store_unavailable", "store_busy"}, body
        assert retry == "1"
    # Every acknowledged store is there, on every replica; the replicas recovered by themselves.
    with httpx.Client(timeout=30) as client:
        for server in pg_cluster.replicas:
            for n, entry_id in acknowledged.items():
                r = client.get(f"{server.url}/v1/cache/entries/{entry_id}", headers=bearer("open"))
                assert r.status_code == 200 and r.json()["response"] == {"n": n}, r.text
            assert client.get(server.url + "/readyz").json()["status"] == "ready"


def test_a_replica_killed_mid_burst_loses_no_acknowledged_store(pg_cluster: Cluster) -> None:
    tag = uuid.uuid4().hex
    acknowledged: dict[int, str] = {}
    with start_replicas(1, pg_cluster.database_url, pg_cluster.data / "extra", pg_cluster.env) as (
        doomed,
    ):

        def one(n: int) -> None:
            try:
                with httpx.Client(base_url=doomed.url, timeout=30) as client:
                    status, body, _ = _store(client, n, tag)
            except httpx.HTTPError:
                return  # the replica died with this request in flight: not acknowledged
            if status == 201:
                acknowledged[n] = body["id"]

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(one, n) for n in range(400)]
            deadline = time.monotonic() + 60
            while len(acknowledged) < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            doomed.kill()
            for f in futures:
                f.result()
    assert 40 <= len(acknowledged) < 400, len(acknowledged)
    survivor = pg_cluster.replicas[0]
    with httpx.Client(base_url=survivor.url, timeout=30) as client:
        for n, entry_id in acknowledged.items():
            r = client.get(f"/v1/cache/entries/{entry_id}", headers=bearer("open"))
            assert r.status_code == 200 and r.json()["response"] == {"n": n}, r.text


def test_index_metrics_are_cluster_totals(pg_cluster: Cluster) -> None:
    """Every replica reports the shared index: its entry count and the HNSW index's size."""
    with httpx.Client(base_url=pg_cluster.replicas[0].url, timeout=30) as client:
        assert _store(client, 0, uuid.uuid4().hex)[0] == 201
    seen = set()
    for server in pg_cluster.replicas:
        text = httpx.get(server.url + "/metrics", timeout=30).text
        values = {
            line.split("{")[0]: float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("semcache_index_") and 'backend="postgres"' in line
        }
        assert values["semcache_index_size_bytes"] > 0, values
        assert values["semcache_index_entries"] >= 1, values
        seen.add(values["semcache_index_entries"])
    assert len(seen) == 1, seen  # one count, read from the shared rows
