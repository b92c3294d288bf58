"""Forced tool choice: the Ollama format, reading constrained content back as a call, and chat's use of it."""

from __future__ import annotations

import json

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy.errors import InvalidRequestError
from proxy.translate.chat_answer import ollama_chat_to_openai
from proxy.translate.chat_request import chat_request_to_ollama
from proxy.translate.chat_tools import forced_tool_of
from proxy.translate.stream import ChatStream
from proxy.translate.tools import ForcedCall, forced_tool, with_instruction

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CHAT_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "noop"}},
]
RESPONSES_TOOLS = [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": True}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER}]


@pytest.mark.parametrize("tools", [CHAT_TOOLS, RESPONSES_TOOLS, ANTHROPIC_TOOLS],
                         ids=["chat", "responses", "anthropic"])
def test_one_forced_tool_constrains_to_its_parameter_schema(tools):
    """A named tool's format is its parameter schema, in every tool-list shape."""
    forced = forced_tool(tools, "get_weather")
    assert forced.format == WEATHER
    assert forced.names == ("get_weather",)
    assert "get_weather" in forced.instruction and '"city"' in forced.instruction


def test_a_tool_without_parameters_gets_an_empty_object_schema():
    """No parameters means an empty object, so the model still answers with a JSON object."""
    assert forced_tool(CHAT_TOOLS, "noop").format == {"type": "object", "properties": {}}


def test_several_tools_give_an_any_of_over_name_and_arguments():
    """Any-of-several is a schema over {name, arguments} objects, name first."""
    fmt = forced_tool(CHAT_TOOLS).format
    first, second = fmt["anyOf"]
    assert list(first["properties"]) == ["name", "arguments"]
    assert first["properties"]["name"] == {"enum": ["get_weather"]}
    assert first["properties"]["arguments"] == WEATHER
    assert second["properties"]["arguments"] == {"type": "object", "properties": {}}
    assert first["required"] == ["name", "arguments"] and first["additionalProperties"] is False


def test_required_with_one_tool_is_that_tool():
    """'Any tool' with a single tool forces exactly that tool."""
    forced = forced_tool(RESPONSES_TOOLS)
    assert forced.format == WEATHER
    assert forced.call_of('{"city":"Paris"}') == ForcedCall(name="get_weather", arguments='{"city":"Paris"}',
                                                            complete=True)


@pytest.mark.parametrize(("tools", "name"), [([], None), (CHAT_TOOLS, "missing"), ([{"type": "function"}], None)])
def test_unknown_or_missing_tools_are_a_400_naming_the_param(tools, name):
    """A name not among the tools, or no usable tool, is a 400 naming the caller's param."""
    with pytest.raises(InvalidRequestError) as info:
        forced_tool(tools, name, param="tool_choice.name")
    assert info.value.param == "tool_choice.name"


@pytest.mark.parametrize(("content", "call"), [
    (' {"city": "Paris"}\n', ForcedCall(name="get_weather", arguments='{"city": "Paris"}', complete=True)),
    ('{"city": "Par', ForcedCall(name="get_weather", arguments='{"city": "Par', complete=False)),
    ("", ForcedCall(name="get_weather", arguments="", complete=False)),
])
def test_single_tool_content_is_the_arguments(content, call):
    """With one tool the constrained content is the arguments, trimmed; cut-short JSON is incomplete."""
    assert forced_tool(CHAT_TOOLS, "get_weather").call_of(content) == call


@pytest.mark.parametrize(("content", "call"), [
    ('{"name": "get_weather", "arguments": {"city": "P}a\\"ris"}}',
     ForcedCall(name="get_weather", arguments='{"city": "P}a\\"ris"}', complete=True)),
    ('{"name":"noop","arguments":{}}', ForcedCall(name="noop", arguments="{}", complete=True)),
    ('{"arguments": {"city": "x"}, "name": "get_weather"}',
     ForcedCall(name="get_weather", arguments='{"city":"x"}', complete=True)),
    ('{"name": "get_weather", "arguments": {"ci', ForcedCall(name="get_weather", arguments='{"ci', complete=False)),
    ('{"na', ForcedCall(name="get_weather", arguments='{"na', complete=False)),
])
def test_several_tools_content_names_the_call(content, call):
    """With several tools the content's name picks the call and its arguments value is the arguments."""
    assert forced_tool(CHAT_TOOLS).call_of(content) == call


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
@pytest.mark.parametrize("content", [
    '  {"name": "get_weather", "arguments": { "city" : "Paris" } }  ',
    '{"name":"noop","arguments":{}}',
])
def test_streamed_deltas_add_up_to_the_whole_answer(content, size):
    """However the content is split, the deltas add up to the call ``call_of`` gives, name first."""
    forced = forced_tool(CHAT_TOOLS)
    reader = forced.reader()
    sent = []
    for i in range(0, len(content), size):
        delta = reader.feed(content[i:i + size])
        if delta:
            assert reader.name is not None
            sent.append(delta)
    call = reader.finish()
    assert call == forced.call_of(content)
    assert "".join(sent) == call.arguments and call.complete
    json.loads(call.arguments)


def test_single_tool_stream_sends_each_delta_at_once():
    """With one tool nothing is buffered but surrounding whitespace."""
    reader = forced_tool(CHAT_TOOLS, "get_weather").reader()
    assert reader.name == "get_weather"
    assert [reader.feed(t) for t in ["\n", '{"city"', ": ", '"P"', "}", " "]] == ["", '{"city"', ":", ' "P"', "}", ""]
    assert reader.finish().arguments == '{"city": "P"}'


def test_instruction_joins_a_leading_system_message_or_comes_first():
    """The instruction extends the first system message, or becomes one in front."""
    assert with_instruction([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "u"}], "I") == [
        {"role": "system", "content": "Be terse.\n\nI"}, {"role": "user", "content": "u"}]
    assert with_instruction([{"role": "user", "content": "u"}], "I") == [
        {"role": "system", "content": "I"}, {"role": "user", "content": "u"}]


