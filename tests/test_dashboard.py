"""Watching semcache: the dashboard in a real browser, its data endpoint and keys, the request
log, the new metrics, and rejected requests as attribution rows. One real server in front of
the simulator, with real traffic through the proxy."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import openai
import pytest
from browser import headless_page
from proxy_fixtures import semcache_in_front_of
from servers import REPO, ServerProcess
from simulator_helpers import CLAUDE, GPT, RunningSimulator, user

KEYS = {
    "acme": "sk-dash-acme",
    "globex": "sk-dash-globex",
    "initech": "sk-dash-initech",
    "admin": "sk-dash-admin",
}
LEVERS = """
[rate_limits.free]
rpm = 3

[spend.overrides."tenant:initech"]
daily_hard = 0.00001
"""
API_KEYS = (
    f"{KEYS['acme']}=acme,{KEYS['globex']}=globex:free,{KEYS['initech']}=initech,"
    f"{KEYS['admin']}=ops::admin"
)


# Far apart, so that each is a miss (budgets are checked on misses only).
INITECH_QUESTIONS = (
    "What is the boiling point of water at sea level?",
    "Who wrote the play Hamlet?",
    "How many moons does Mars have?",
)


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


@dataclass
class Traffic:
    """What the module's requests got, to compare the dashboard with."""

    statuses: dict[str, list[int]] = field(default_factory=dict)
    wrong_hit_entry: str = ""


@pytest.fixture(scope="module")
def server(sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data = tmp_path_factory.mktemp("dashboard")
    levers = data / "levers.toml"
    levers.write_text(LEVERS)
    (data / "data").mkdir()
    with semcache_in_front_of(
        sim,
        data / "data",
        api_keys=API_KEYS,
        levers_file=str(levers),
        log_format="json",
        hit_decision="cosine",
        threshold="0.8",
    ) as running:
        yield running


def _log(server: ServerProcess) -> str:
    assert server.log_path is not None
    return server.log_path.read_text()


def _chat(who: str, server: ServerProcess, text: str, **headers: str) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": GPT, "messages": user(text)},
        headers={**bearer(who), "X-Semcache-Namespace": "dash", **headers},
        timeout=30,
    )


