"""The cost and traffic levers end to end: a real server, the SDKs, the simulator upstream."""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from servers import REPO, ServerProcess
from simulator_helpers import RunningSimulator

from semcache.levers.pricing import PricingTable, Usage, format_usd

KEYS = {
    "acme": "sk-acme",
    "free": "sk-acme-free",
    "limited": "sk-limited",
    "broke": "sk-broke",
    "soft": "sk-soft",
}
LEVERS = """
[tiers.free]
max_tokens = 50
input_tokens = 400
urgency_factor = 2

[rate_limits.limited]
rpm = 3

[model_tpm]
"gpt-4.1-mini" = 600

[queue]
max_wait_s = 30

[spend.overrides."tenant:broke"]
daily_hard = 0.000001

[spend.overrides."tenant:soft"]
daily_soft = 0.0000001

[routing]
aliases = { cheap = "gpt-4o-mini", smart = "gpt-4o" }
tasks = { summarize = "gpt-4o-mini" }
fallbacks = { "gpt-4.1" = ["gpt-4o-mini"] }

[alerts]
webhook = "{webhook}"
"""


class AlertReceiver:
    """A real HTTP endpoint on loopback that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, within_s: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.received)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("levers")


@pytest.fixture(scope="module")
def alerts() -> Iterator[AlertReceiver]:
    receiver = AlertReceiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def server(sim: RunningSimulator, data_dir: Path, alerts: AlertReceiver) -> Iterator[ServerProcess]:
    levers = data_dir / "levers.toml"
    levers.write_text(LEVERS.replace("{webhook}", alerts.url))
    env = {
        "SEMCACHE_API_KEYS": "sk-acme=acme,sk-acme-free=acme:free,sk-limited=limited:limited,"
        "sk-broke=broke,sk-soft=soft",
        "SEMCACHE_OPENAI_BASE_URL": sim.openai_base_url,
        "SEMCACHE_ANTHROPIC_BASE_URL": sim.base_url,
        "SEMCACHE_UPSTREAM_FORWARD_HEADERS": "x-sim-*",
        "SEMCACHE_UPSTREAM_BACKOFF_BASE_S": "0.01",
        "SEMCACHE_UPSTREAM_BACKOFF_MAX_S": "0.05",
        "SEMCACHE_LEVERS_FILE": str(levers),
    }
    args = ["serve", "--data-dir", str(data_dir / "data")]
    with ServerProcess(args, env=env, log_path=data_dir / "server.log") as running:
        yield running


def oai(server: ServerProcess, who: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.url + "/v1",
        api_key=KEYS[who],
        max_retries=0,
        timeout=60,
        default_headers={"X-Semcache-Namespace": uuid.uuid4().hex},
    )


def ask(client: openai.OpenAI, text: str, **kwargs: Any) -> tuple[Any, Any]:
    kwargs.setdefault("model", "gpt-4o-mini")
    raw = client.chat.completions.with_raw_response.create(
        messages=[{"role": "user", "content": text}], **kwargs
    )
    return raw.headers, raw.parse()


def last_upstream_body(sim: RunningSimulator) -> dict[str, Any]:
    recent = httpx.get(sim.base_url + "/sim/requests").json()
    return dict(recent[-1]["body"])


def test_cost_and_saved_headers_match_the_pricing_table(server: ServerProcess) -> None:
    client = oai(server)
    headers, answer = ask(client, "What does the enterprise plan include?")
    usage = Usage.from_openai(answer.usage.model_dump())
    expected = PricingTable.load().cost("gpt-4o-mini", usage)
    assert expected.priced and expected.usd and expected.usd > 0
    assert headers["x-semcache-cost-usd"] == format_usd(expected.usd)
    hit_headers, _ = ask(client, "What does the enterprise plan include?")
    assert hit_headers["x-semcache-status"] == "HIT-EXACT"
    assert hit_headers["x-semcache-cost-usd"] == "0.000000"
    assert hit_headers["x-semcache-saved-usd"] == format_usd(expected.usd)


def test_unpriced_model_is_not_zero(server: ServerProcess) -> None:
    headers, _ = ask(oai(server), "Hello there", model="house-model-7")
    assert headers["x-semcache-cost-usd"] == "unpriced"


def test_hard_budget_answers_429_naming_the_budget(server: ServerProcess) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        ask(oai(server, "broke"), "Any question at all")
    error = caught.value.response.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "tenant broke daily budget $0.000001" in error["message"]
    # Nothing was spent: the request's own estimate is what would cross the limit.
    assert "this request's estimated cost $" in error["message"]
    assert "would exceed it ($0.00 spent so far)" in error["message"]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    assert error["resets_at"] == tomorrow
    assert 0 < int(caught.value.response.headers["retry-after"]) <= 86400


def test_soft_budget_alerts_but_serves(server: ServerProcess, alerts: AlertReceiver) -> None:
    client = oai(server, "soft")
    ask(client, "First question about invoices")
    headers, _ = ask(client, "Second question about refunds")
    assert headers["x-semcache-status"] == "MISS"
    metrics = httpx.get(server.url + "/metrics").text
    assert 'semcache_budget_alerts_total{period="daily",scope="tenant"}' in metrics
    # The webhook gets the breach once per budget and period, however many requests follow.
    ask(client, "Third question about exports")
    [alert] = alerts.wait_for(1)
    # The first request already alerts: its estimated cost would cross the limit.
    assert alert["message"].startswith(
        "tenant soft daily budget $0.0000001 soft limit: this request's estimated cost $"
    )
    assert "would exceed it ($0.00 spent so far)" in alert["message"]
    assert Decimal(alert["limit_usd"]) == Decimal("0.0000001")
    assert Decimal(alert["spent_usd"]) == 0
    assert Decimal(alert["estimated_usd"]) > Decimal(alert["limit_usd"])
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    assert alert["resets_at"].startswith(tomorrow)
    time.sleep(0.5)
    assert len(alerts.received) == 1


def test_model_tpm_budget_queues_then_admits(server: ServerProcess, sim: RunningSimulator) -> None:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def one(n: int) -> httpx.Response:
                return await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "gpt-4.1-mini",
                        "max_tokens": 250,
                        "messages": [{"role": "user", "content": f"Queue probe number {n}"}],
                    },
                    headers={
                        "Authorization": f"Bearer {KEYS['acme']}",
                        "X-Semcache-Namespace": uuid.uuid4().hex,
                        "X-Sim-TTFT-Ms": "700",
                    },
                )

            return await asyncio.gather(*(one(n) for n in range(3)))

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200, 200, 200]
    waits = sorted(int(r.headers["x-semcache-queued-ms"]) for r in responses)
    assert waits[0] < 100 and waits[-1] >= 300  # the third waited for the first two to settle


def test_fallback_answers_when_the_first_model_fails(
    server: ServerProcess, sim: RunningSimulator
) -> None:
    client = oai(server)
    sim.schedule_faults(["500", "500", "500"])
    headers, answer = ask(client, "Plan my week", model="gpt-4.1")
    assert headers["x-semcache-model"] == "gpt-4o-mini"
    assert headers["x-semcache-fallbacks"] == "gpt-4.1"
    assert answer.choices[0].message.content
    again, _ = ask(client, "Plan my week", model="gpt-4.1")
    assert again["x-semcache-status"] == "MISS"  # a fallback answer is not stored
    assert again["x-semcache-model"] == "gpt-4.1"


def test_aliases_and_tasks_route(server: ServerProcess, sim: RunningSimulator) -> None:
    client = oai(server)
    headers, _ = ask(client, "Route me", model="cheap")
    assert headers["x-semcache-routed-model"] == "gpt-4o-mini"
    assert last_upstream_body(sim)["model"] == "gpt-4o-mini"
    headers, _ = ask(
        client, "Summarise this", model="gpt-4o", extra_headers={"X-Semcache-Task": "summarize"}
    )
    assert last_upstream_body(sim)["model"] == "gpt-4o-mini"


def test_tier_clamps_max_tokens_and_urgency_raises_it(
    server: ServerProcess, sim: RunningSimulator
) -> None:
    client = oai(server, "free")
    headers, _ = ask(client, "Write a long essay", max_tokens=500)
    assert headers["x-semcache-max-tokens-clamped"] == "500->50"
    assert last_upstream_body(sim)["max_tokens"] == 50
    headers, _ = ask(
        client,
        "Write a long essay now",
        max_tokens=500,
        extra_headers={"X-Semcache-Urgency": "high"},
    )
    assert headers["x-semcache-max-tokens-clamped"] == "500->100"


def test_history_is_trimmed_to_the_tier_budget(
    server: ServerProcess, sim: RunningSimulator
) -> None:
    turns: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."}]
    for n in range(8):
        turns.append({"role": "user", "content": f"Question {n}: " + "tell me more " * 40})
        turns.append({"role": "assistant", "content": "Answer " + "and so on " * 40})
    turns.append({"role": "user", "content": "And finally, what now?"})
    raw = oai(server, "free").chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=turns,  # type: ignore[arg-type]
    )
    dropped = int(raw.headers["x-semcache-history-trimmed"])
    assert dropped > 0
    sent = last_upstream_body(sim)["messages"]
    assert sent[0] == turns[0] and sent[-1] == turns[-1]
    assert len(sent) == len(turns) - dropped


def test_key_rpm_limit_with_openai_style_headers(server: ServerProcess) -> None:
    client = oai(server, "limited")
    remaining = []
    for n in range(3):
        headers, _ = ask(client, f"Rate probe {n}")
        assert headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(headers["x-ratelimit-remaining-requests"]))
    assert remaining == sorted(remaining, reverse=True) and remaining[-1] == 0
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, "One too many")
    assert "requests per minute" in caught.value.response.json()["error"]["message"]
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_anthropic_breakpoints_and_cache_read_savings(
    server: ServerProcess, sim: RunningSimulator
) -> None:
    client = anthropic.Anthropic(
        base_url=server.url,
        api_key=KEYS["acme"],
        max_retries=0,
        default_headers={"X-Semcache-Namespace": uuid.uuid4().hex},
    )
    manual = "Product manual. " + " ".join(
        f"Section {n}: the widget does thing {n}." for n in range(400)
    )

    def call(question: str) -> tuple[Any, Any]:
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-4-6",  # minimum cacheable prefix: 2048 tokens
            max_tokens=64,
            system=manual,
            messages=[{"role": "user", "content": question}],
        )
        return raw.headers, raw.parse()

    _, first = call("How do I reset the widget?")
    sent = last_upstream_body(sim)
    assert sent["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert first.usage.cache_creation_input_tokens > 0
    headers, second = call("Which colour options exist for the casing?")
    assert headers["x-semcache-status"] == "MISS"
    assert second.usage.cache_read_input_tokens > 0
    assert float(headers["x-semcache-prompt-cache-saved-usd"]) > 0


def test_a_prompt_cache_write_is_a_cost_never_a_negative_saving(server: ServerProcess) -> None:
    feature = f"prompt-cache-write-{uuid.uuid4().hex[:8]}"
    client = anthropic.Anthropic(
        base_url=server.url,
        api_key=KEYS["acme"],
        max_retries=0,
        default_headers={"X-Semcache-Namespace": uuid.uuid4().hex, "X-Semcache-Feature": feature},
    )
    terms = f"Warranty terms {uuid.uuid4().hex}. " + " ".join(
        f"Clause {n}: part {n} is covered for {n % 7 + 1} years." for n in range(400)
    )
    model = "claude-sonnet-4-6"
    raw = client.messages.with_raw_response.create(
        model=model,
        max_tokens=64,
        system=terms,  # semcache adds the cache_control breakpoint: the provider writes it
        messages=[{"role": "user", "content": "Is the battery covered?"}],
    )
    headers, answer = raw.headers, raw.parse()
    assert headers["x-semcache-status"] == "MISS"
    assert answer.usage.cache_creation_input_tokens > 0
    assert not answer.usage.cache_read_input_tokens
    table = PricingTable.load()
    price = table.price(model)
    assert price is not None and price.cache_write == price.input * Decimal("1.25")
    usage = Usage.from_anthropic(answer.usage.model_dump())
    cost = table.cost(model, usage)
    assert cost.usd is not None
    # Nothing was read from the provider's cache: no saving, never a negative one ...
    assert headers["x-semcache-prompt-cache-saved-usd"] == "0.000000"
    # ... and the write, billed at 1.25x input, is in the cost with its premium named.
    premium = usage.cache_write * (price.cache_write - price.input) / Decimal(1_000_000)
    assert premium > 0
    assert headers["x-semcache-cost-usd"] == format_usd(cost.usd)
    assert headers["x-semcache-prompt-cache-write-usd"] == format_usd(premium)
    usage_report = httpx.get(
        server.url + "/v1/usage",
        params={"group_by": "feature"},
        headers={"Authorization": f"Bearer {KEYS['acme']}"},
    ).json()
    [group] = [g for g in usage_report["groups"] if g["key"]["feature"] == feature]
    assert group["requests"] == 1
    assert group["cost_usd"] == pytest.approx(float(cost.usd), abs=1e-9)
    assert group["prompt_cache_saved_usd"] == 0


def test_openai_requests_get_a_prompt_cache_key(
    server: ServerProcess, sim: RunningSimulator
) -> None:
    client = oai(server)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You are the billing assistant."},
            {"role": "user", "content": "Where is my invoice?"},
        ],
    )
    assert last_upstream_body(sim)["prompt_cache_key"].startswith("semcache-")


def test_usage_and_report_sum_to_the_rows(server: ServerProcess, data_dir: Path) -> None:
    client = oai(server)
    ask(
        client,
        "Usage probe one",
        extra_headers={"X-Semcache-Feature": "search", "X-Semcache-User": "u1"},
    )
    ask(
        client,
        "Usage probe one",
        extra_headers={"X-Semcache-Feature": "search", "X-Semcache-User": "u1"},
    )
    ask(
        client,
        "Usage probe two",
        extra_headers={"X-Semcache-Feature": "chat", "X-Semcache-User": "u2"},
    )
    r = httpx.get(
        server.url + "/v1/usage",
        params={"group_by": "feature,model,day"},
        headers={"Authorization": f"Bearer {KEYS['acme']}"},
    )
    usage = r.json()
    assert usage["tenant"] == "acme"
    with sqlite3.connect(data_dir / "data" / "semcache.db") as conn:
        count, cost, saved = conn.execute(
            "SELECT count(*), sum(cost_usd), sum(saved_usd) FROM requests WHERE tenant = 'acme'"
        ).fetchone()
    total = usage["total"]
    assert total["requests"] == count
    assert total["cost_usd"] == pytest.approx(cost, abs=1e-9)
    assert total["saved_usd"] == pytest.approx(saved, abs=1e-9) and saved > 0
    assert sum(g["requests"] for g in usage["groups"]) == count
    assert {g["key"]["feature"] for g in usage["groups"]} >= {"search", "chat"}
    assert all("anomaly" in g for g in usage["groups"])
    # Another tenant's usage is not in it.
    other = httpx.get(
        server.url + "/v1/usage", headers={"Authorization": f"Bearer {KEYS['limited']}"}
    ).json()
    assert other["tenant"] == "limited" and other["total"]["requests"] < count

    out = data_dir / "report.csv"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "semcache",
            "report",
            "--data-dir",
            str(data_dir / "data"),
            "--tenant",
            "acme",
            "--group-by",
            "model",
            "--csv",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "TOTAL" in result.stdout
    rows = list(csv.DictReader(out.open()))
    assert rows[-1]["model"] == "TOTAL"
    assert int(rows[-1]["requests"]) == count
    assert float(rows[-1]["cost_usd"]) == pytest.approx(cost, abs=1e-6)
    assert sum(int(r["requests"]) for r in rows[:-1]) == count


def test_report_by_day_writes_its_csv_with_every_grouping(data_dir: Path) -> None:
    """The README's `report --group-by tenant,feature,day --csv` crashed with IndexError (the
    TOTAL row had no flag column) and wrote no CSV."""
    for group_by in ("tenant,feature,day", "day", "tenant,user,feature,model,day,status"):
        out = data_dir / f"report-{group_by.replace(',', '-')}.csv"
        result = subprocess.run(
            [sys.executable, "-m", "semcache", "report", "--data-dir", str(data_dir / "data"),
             "--group-by", group_by, "--since", "2020-01-01", "--csv", str(out)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        rows = list(csv.DictReader(out.open()))
        assert rows and "flag" in rows[0]
        assert rows[-1][group_by.split(",")[0]] == "TOTAL" and rows[-1]["flag"] == ""
