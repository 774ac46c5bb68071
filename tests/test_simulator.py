"""The upstream simulator, driven over real HTTP by the official openai and anthropic SDKs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from simulator_helpers import CLAUDE, GPT, RunningSimulator, serve_simulator, user

from semcache.simulator import SimulatorConfig, main
from semcache.simulator.text import SimTokenizer

# --- OpenAI ---------------------------------------------------------------------------------


def test_openai_completion_shape_and_honest_usage(
    oai: openai.OpenAI, sim_counter: SimTokenizer
) -> None:
    reply = oai.chat.completions.create(model=GPT, messages=user("What is a semantic cache?"))
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.model == GPT
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    text = choice.message.content or ""
    assert text.endswith(".")
    usage = reply.usage
    assert usage is not None
    assert usage.completion_tokens == sim_counter.count(text)
    assert usage.prompt_tokens > sim_counter.count("What is a semantic cache?")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0


def test_openai_stream_matches_plain_answer(oai: openai.OpenAI) -> None:
    messages = user("Explain streaming.")
    plain = oai.chat.completions.create(model=GPT, messages=messages)
    stream = oai.chat.completions.create(
        model=GPT, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    roles, pieces, finishes, usages = [], [], [], []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert roles == ["assistant"]
    assert finishes == ["stop"]
    assert "".join(pieces) == plain.choices[0].message.content
    assert len(usages) == 1
    assert usages[0].completion_tokens == len(pieces)
    assert plain.usage is not None
    assert usages[0].prompt_tokens == plain.usage.prompt_tokens


def test_openai_raw_stream_ends_with_done(sim: RunningSimulator) -> None:
    body = {"model": GPT, "messages": user("raw"), "stream": True}
    with httpx.stream("POST", sim.openai_base_url + "/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "stop"


def test_openai_answers_are_deterministic_and_bounded(oai: openai.OpenAI) -> None:
    def ask(question: str, **kwargs: Any) -> Any:
        return oai.chat.completions.create(model=GPT, messages=user(question), **kwargs)

    first, again, other = ask("Question A"), ask("Question A"), ask("Question B")
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content

    short = ask("Question A", max_tokens=5)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 5
    assert (first.choices[0].message.content or "").startswith(
        short.choices[0].message.content or ""
    )

    sized = ask("Question A", extra_headers={"X-Sim-Answer-Tokens": "7"})
    assert sized.choices[0].finish_reason == "stop"
    assert sized.usage is not None and sized.usage.completion_tokens == 7

    capped = ask("Question A", max_completion_tokens=3, extra_headers={"X-Sim-Answer-Tokens": "50"})
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage is not None and capped.usage.completion_tokens == 3

    several = ask("Question A", n=3)
    texts = [c.message.content for c in several.choices]
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert len(set(texts)) == 3
    assert several.usage is not None
    assert several.usage.completion_tokens == sum(
        len(SimTokenizer().encode(t or "")) for t in texts
    )


def test_openai_validation_error_shape(sim: RunningSimulator, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=GPT, messages=[])
    assert info.value.status_code == 400
    response = httpx.post(sim.openai_base_url + "/chat/completions", content=b"{not json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    bad_header = httpx.post(
        sim.openai_base_url + "/chat/completions",
        json={"model": GPT, "messages": user("x")},
        headers={"X-Sim-Fault": "explode"},
    )
    assert bad_header.status_code == 400
    assert "x-sim-fault" in bad_header.json()["error"]["message"]
    bad_delay = httpx.post(
        sim.base_url + "/v1/messages",
        json={"model": CLAUDE, "max_tokens": 5, "messages": user("x")},
        headers={"X-Sim-TTFT-Ms": "-5"},
    )
    assert bad_delay.status_code == 400
    assert bad_delay.json()["error"]["type"] == "invalid_request_error"


def test_openai_models_list(oai: openai.OpenAI) -> None:
    ids = [model.id for model in oai.models.list()]
    assert ids == list(SimulatorConfig().models)


# --- Anthropic ------------------------------------------------------------------------------


def test_anthropic_message_shape_and_honest_usage(
    claude: anthropic.Anthropic, sim_counter: SimTokenizer
) -> None:
    message = claude.messages.create(
        model=CLAUDE,
        max_tokens=200,
        system=[{"type": "text", "text": "You are terse."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Define caching."}]}],
        tools=[{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}],
    )
    assert message.id.startswith("msg_")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == CLAUDE
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    block = message.content[0]
    assert block.type == "text"
    assert message.usage.output_tokens == sim_counter.count(block.text)
    assert message.usage.input_tokens > sim_counter.count("You are terse.Define caching.")
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0

    cut = claude.messages.create(model=CLAUDE, max_tokens=4, messages=user("Define caching."))
    assert cut.stop_reason == "max_tokens"
    assert cut.usage.output_tokens == 4


def test_anthropic_stream_matches_plain_answer(claude: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {"model": CLAUDE, "max_tokens": 100, "messages": user("Stream it.")}
    plain = claude.messages.create(**kwargs)
    deltas = []
    with claude.messages.stream(**kwargs) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                deltas.append(event.delta.text)
        final = stream.get_final_message()
    assert final.content[0].type == "text" and plain.content[0].type == "text"
    assert "".join(deltas) == final.content[0].text == plain.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(deltas)
    assert final.usage.input_tokens == plain.usage.input_tokens


def test_anthropic_raw_event_sequence(sim: RunningSimulator) -> None:
    body = {"model": CLAUDE, "max_tokens": 50, "messages": user("events"), "stream": True}
    with httpx.stream("POST", sim.base_url + "/v1/messages", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    names = [line[len("event: ") :] for line in lines if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    data = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in data] == names
    assert data[-2]["usage"]["output_tokens"] == len(names) - 6


def test_anthropic_requires_max_tokens(sim: RunningSimulator) -> None:
    response = httpx.post(
        sim.base_url + "/v1/messages", json={"model": CLAUDE, "messages": user("hi")}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


# --- Introspection, auth, CLI ---------------------------------------------------------------


def test_stats_requests_and_reset(
    sim: RunningSimulator, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    oai.chat.completions.create(model=GPT, messages=user("s1"))
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(
            model=GPT, messages=user("s2"), extra_headers={"X-Sim-Fault": "500"}
        )
    claude.messages.create(model=CLAUDE, max_tokens=5, messages=user("s3"))
    oai.models.list()  # not a completion: not counted
    stats = sim.stats()
    assert stats["requests"] == 3
    assert stats["by_endpoint"] == {"/v1/chat/completions": 2, "/v1/messages": 1}
    assert stats["by_model"] == {GPT: 2, CLAUDE: 1}
    assert stats["faults_injected"] == 1

    recorded = httpx.get(sim.base_url + "/sim/requests").json()
    assert [r["path"] for r in recorded] == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/messages",
    ]
    assert recorded[1]["headers"]["x-sim-fault"] == "500"
    assert recorded[2]["body"]["messages"] == user("s3")
    assert "test" not in recorded[0]["headers"]["authorization"]
    assert recorded[0]["headers"]["authorization"].endswith("1234")

    sim.schedule_faults(["500"])
    assert httpx.post(sim.base_url + "/sim/reset").json()["requests"] == 0
    assert httpx.get(sim.base_url + "/sim/requests").json() == []
    assert oai.chat.completions.create(model=GPT, messages=user("after reset")).choices
    assert sim.stats()["faults_injected"] == 0


def test_required_api_key() -> None:
    with serve_simulator(SimulatorConfig(required_api_key="sk-right")) as running:
        wrong_oai = openai.OpenAI(base_url=running.openai_base_url, api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong_oai.chat.completions.create(model=GPT, messages=user("x"))
        wrong_claude = anthropic.Anthropic(base_url=running.base_url, api_key="nope", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as info:
            wrong_claude.messages.create(model=CLAUDE, max_tokens=5, messages=user("x"))
        assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        right = openai.OpenAI(base_url=running.openai_base_url, api_key="sk-right", max_retries=0)
        assert right.chat.completions.create(model=GPT, messages=user("x")).choices
        right_claude = anthropic.Anthropic(base_url=running.base_url, api_key="sk-right")
        assert right_claude.messages.create(model=CLAUDE, max_tokens=5, messages=user("x")).content
        assert running.stats()["requests"] == 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(port) in err and "Traceback" not in err


def test_module_entry_point_serves() -> None:
    port = _free_port()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "semcache.simulator", "--port", str(port), "--ttft-ms", "1"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                stats = httpx.get(f"http://127.0.0.1:{port}/sim/stats").json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert stats["requests"] == 0
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        assert client.chat.completions.create(model=GPT, messages=user("cli")).choices
    finally:
        proc.terminate()
        proc.wait(timeout=10)