@pytest.fixture(scope="module")
def traffic(server: ServerProcess, sim: RunningSimulator) -> Traffic:
    sim.reset()
    seen = Traffic()

    def record(who: str, response: httpx.Response) -> httpx.Response:
        seen.statuses.setdefault(who, []).append(response.status_code)
        return response

    # acme: a miss, an exact hit, a semantic hit (then reported wrong), another miss, a
    # streamed SDK call and a Claude message; users and features for the top lists.
    for text, feature, person in [
        ("How do I reset my password?", "support", "ann"),
        ("How do I reset my password?", "support", "ann"),
        ("How can I reset my password?", "support", "bob"),
        ("What is the capital of France?", "trivia", "ann"),
    ]:
        r = record(
            "acme",
            _chat(
                "acme", server, text, **{"X-Semcache-Feature": feature, "X-Semcache-User": person}
            ),
        )
        assert r.status_code == 200, r.text
        if r.headers["x-semcache-status"] == "HIT-SEMANTIC":
            seen.wrong_hit_entry = r.headers["x-semcache-entry-id"]
    assert seen.wrong_hit_entry, "the rewording should have been a semantic hit"
    report = httpx.post(
        f"{server.url}/v1/cache/entries/{seen.wrong_hit_entry}/wrong-hits",
        json={"query": "How can I reset my password?"},
        headers=bearer("acme"),
        timeout=30,
    )
    assert report.status_code == 200, report.text
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key=KEYS["acme"], max_retries=0)
    stream = oai.chat.completions.create(
        model=GPT, messages=user("Tell me a streamed story about caches"), stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    seen.statuses["acme"].append(200)
    claude = anthropic.Anthropic(base_url=server.url, api_key=KEYS["acme"], max_retries=0)
    message = claude.messages.create(
        model=CLAUDE, max_tokens=64, messages=user("Say hello to the dashboard")
    )
    assert message.content
    seen.statuses["acme"].append(200)
    # An upstream that keeps failing: retried, then a 502 (an ERROR-502 row).
    failed = record(
        "acme", _chat("acme", server, "This one fails upstream", **{"X-Sim-Fault": "500"})
    )
    assert failed.status_code == 502, failed.text

    # globex (tier free, 3 requests a minute): two of five are rate-limited.
    for i in range(5):
        record("globex", _chat("globex", server, f"Globex question number {i}"))
    assert seen.statuses["globex"].count(429) == 2, seen.statuses["globex"]

    # initech (a tiny daily budget): the first miss spends it, the next two are refused.
    for text in INITECH_QUESTIONS:
        record("initech", _chat("initech", server, text))
    assert seen.statuses["initech"] == [200, 429, 429], seen.statuses["initech"]
    return seen


def _usage(server: ServerProcess, who: str, **params: str) -> dict[str, Any]:
    r = httpx.get(server.url + "/v1/usage", params=params, headers=bearer(who), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _data(server: ServerProcess, who: str | None, **params: str) -> httpx.Response:
    headers = bearer(who) if who else {}
    return httpx.get(server.url + "/v1/dashboard/data", params=params, headers=headers, timeout=30)


# -- rejected requests are attribution rows ---------------------------------------------------


def test_rejected_requests_are_in_usage(server: ServerProcess, traffic: Traffic) -> None:
    for tenant, rejected in (("globex", "REJECTED-RATE"), ("initech", "REJECTED-BUDGET")):
        usage = _usage(server, tenant, group_by="status")
        sent = len(traffic.statuses[tenant])
        assert usage["total"]["requests"] == sent, usage
        by_status = {g["key"]["status"]: g["requests"] for g in usage["groups"]}
        assert by_status[rejected] == traffic.statuses[tenant].count(429), by_status
    acme = {
        g["key"]["status"]: g["requests"]
        for g in _usage(server, "acme", group_by="status")["groups"]
    }
    assert acme["ERROR-502"] == 1, acme
    assert sum(acme.values()) == len(traffic.statuses["acme"])


# -- the data endpoint and its keys -----------------------------------------------------------


def test_dashboard_data_needs_a_key_and_keeps_tenants_apart(
    server: ServerProcess, traffic: Traffic
) -> None:
    assert _data(server, None).status_code == 401
    assert _data(server, "acme", tenant="globex").status_code == 403
    own = _data(server, "acme").json()
    assert own["tenant"] == "acme" and own["admin"] is False
    assert own["tenants"] == ["acme"]
    assert {t["name"] for t in own["top"]["tenant"]} == {"acme"}
    assert own["total"]["requests"] == _usage(server, "acme")["total"]["requests"]

    everyone = _data(server, "admin").json()
    assert everyone["admin"] is True and everyone["tenant"] is None
    assert {"acme", "globex", "initech"} <= set(everyone["tenants"])
    expected = sum(_usage(server, t)["total"]["requests"] for t in ("acme", "globex", "initech"))
    assert everyone["total"]["requests"] == expected
    one = _data(server, "admin", tenant="globex").json()
    assert one["tenant"] == "globex"
    assert one["total"]["requests"] == _usage(server, "globex")["total"]["requests"]
    assert one["total"]["rejected_rate_limit"] == 2
    # The budget that refused initech, with what it spent against its limit.
    budget = [b for b in everyone["budgets"] if b["name"] == "initech"]
    assert budget and budget[0]["hard_usd"] == pytest.approx(0.00001)
    assert budget[0]["used"] >= 1
    assert len(everyone["wrong_hits"]) == 1
    assert everyone["wrong_hits"][0]["entry_id"] == traffic.wrong_hit_entry


# -- the page, in a real browser ----------------------------------------------------------------

CHART_POINTS = """() => {
  const out = {};
  for (const canvas of document.querySelectorAll("canvas")) {
    const chart = Chart.getChart(canvas);
    out[canvas.id] = chart ? chart.data.datasets.map(d => ({label: d.label, data: d.data})) : null;
  }
  return out;
}"""


def _rows(page: Any, table: str) -> list[list[str]]:
    rows: list[list[str]] = page.eval_on_selector_all(
        f"#{table} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    return rows


def _total(points: list[dict[str, Any]], labels: set[str] | None = None) -> float:
    return sum(v or 0 for d in points if labels is None or d["label"] in labels for v in d["data"])


def test_dashboard_page_draws_the_traffic(server: ServerProcess, traffic: Traffic) -> None:
    everyone = _data(server, "admin").json()
    with headless_page() as page:
        page.goto(f"{server.url}/dashboard?key={KEYS['admin']}")
        page.wait_for_function("Number(document.body.dataset.renders) >= 1", timeout=20_000)
        assert "key=" not in page.url  # the key left the address bar
        charts = page.evaluate(CHART_POINTS)
        assert set(charts) >= {
            "chart-hit-rate",
            "chart-requests",
            "chart-spend",
            "chart-rejections",
            "chart-latency",
            "chart-models",
        }
        assert all(charts.values()), charts
        total = everyone["total"]
        # Requests by outcome: every answered request is a bar segment.
        assert _total(charts["chart-requests"]) == total["answered"]
        rejected = charts["chart-rejections"]
        assert _total(rejected, {"REJECTED-RATE"}) == 2
        assert _total(rejected, {"REJECTED-BUDGET"}) == 2
        assert _total(rejected, {"ERROR-502"}) == 1
        assert _total(charts["chart-spend"], {"spent"}) == pytest.approx(total["cost_usd"])
        assert _total(charts["chart-spend"], {"saved"}) == pytest.approx(total["saved_usd"])
        assert any(v for d in charts["chart-hit-rate"] for v in d["data"])
        assert any(v for v in charts["chart-latency"][0]["data"])
        assert page.inner_text("#kpi-requests") == str(total["requests"])
        assert page.inner_text("#kpi-rate-limited") == "2"
        assert page.inner_text("#kpi-budget") == "2"
        assert page.inner_text("#kpi-wrong-hits") == "1"

        tenants = {row[0]: row for row in _rows(page, "top-tenant")}
        assert {"acme", "globex", "initech"} <= set(tenants)
        for name in ("acme", "globex", "initech"):
            assert tenants[name][1] == str(_usage(server, name)["total"]["requests"])
        assert {GPT, CLAUDE} <= {row[0] for row in _rows(page, "top-model")}
        assert {"support", "trivia"} <= {row[0] for row in _rows(page, "top-feature")}
        assert {"ann", "bob"} <= {row[0] for row in _rows(page, "top-user")}
        assert any(row[0] == "tenant initech" for row in _rows(page, "budgets"))
        assert any(row[0] == "openai" and row[2] == "200" for row in _rows(page, "upstream"))
        assert any(row[0] == "openai" and row[2] == "500" for row in _rows(page, "upstream"))
        assert [row[2] for row in _rows(page, "wrong-hits")] == [traffic.wrong_hit_entry]
        misses = _rows(page, "misses")
        assert misses and all(row[4] in ("MISS", "REFRESH", "BYPASS") for row in misses)

        # The tenant filter: one tenant's numbers.
        page.select_option("#tenant", "globex")
        page.wait_for_function("Number(document.body.dataset.renders) >= 2", timeout=20_000)
        assert page.inner_text("#kpi-requests") == str(
            _usage(server, "globex")["total"]["requests"]
        )
        assert [row[0] for row in _rows(page, "top-tenant")] == ["globex"]

        page.select_option("#tenant", "")
        page.wait_for_function("Number(document.body.dataset.renders) >= 3", timeout=20_000)
        shot = server.log_path.parent / "dashboard.png"  # type: ignore[union-attr]
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        # SEMCACHE_DASHBOARD_SCREENSHOT=docs/dashboard.png refreshes the README's picture.
        target = os.environ.get("SEMCACHE_DASHBOARD_SCREENSHOT")
        if target:
            shutil.copy(shot, REPO / target)


def test_dashboard_sign_in_with_a_tenant_key(server: ServerProcess, traffic: Traffic) -> None:
    with headless_page() as page:
        page.goto(f"{server.url}/dashboard")
        page.wait_for_selector("#login-form", state="visible", timeout=20_000)
        page.fill("#key", "sk-wrong")
        page.click("#login-form button")
        page.wait_for_function(
            "document.getElementById('login-error').textContent.length > 0", timeout=20_000
        )
        page.fill("#key", KEYS["initech"])
        page.click("#login-form button")
        page.wait_for_function("Number(document.body.dataset.renders) >= 1", timeout=20_000)
        assert page.is_disabled("#tenant")
        assert page.input_value("#tenant") == "initech"
        assert page.inner_text("#kpi-requests") == str(
            _usage(server, "initech")["total"]["requests"]
        )
        assert [row[0] for row in _rows(page, "top-tenant")] == ["initech"]
        # The key is never part of a URL the page asked for.
        assert KEYS["initech"] not in page.url


def test_dashboard_is_offline() -> None:
    """No CDN: the page loads its scripts from semcache, and the vendored library keeps its
    licence."""
    static = REPO / "semcache" / "dashboard" / "static"
    page = (static / "index.html").read_text()
    assert not re.search(r"""(src|href)=["']https?://""", page)
    assert (static / "vendor" / "chart.umd.min.js").stat().st_size > 100_000
    assert "MIT License" in (static / "vendor" / "chart.js-LICENSE.md").read_text()


# -- metrics --------------------------------------------------------------------------------------


def test_new_metrics(server: ServerProcess, traffic: Traffic) -> None:
    text = httpx.get(server.url + "/metrics", timeout=30).text

    def value(pattern: str) -> float:
        found = re.search(pattern + r" ([0-9.e+-]+)$", text, re.MULTILINE)
        assert found, pattern
        return float(found.group(1))

    # prometheus_client writes the labels in alphabetical order.
    ok = f'model="{GPT}",provider="openai",status="200"'
    assert value(rf"semcache_upstream_request_seconds_count\{{{ok}\}}") >= 4
    failing = f'model="{GPT}",provider="openai",status="500"'
    assert value(rf"semcache_upstream_errors_total\{{{failing}\}}") == 3  # a call, two retries
    assert value(rf"semcache_upstream_retries_total\{{{failing}\}}") == 2
    assert value(r'semcache_rejected_requests_total\{reason="rate_limit"\}') == 2
    assert value(r'semcache_rejected_requests_total\{reason="budget"\}') == 2
    assert value(r'semcache_hit_decisions_total\{decision="cosine",outcome="accept"\}') >= 1
    assert value(r'semcache_index_entries\{backend="faiss"\}') >= 1
    assert value(r'semcache_index_size_bytes\{backend="faiss"\}') >= 0
    assert re.search(r'semcache_build_info\{.*version="[^"]+".*\} 1\.0', text)
    assert re.search(r'semcache_build_info\{.*encoder_precision="int8".*\} 1\.0', text)
    # This server runs the cosine decision: no verifier loaded.
    assert re.search(r'semcache_build_info\{.*verifier_precision="none".*\} 1\.0', text)


# -- the request log --------------------------------------------------------------------------


def test_request_log_has_one_json_line_per_request(server: ServerProcess, traffic: Traffic) -> None:
    marker = uuid.uuid4().hex
    r = _chat("acme", server, f"Request log probe {marker}")
    assert r.status_code == 200
    hit = _chat("acme", server, f"Request log probe {marker}")
    assert hit.headers["x-semcache-status"] == "HIT-EXACT"
    lookup = httpx.post(
        server.url + "/v1/cache/lookup",
        json={"query": f"Request log lookup {marker}", "model": GPT},
        headers=bearer("globex"),
        timeout=30,
    )
    assert lookup.status_code == 200
    assert httpx.get(server.url + "/v1/usage", timeout=30).status_code == 401
    httpx.get(server.url + "/v1/usage", headers=bearer("acme"), timeout=30)

    log = _log(server)
    lines = [line for line in log.splitlines() if line.strip()]
    # Every line is JSON: semcache's, uvicorn's and the libraries' share the format.
    records = [json.loads(line) for line in lines]
    assert any(r["logger"].startswith("uvicorn") for r in records)
    requests = [r for r in records if r["logger"] == "semcache.request"]
    assert len(requests) >= sum(len(v) for v in traffic.statuses.values()) + 5
    # Never a key, never a prompt (log_prompts is off).
    for key in KEYS.values():
        assert key not in log
    assert "sk-upstream-openai" not in log
    assert marker not in log
    assert "it/s]" not in log and "Batches" not in log  # no progress bars

    miss, again, looked, refused, summed = requests[-5:]
    assert miss["route"] == "/v1/chat/completions" and miss["method"] == "POST"
    assert miss["status"] == 200 and miss["cache"] == "MISS" and miss["tenant"] == "acme"
    assert miss["model"] == GPT
    assert miss["prompt_tokens"] > 0 and miss["completion_tokens"] > 0
    assert miss["cost_usd"] > 0 and miss["upstream_ms"] > 0 and miss["latency_ms"] > 0
    assert miss["request_id"]
    assert again["cache"] == "HIT-EXACT" and again["similarity"] == 1.0
    assert again["cost_usd"] == 0 and again["saved_usd"] > 0
    assert "upstream_ms" not in again
    assert again["request_id"] == hit.headers["x-request-id"]
    assert looked["route"] == "/v1/cache/lookup" and looked["tenant"] == "globex"
    assert looked["cache"] == "MISS" and looked["model"] == GPT
    assert refused["status"] == 401 and "tenant" not in refused
    assert refused["error"] == "missing_api_key"
    assert summed["route"] == "/v1/usage" and summed["status"] == 200
    # Rejections carry their status in the log as in the rows.
    assert any(r.get("cache") == "REJECTED-RATE" and r["status"] == 429 for r in requests)
    # The start-up line says what loaded.
    (start,) = [r for r in records if r["message"].startswith("semcache listening on")]
    assert start["store"] == "sqlite" and start["api_keys"] == 4 and start["admin_keys"] == 1
    assert start["levers"].endswith("levers.toml")
    assert set(start["upstreams"]) == {"openai", "anthropic"}