# chat completions: tool_choice "required" or a named function is honoured through the format

USER = [{"role": "user", "content": "weather?"}]
PIN = {"completion_id": "chatcmpl-1", "created": 1700000000, "model": "m"}


@pytest.mark.parametrize(("choice", "forced"), [
    (None, None), ("auto", None), ("none", None),
    ("required", ("get_weather", "noop")),
    ({"type": "function", "function": {"name": "noop"}}, ("noop",)),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}]}}, ("get_weather",)),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}]}}, None),
])
def test_forced_tool_of_reads_the_chat_tool_choice(choice, forced):
    """Only required, a named function and allowed_tools in required mode force a call."""
    body = {"messages": USER, "tools": CHAT_TOOLS, "tool_choice": choice}
    found = forced_tool_of(body)
    assert (found.names if found else None) == forced
    native = chat_request_to_ollama(body, model="m")
    if forced:
        assert "tools" not in native and native["format"] == found.format
        assert native["messages"][0]["role"] == "system"
    elif choice == "none":
        assert "tools" not in native and "format" not in native
    else:
        assert native["tools"]


def test_allowed_tools_in_auto_mode_sends_only_those_tools():
    """allowed_tools (auto) narrows the tools Ollama sees."""
    native = chat_request_to_ollama({"messages": USER, "tools": CHAT_TOOLS, "tool_choice": {
        "type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
            {"type": "function", "function": {"name": "noop"}}]}}}, model="m")
    assert [t["function"]["name"] for t in native["tools"]] == ["noop"]


@pytest.mark.parametrize(("effort", "think"), [
    ("none", False), ("minimal", "low"), ("low", "low"), ("medium", "medium"), ("high", "high"),
    ("xhigh", "max"), ("max", "max"),
])
def test_chat_reasoning_effort_maps_to_ollama_think(effort, think):
    """Efforts map to Ollama's think levels; xhigh and max are Ollama's max."""
    assert chat_request_to_ollama({"messages": USER, "reasoning_effort": effort}, model="m")["think"] == think
    assert chat_request_to_ollama({"messages": USER, "reasoning": {"effort": effort}}, model="m")["think"] == think


def test_forced_chat_answer_is_a_tool_call_the_sdk_reads():
    """A forced non-streamed answer validates as a ChatCompletion whose one tool call holds the JSON."""
    forced = forced_tool_of({"tools": CHAT_TOOLS, "tool_choice": "required"})
    out = ollama_chat_to_openai({"message": {"role": "assistant", "content": '{"name":"get_weather","arguments":'
                                             '{"city":"Rome"}}'}, "done": True, "done_reason": "stop"},
                                **PIN, forced=forced)
    completion = ChatCompletion.model_validate(out)
    call = completion.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Rome"})
    assert completion.choices[0].finish_reason == "tool_calls" and completion.choices[0].message.content is None


def test_forced_chat_stream_accumulates_to_one_tool_call_in_the_sdk():
    """Streamed, the SDK's accumulator rebuilds the same call from the tool_calls deltas."""
    forced = forced_tool_of({"tools": CHAT_TOOLS, "tool_choice": {"type": "function",
                                                                   "function": {"name": "get_weather"}}})
    stream = ChatStream(**PIN, forced=forced)
    lines = [{"message": {"role": "assistant", "content": t}, "done": False} for t in ['{"ci', 'ty": ', '"Oslo"}']]
    body = b"".join(stream.feed(line) for line in [*lines, {"message": {"role": "assistant", "content": ""},
                                                           "done": True, "done_reason": "stop"}])
    state = ChatCompletionStreamState()
    for frame in body.decode().split("\n\n"):
        if frame.startswith("data: {"):
            state.handle_chunk(ChatCompletionChunk.model_validate_json(frame[6:]))
    call = state.get_final_completion().choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "get_weather", '{"city": "Oslo"}')
