"""Races between a miss's background store and the next identical request, pinned in order.

The server runs in this process (uvicorn in a thread, real SQLite and FAISS, the simulator
upstream) so that a fault can be injected into its store: a search held until another request
has finished. That replays, step by step, what a slow machine does by chance.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
from proxy_fixtures import KEY
from simulator_helpers import GPT, RunningSimulator, serve_in_thread, user

from semcache.api.deps import Services
from semcache.app import build_services, create_app
from semcache.config import load_settings


@contextmanager
def serving(sim: RunningSimulator, data_dir: Path) -> Iterator[tuple[str, Services]]:
    """``semcache serve`` in this process: its URL and its services, to inject faults into."""
    settings = load_settings(
        environ={},
        overrides={
            "data_dir": str(data_dir),
            "api_keys": f"{KEY}=race-tenant",
            "openai_base_url": sim.openai_base_url,
            "openai_api_key": "sk-upstream-openai",
        },
    )
    services = build_services(settings)
    with serve_in_thread(create_app(services), start_timeout_s=60, stop_timeout_s=20) as url:
        yield url, services


def test_a_store_that_lands_during_a_lookup_is_served_as_the_exact_hit(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """B's exact probe runs before A's answer is stored, B's search before it is indexed, and
    A's flight lands before B would join it. B must still not call upstream a second time:
    it finds the stored entry on a second exact probe (the CI failure of
    test_miss_then_exact_then_semantic_hit, ('MISS', 'MISS'), was this order)."""
    with serving(sim, tmp_path) as (url, services):
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        store = services.store
        search: Callable[..., Any] = store.search
        held, release = threading.Event(), threading.Event()
        calls = 0

        def held_search(*args: Any, **kwargs: Any) -> Any:
            # Fault: the first search (B's) sees the index as it was, then waits for A.
            nonlocal calls
            calls += 1
            if calls == 1:
                found = search(*args, **kwargs)
                held.set()
                assert release.wait(30)
                return found
            return search(*args, **kwargs)

        store.search = held_search  # type: ignore[method-assign]
        messages = user("How do I rotate my API keys safely?")
        outcome: dict[str, Any] = {}

        def ask_b() -> None:
            raw = client.chat.completions.with_raw_response.create(model=GPT, messages=messages)
            outcome["b"] = raw.headers["x-semcache-status"]

        before = sim.stats()["requests"]
        b = threading.Thread(target=ask_b)
        b.start()
        assert held.wait(30)
        a = client.chat.completions.with_raw_response.create(model=GPT, messages=messages)
        assert a.headers["x-semcache-status"] == "MISS"
        # A's flight lands once its store is done; only then does B go on.
        deadline = time.monotonic() + 30
        while len(services.proxy.flights) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert services.proxy.flights.landings == 1
        release.set()
        b.join(30)
        assert outcome["b"] == "HIT-EXACT"
        assert sim.stats()["requests"] == before + 1


def test_only_a_landing_of_the_same_request_calls_for_a_recheck() -> None:
    """Sequential traffic lands a flight during nearly every next request's lookup; only one
    for the same exact key can have stored the entry that lookup missed."""
    from semcache.proxy.singleflight import _LANDED_KEYS, FlightAbandoned, SingleFlight

    def land(flights: SingleFlight[str], key: str, answered: bool = True) -> None:
        flight, leader = flights.join(key)
        assert leader
        if answered:
            flight.resolve("answer")
        else:
            flight.fail(FlightAbandoned("gone"))
        flights.land(key, flight)

    async def run() -> None:
        flights: SingleFlight[str] = SingleFlight()
        mark = flights.landings
        land(flights, "a")
        land(flights, "b")
        land(flights, "c", answered=False)  # abandoned: nothing was stored
        assert flights.landed_since("a", mark) and flights.landed_since("b", mark)
        assert not flights.landed_since("c", mark)
        assert not flights.landed_since("never-asked", mark)
        later = flights.landings
        assert not flights.landed_since("a", later)
        land(flights, "a")
        assert flights.landed_since("a", later)
        for n in range(_LANDED_KEYS):
            land(flights, f"key-{n}")
        # The latest landing of "a" is no longer remembered: a lookup begun before it
        # rechecks, to be safe, and one begun after it does not.
        assert flights.landed_since("a", later)
        assert not flights.landed_since("a", flights.landings)

    asyncio.run(run())
