"""Forced tool choice on chat completions, through the real app with the openai SDK: Ollama is
constrained to the tool's schema (``format``) and its JSON answer comes back as that tool's call."""

from __future__ import annotations

import json

from tests.fakes import ollama as o

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
HI = [{"role": "user", "content": "Weather in Paris?"}]


async def test_required_tool_choice_returns_the_tool_call(fake_ollama, gateway):
    """``tool_choice="required"`` with one tool: Ollama gets the tool's schema as format; the SDK gets the call."""
    fake_ollama.fake.script("/api/chat", o.ok('{"city": "Paris"}'))
    async with gateway.client() as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=HI, tools=[WEATHER],
                                                      tool_choice="required")
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    sent = fake_ollama.fake.bodies("/api/chat")[0]
    assert sent["format"] == WEATHER["function"]["parameters"]


async def test_named_tool_choice_streams_the_call(fake_ollama, gateway):
    """A named function, streamed: the arguments arrive as tool-call deltas that assemble to the JSON."""
    fake_ollama.fake.script("/api/chat", o.ok('{"city": "Paris"}'))
    async with gateway.client() as client:
        stream = await client.chat.completions.create(
            model="llama3.2", messages=HI, tools=[WEATHER], stream=True,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        names, arguments, finish = [], "", None
        async for chunk in stream:
            delta = chunk.choices[0].delta if chunk.choices else None
            for call in (delta.tool_calls or []) if delta else []:
                if call.function and call.function.name:
                    names.append(call.function.name)
                arguments += (call.function.arguments or "") if call.function else ""
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
    assert names == ["get_weather"] and json.loads(arguments) == {"city": "Paris"} and finish == "tool_calls"
