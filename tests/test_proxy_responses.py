"""The Responses API through the proxy: the official openai SDK as the client, the simulator
as upstream (``client.responses.create`` and ``client.responses.stream``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from proxy_fixtures import KEY, semcache_in_front_of
from servers import ServerProcess
from simulator_helpers import RunningSimulator

MODEL = "gpt-4o-mini"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather forecast for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def server(
    sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with semcache_in_front_of(sim, tmp_path_factory.mktemp("proxy-responses")) as running:
        yield running


class Client:
    """An SDK client in a namespace of its own, keeping the headers of its last response."""

    def __init__(self, server: ServerProcess) -> None:
        self.headers: httpx.Headers = httpx.Headers()
        self.http = httpx.Client(event_hooks={"response": [self._keep]}, timeout=30)
        self.sdk = openai.OpenAI(
            base_url=server.url + "/v1",
            api_key=KEY,
            max_retries=0,
            http_client=self.http,
            default_headers={"X-Semcache-Namespace": uuid.uuid4().hex},
        )

    def _keep(self, response: httpx.Response) -> None:
        self.headers = response.headers

    @property
    def status(self) -> str:
        return str(self.headers.get("x-semcache-status"))

    def create(self, **kwargs: Any) -> Any:
        kwargs.setdefault("model", MODEL)
        return self.sdk.responses.create(**kwargs)

    def stream(self, **kwargs: Any) -> tuple[list[Any], Any]:
        """(the events, the final response) of ``client.responses.stream``."""
        kwargs.setdefault("model", MODEL)
        with self.sdk.responses.stream(**kwargs) as stream:
            events = list(stream)
            return events, stream.get_final_response()


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[Client]:
    made = Client(server)
    yield made
    made.http.close()


def unique(text: str) -> str:
    return f"{text} (case {uuid.uuid4().hex[:6]})"


def test_miss_then_exact_then_semantic_hit(
    client: Client, sim: RunningSimulator, server: ServerProcess
) -> None:
    before = sim.stats()["requests"]
    raw = client.sdk.responses.with_raw_response.create(
        model=MODEL, input="How do I rotate my API keys safely?"
    )
    first = raw.parse()
    assert raw.headers["x-semcache-status"] == "MISS"
    assert raw.request_id == sim.stats()["last_request_id"]
    raw = client.sdk.responses.with_raw_response.create(
        model=MODEL, input="How do I rotate my API keys safely?"
    )
    exact = raw.parse()
    assert raw.headers["x-semcache-status"] == "HIT-EXACT"
    # A rewording, as a list of input items with input_text parts.
    reworded = [
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "How can I safely rotate my API keys?"}],
        }
    ]
    raw = client.sdk.responses.with_raw_response.create(model=MODEL, input=reworded)
    para = raw.parse()
    assert raw.headers["x-semcache-status"] == "HIT-SEMANTIC"
    assert 0.9 <= float(raw.headers["x-semcache-similarity"]) < 1.0
    assert sim.stats()["requests"] == before + 1
    assert first.output_text
    for hit in (exact, para):
        assert hit.object == "response" and hit.status == "completed"
        assert hit.output_text == first.output_text
        assert hit.id != first.id and hit.id.startswith("resp_")
        assert hit.created_at >= first.created_at
        assert hit.model == MODEL
        assert hit.usage == first.usage
    assert exact.id != para.id


def test_chat_completions_and_responses_keep_apart(client: Client, server: ServerProcess) -> None:
    question = unique("What is a write-ahead log?")
    client.create(input=question)
    chat = openai.OpenAI(
        base_url=server.url + "/v1",
        api_key=KEY,
        max_retries=0,
        default_headers={
            "X-Semcache-Namespace": client.sdk.default_headers["X-Semcache-Namespace"]
        },
    )
    raw = chat.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": question}]
    )
    assert raw.headers["x-semcache-status"] == "MISS"
    raw.parse()


def test_streamed_miss_is_relayed_then_hits_with_the_same_text(
    client: Client, sim: RunningSimulator
) -> None:
    question = unique("Summarise the benefits of WAL mode")
    before = sim.stats()["requests"]
    events, missed = client.stream(input=question)
    assert client.status == "MISS"
    assert client.headers["content-type"].startswith("text/event-stream")
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == missed.output_text and streamed

    events, hit = client.stream(input=question)
    assert client.status == "HIT-EXACT"
    kinds = [e.type for e in events]
    for kind in (
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ):
        assert kind in kinds
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 3
    assert "".join(deltas) == missed.output_text == hit.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert hit.id != missed.id and hit.usage == missed.usage

    plain = client.create(input=question)
    assert client.status == "HIT-EXACT" and plain.output_text == missed.output_text
    assert sim.stats()["requests"] == before + 1


def test_a_function_call_round_trip_misses_then_hits(client: Client, sim: RunningSimulator) -> None:
    question = unique("What is the weather in Paris? Use get_weather.")
    before = sim.stats()["requests"]
    first = client.create(input=question, tools=[WEATHER])
    assert client.status == "MISS"
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    again = client.create(input=question, tools=[WEATHER])
    assert client.status == "HIT-EXACT"
    assert again.output[0].model_dump() == call.model_dump()

    events, streamed = client.stream(input=question, tools=[WEATHER])
    assert client.status == "HIT-EXACT"
    assert any(e.type == "response.function_call_arguments.delta" for e in events)
    assert streamed.output[0].call_id == call.call_id
    # A strict function tool: the SDK parses the arguments it was streamed.
    assert streamed.output[0].parsed_arguments == json.loads(call.arguments)
    assert set(json.loads(call.arguments)) == {"city", "days"}

    turn = [
        {"role": "user", "content": question},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'},
    ]
    answer = client.create(input=turn, tools=[WEATHER])
    assert client.status == "MISS"
    assert answer.output[0].type == "message" and answer.output_text
    repeat = client.create(input=turn, tools=[WEATHER])
    assert client.status == "HIT-EXACT"
    assert repeat.output_text == answer.output_text
    assert sim.stats()["requests"] == before + 2


def test_state_dependent_requests_bypass_with_a_reason(
    client: Client, sim: RunningSimulator
) -> None:
    first = client.create(input=unique("Name a prime number"))
    before = sim.stats()["requests"]
    for _ in range(2):
        follow = client.create(input="And another one?", previous_response_id=first.id)
        assert client.status == "BYPASS"
        assert "previous_response_id" in client.headers["x-semcache-bypass-reason"]
        assert client.headers["x-semcache-miss-reason"] == "server-state"
        assert follow.previous_response_id == first.id
    client.create(input=unique("Say hello"), background=True)
    assert client.status == "BYPASS" and "background" in client.headers["x-semcache-bypass-reason"]
    assert sim.stats()["requests"] == before + 3


def test_continuing_from_a_hit_reaches_the_upstream_response_it_copies(
    client: Client, sim: RunningSimulator
) -> None:
    question = unique("Name a colour of the rainbow")
    original = client.create(input=question)
    hit = client.create(input=question)
    assert client.status == "HIT-EXACT" and hit.id != original.id
    # The upstream never saw the hit's id; semcache sends the original's in its place.
    follow = client.create(input="And the next colour?", previous_response_id=hit.id)
    assert client.status == "BYPASS"
    assert follow.previous_response_id == original.id
    sent = httpx.get(sim.base_url + "/sim/requests").json()[-1]["body"]
    assert sent["previous_response_id"] == original.id


def test_bad_requests_are_400s_that_name_the_field(client: Client, sim: RunningSimulator) -> None:
    before = sim.stats()["requests"]
    with pytest.raises(openai.BadRequestError, match="input must be a string"):
        client.create(input=42)
    with pytest.raises(openai.BadRequestError, match=r"input\.0\.role"):
        client.create(input=[{"role": "robot", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="input is required"):
        client.sdk.post("/responses", body={"model": MODEL}, cast_to=httpx.Response)
    with pytest.raises(openai.BadRequestError, match="max_output_tokens"):
        client.create(input="hi", max_output_tokens=0)
    with pytest.raises(openai.BadRequestError, match=r"tools\.0\.name"):
        client.create(input="hi", tools=[{"type": "function"}])
    with pytest.raises(openai.BadRequestError, match="model must be a model id"):
        client.create(input="hi", model="gpt 4o\u00e9")
    assert sim.stats()["requests"] == before
