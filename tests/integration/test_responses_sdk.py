"""The Responses API through the real app with the openai SDK: create, stream, parse, a function-call
round trip, ``previous_response_id`` across turns, retrieve, delete and input items."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from tests.fakes import ollama as o

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]


async def test_create_returns_the_answer_as_output_text(fake_ollama, gateway):
    """``responses.create``: Ollama's answer is the SDK's ``output_text``; usage counts Ollama's tokens."""
    fake_ollama.fake.script("/api/chat", o.ok("Hello there"))
    async with gateway.client() as client:
        response = await client.responses.create(model="llama3.2", input="Say hello", instructions="Be brief.")
    assert response.output_text == "Hello there"
    assert response.id.startswith("resp_") and response.status == "completed" and response.model == "llama3.2"
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (7, 2, 9)
    sent = fake_ollama.fake.bodies("/api/chat")[0]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    assert sent["stream"] is False and sent["model"] == "llama3.2"


async def test_stream_assembles_text_and_gives_the_final_response(fake_ollama, gateway):
    """``responses.stream()``: text deltas in order, then the final response with the whole text."""
    fake_ollama.fake.script("/api/chat", o.ok("one two three"))
    async with gateway.client() as client:
        async with client.responses.stream(model="llama3.2", input="Count") as stream:
            deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
            final = await stream.get_final_response()
    assert deltas == ["one ", "two ", "three"]
    assert final.output_text == "one two three" and final.status == "completed"
    assert final.usage.output_tokens == 3
    assert fake_ollama.fake.bodies("/api/chat")[0]["stream"] is True


async def test_stream_events_have_increasing_sequence_numbers(fake_ollama, gateway):
    """The raw event sequence: created, in_progress, item and part events, completed; numbers count up."""
    fake_ollama.fake.script("/api/chat", o.ok("Hi you"))
    async with gateway.client() as client:
        stream = await client.responses.create(model="llama3.2", input="Hi", stream=True)
        events = [event async for event in stream]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]


class City(BaseModel):
    name: str
    population: int


@pytest.mark.parametrize("stream", [False, True])
async def test_parse_with_a_pydantic_model(fake_ollama, gateway, stream):
    """``responses.parse(text_format=City)``: Ollama is constrained to the schema; the SDK parses the JSON."""
    fake_ollama.fake.script("/api/chat", o.ok('{"name": "Paris", "population": 2100000}'))
    async with gateway.client() as client:
        if stream:
            async with client.responses.stream(model="llama3.2", input="Biggest French city?",
                                               text_format=City) as events:
                async for _ in events:
                    pass
                response = await events.get_final_response()
        else:
            response = await client.responses.parse(model="llama3.2", input="Biggest French city?", text_format=City)
    assert response.output_parsed == City(name="Paris", population=2100000)
    sent = fake_ollama.fake.bodies("/api/chat")[0]
    assert sent["format"]["properties"] == {"name": {"title": "Name", "type": "string"},
                                            "population": {"title": "Population", "type": "integer"}}


