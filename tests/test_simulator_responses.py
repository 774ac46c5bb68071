"""The simulator's Responses API endpoint, driven by the official openai SDK."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from simulator_helpers import GPT, RunningSimulator

from semcache.wire.sse import SSEParser

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "days", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_a_response_is_deterministic_with_honest_usage(
    oai: openai.OpenAI, sim_counter: Any
) -> None:
    first = oai.responses.create(model=GPT, input="Explain caching", instructions="Be brief.")
    again = oai.responses.create(model=GPT, input="Explain caching", instructions="Be brief.")
    other = oai.responses.create(model=GPT, input="Explain indexing", instructions="Be brief.")
    assert first.object == "response" and first.status == "completed"
    assert first.id.startswith("resp_") and first.id != again.id
    assert first.output_text == again.output_text != other.output_text
    assert first.usage is not None
    assert first.usage.output_tokens == sim_counter.count(first.output_text)
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens
    assert first.instructions == "Be brief."


def test_a_stream_matches_the_plain_response(oai: openai.OpenAI) -> None:
    plain = oai.responses.create(model=GPT, input="Describe a queue")
    with oai.responses.stream(model=GPT, input="Describe a queue") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == plain.output_text
    assert kinds.count("response.output_text.delta") == final.usage.output_tokens  # type: ignore[union-attr]


def test_max_output_tokens_cuts_the_answer_short(oai: openai.OpenAI) -> None:
    forty = {"X-Sim-Answer-Tokens": "40"}
    whole = oai.responses.create(model=GPT, input="Describe a heap", extra_headers=forty)
    cut = oai.responses.create(
        model=GPT, input="Describe a heap", max_output_tokens=16, extra_headers=forty
    )
    assert whole.status == "completed" and whole.usage is not None
    assert whole.usage.output_tokens == 40
    assert cut.status == "incomplete" and cut.usage is not None
    assert cut.usage.output_tokens == 16
    assert cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert whole.output_text.startswith(cut.output_text)


def test_a_function_is_called_when_asked_then_its_output_answered(oai: openai.OpenAI) -> None:
    asked = "What is the weather in Oslo? Use get_weather."
    plain = oai.responses.create(model=GPT, input="What is the weather in Oslo?", tools=[WEATHER])
    assert plain.output[0].type == "message"  # not asked for the tool
    call = oai.responses.create(model=GPT, input=asked, tools=[WEATHER]).output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    again = oai.responses.create(model=GPT, input=asked, tools=[WEATHER]).output[0]
    assert again.type == "function_call"
    assert (again.arguments, again.call_id) == (call.arguments, call.call_id)
    with oai.responses.stream(model=GPT, input=asked, tools=[WEATHER]) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        streamed = stream.get_final_response().output[0]
    assert "".join(deltas) == call.arguments
    assert streamed.type == "function_call"
    arguments = streamed.parsed_arguments
    assert isinstance(arguments["city"], str) and isinstance(arguments["days"], int)
    assert arguments["unit"] in ("celsius", "fahrenheit")
    required = oai.responses.create(model=GPT, input="Hi", tools=[WEATHER], tool_choice="required")
    assert required.output[0].type == "function_call"

    turn: Any = [
        {"role": "user", "content": asked},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "rain"},
    ]
    answer = oai.responses.create(model=GPT, input=turn, tools=[WEATHER])
    assert answer.output[0].type == "message" and answer.output_text


def test_previous_response_id_must_be_one_it_stored(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model=GPT, input="Name a planet")
    follow = oai.responses.create(model=GPT, input="Another?", previous_response_id=first.id)
    assert follow.previous_response_id == first.id
    alone = oai.responses.create(model=GPT, input="Another?")
    assert follow.usage is not None and alone.usage is not None
    assert follow.usage.input_tokens > alone.usage.input_tokens  # the earlier turn is billed
    with pytest.raises(openai.NotFoundError, match="not found"):
        oai.responses.create(model=GPT, input="Another?", previous_response_id="resp_nope")
    unstored = oai.responses.create(model=GPT, input="Name a moon", store=False)
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model=GPT, input="Another?", previous_response_id=unstored.id)


def test_responses_validation_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="input"):
        oai.responses.create(model=GPT, input=42)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="role"):
        oai.responses.create(model=GPT, input=[{"role": "robot", "content": "hi"}])  # type: ignore[list-item]


def test_a_dropped_stream_stops_before_completing(sim: RunningSimulator) -> None:
    sim.reset()
    parser = SSEParser()
    kinds: list[str] = []
    with (
        httpx.Client() as http,
        http.stream(
            "POST",
            sim.openai_base_url + "/responses",
            json={"model": GPT, "input": "Tell me a story", "stream": True},
            headers={"X-Sim-Fault": "drop"},
        ) as response,
    ):
        try:
            for chunk in response.iter_raw():
                kinds += [str(e.event) for e in parser.feed(chunk)]
        except httpx.HTTPError:
            pass
    assert "response.output_text.delta" in kinds
    assert "response.completed" not in kinds


def test_stats_count_every_post(sim: RunningSimulator, oai: openai.OpenAI) -> None:
    oai.responses.create(model=GPT, input="hi")
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model=GPT, input=[])
    stats = sim.stats()
    assert stats["by_endpoint"] == {"/v1/responses": 2}
    assert stats["requests"] == 2