@pytest.mark.parametrize("stream", [False, True])
async def test_function_call_round_trip(fake_ollama, gateway, stream):
    """function_call out, function_call_output back with the call id, then the final answer."""
    fake_ollama.fake.script("/api/chat", o.ok("", tool_calls=CALL), o.ok("It is sunny in Paris."))
    async with gateway.client() as client:
        if stream:
            async with client.responses.stream(model="llama3.2", input="Weather in Paris?",
                                               tools=[WEATHER]) as events:
                async for _ in events:
                    pass
                first = await events.get_final_response()
        else:
            first = await client.responses.create(model="llama3.2", input="Weather in Paris?", tools=[WEATHER])
        (call,) = [item for item in first.output if item.type == "function_call"]
        assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
        final = await client.responses.create(
            model="llama3.2", tools=[WEATHER],
            input=[{"role": "user", "content": "Weather in Paris?"},
                   {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                   {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24C"}])
    assert final.output_text == "It is sunny in Paris."
    sent = fake_ollama.fake.bodies("/api/chat")[1]
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": call.call_id, "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny, 24C", "tool_call_id": call.call_id, "tool_name": "get_weather"}]
    assert sent["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("stream", [False, True])
async def test_previous_response_id_continues_the_conversation(fake_ollama, gateway, stream):
    """The second turn sends only its new input; Ollama sees the whole conversation (first turn's
    instructions not carried over, as at OpenAI)."""
    fake_ollama.fake.script("/api/chat", o.ok("Nice to meet you, Ada."), o.ok("Your name is Ada."),
                            o.ok("Still Ada."))
    async with gateway.client() as client:
        first = await client.responses.create(model="llama3.2", input="My name is Ada.", instructions="Be kind.")
        if stream:
            async with client.responses.stream(model="llama3.2", input="What is my name?",
                                               previous_response_id=first.id) as events:
                second = await events.get_final_response()
        else:
            second = await client.responses.create(model="llama3.2", input="What is my name?",
                                                   previous_response_id=first.id)
        third = await client.responses.create(model="llama3.2", input="And now?", previous_response_id=second.id)
    assert second.previous_response_id == first.id and third.output_text == "Still Ada."
    bodies = fake_ollama.fake.bodies("/api/chat")
    assert bodies[1]["messages"] == [
        {"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"}]
    assert [m["content"] for m in bodies[2]["messages"]] == [
        "My name is Ada.", "Nice to meet you, Ada.", "What is my name?", "Your name is Ada.", "And now?"]


async def test_retrieve_delete_and_input_items(fake_ollama, gateway):
    """A stored response is retrieved as it was, lists its input items, and is gone once deleted."""
    fake_ollama.fake.script("/api/chat", o.ok("Hello"), o.ok("Again"))
    async with gateway.client() as client:
        first = await client.responses.create(model="llama3.2", input="Hi")
        second = await client.responses.create(model="llama3.2", input=[{"role": "user", "content": "Once more"}],
                                               previous_response_id=first.id)
        got = await client.responses.retrieve(second.id)
        assert got.model_dump() == second.model_dump()
        page = await client.responses.input_items.list(second.id, order="asc")
        assert [item.type for item in page.data] == ["message", "message", "message"]
        assert [item.content[0].text for item in page.data] == ["Hi", "Hello", "Once more"]
        assert page.data[1].id == first.output[0].id and page.has_more is False
        assert page.first_id == page.data[0].id and page.last_id == page.data[-1].id
        newest = await client.responses.input_items.list(second.id, limit=1)
        assert [item.content[0].text for item in newest.data] == ["Once more"] and newest.has_more is True
        rest = [item.content[0].text async for item in client.responses.input_items.list(second.id, limit=1)]
        assert rest == ["Once more", "Hello", "Hi"]  # the SDK pages on with after=last_id
        await client.responses.delete(second.id)
        with pytest.raises(openai.NotFoundError) as info:
            await client.responses.retrieve(second.id)
        assert info.value.body == {"message": f"Response with id '{second.id}' not found.",
                                   "type": "invalid_request_error", "param": "response_id", "code": "not_found"}
        with pytest.raises(openai.NotFoundError):
            await client.responses.delete(second.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.input_items.list(second.id)
        assert (await client.responses.retrieve(first.id)).output_text == "Hello"


async def test_unknown_previous_response_id_is_a_404(fake_ollama, gateway):
    """An id the gateway never stored: 404 in OpenAI's shape naming previous_response_id; Ollama not called."""
    async with gateway.client() as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.responses.create(model="llama3.2", input="Hi", previous_response_id="resp_nope")
    assert info.value.body == {"message": "Previous response with id 'resp_nope' not found.",
                               "type": "invalid_request_error", "param": "previous_response_id",
                               "code": "previous_response_not_found"}
    assert fake_ollama.fake.bodies("/api/chat") == []


async def test_store_false_keeps_nothing(fake_ollama, gateway):
    """``store: false``: the response cannot be retrieved nor continued."""
    async with gateway.client() as client:
        response = await client.responses.create(model="llama3.2", input="Hi", store=False)
        assert response.store is False
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="llama3.2", input="Again", previous_response_id=response.id)


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_effort_thinks_and_returns_a_reasoning_item(fake_ollama, gateway, stream):
    """``reasoning.effort: xhigh`` is Ollama's ``think: "max"``; the thinking is a reasoning item before the message."""
    fake_ollama.fake.script("/api/chat", o.ok("42", thinking="Six times seven."))
    async with gateway.client() as client:
        if stream:
            async with client.responses.stream(model="llama3.2", input="6*7?", reasoning={"effort": "xhigh"}) as events:
                response = await events.get_final_response()
        else:
            response = await client.responses.create(model="llama3.2", input="6*7?", reasoning={"effort": "xhigh"})
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "Six times seven."
    assert message.type == "message" and response.output_text == "42"
    assert fake_ollama.fake.bodies("/api/chat")[0]["think"] == "max"


@pytest.mark.parametrize("stream", [False, True])
async def test_forced_tool_choice_returns_that_call(fake_ollama, gateway, stream):
    """A named function in ``tool_choice``: Ollama is constrained to its parameters; the answer is its call."""
    fake_ollama.fake.script("/api/chat", o.ok('{"city": "Paris"}'))
    choice = {"type": "function", "name": "get_weather"}
    async with gateway.client() as client:
        if stream:
            async with client.responses.stream(model="llama3.2", input="Paris?", tools=[WEATHER],
                                               tool_choice=choice) as events:
                response = await events.get_final_response()
        else:
            response = await client.responses.create(model="llama3.2", input="Paris?", tools=[WEATHER],
                                                     tool_choice=choice)
    (call,) = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    sent = fake_ollama.fake.bodies("/api/chat")[0]
    assert sent["format"] == WEATHER["parameters"] and "tools" not in sent


async def test_length_cut_answer_is_incomplete(fake_ollama, gateway):
    """``max_output_tokens`` reached (Ollama's done_reason length): status incomplete with its reason."""
    fake_ollama.fake.script("/api/chat", o.ok("cut", done_reason="length"))
    async with gateway.client() as client:
        response = await client.responses.create(model="llama3.2", input="Go on", max_output_tokens=1)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert fake_ollama.fake.bodies("/api/chat")[0]["options"] == {"num_predict": 1}
