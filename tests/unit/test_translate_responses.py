"""The Responses API translators: field mapping and refusal tables, and the SDK's own models over every output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.errors import InvalidRequestError, UpstreamStreamError
from proxy.translate.responses_answer import conversation_items, ollama_chat_to_response
from proxy.translate.responses_request import responses_request_to_ollama
from proxy.translate.responses_stream import ResponsesStream
from tests.unit.test_translate_golden import counting_ids, run_case

GOLDEN = Path(__file__).parent.parent / "fixtures" / "golden"
EVENT = TypeAdapter(ResponseStreamEvent)
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
WEATHER = {"type": "function", "name": "get_weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
PIN = {"response_id": "resp_1", "created_at": 1700000000, "model": "client-model"}


def translate(extra: dict[str, Any], **kwargs: Any) -> Any:
    return responses_request_to_ollama({"model": "client-model", "input": "hi", **extra}, model="m", **kwargs)


def events_of(raw: bytes) -> list[Any]:
    """Parse SSE bytes into the SDK's event models, checking each ``event:`` line matches its ``type``."""
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split("\n")
        event = EVENT.validate_json(data_line.removeprefix("data: "))
        assert event_line == f"event: {event.type}"
        events.append(event)
    return events


def chunks(*parts: dict[str, Any], done_reason: str = "stop") -> list[dict[str, Any]]:
    lines = [{"model": "m", "message": {"role": "assistant", "content": "", **p}, "done": False} for p in parts]
    return [*lines, {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True,
                     "done_reason": done_reason, "prompt_eval_count": 7, "eval_count": 5}]


# request: the field mapping


@pytest.mark.parametrize(("extra", "key", "value"), [
    ({"max_output_tokens": 50}, "options", {"num_predict": 50}),
    ({"temperature": 0, "top_p": 0.5}, "options", {"temperature": 0, "top_p": 0.5}),
    ({"text": {"format": {"type": "json_object"}}}, "format", "json"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}}, "format",
     {"type": "object"}),
    ({"text": {"format": {"type": "text"}, "verbosity": "high"}}, "format", None),
    ({"reasoning": {"effort": "none"}}, "think", False),
    ({"reasoning": {"effort": "minimal"}}, "think", "low"),
    ({"reasoning": {"effort": "low"}}, "think", "low"),
    ({"reasoning": {"effort": "medium"}}, "think", "medium"),
    ({"reasoning": {"effort": "high"}}, "think", "high"),
    ({"reasoning": {"effort": "xhigh"}}, "think", "max"),
    ({"reasoning": {"effort": "max"}}, "think", "max"),
    ({"reasoning": {"summary": "auto"}}, "think", None),
    ({"think": True}, "think", True),
    ({"truncation": "disabled"}, "truncate", False),
    ({"truncation": "auto"}, "truncate", None),
    ({"top_logprobs": 3}, "top_logprobs", 3),
    ({"include": ["message.output_text.logprobs"]}, "logprobs", True),
    ({"stream": True}, "stream", True),
    ({"keep_alive": "1m"}, "keep_alive", "1m"),
    ({"tools": [WEATHER], "tool_choice": "none"}, "tools", None),
    ({"tools": [WEATHER], "tool_choice": "auto"}, "tools", [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER["parameters"]}}]),
    ({"tools": [WEATHER], "tool_choice": "required"}, "format", WEATHER["parameters"]),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}}, "tools", None),
    ({"tools": [{"type": "function", "name": "f"}]}, "tools", [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {}}}}]),
])
def test_request_fields_map_to_ollama(extra, key, value):
    """Each Responses field lands on its Ollama counterpart (None: the key is not sent)."""
    assert translate(extra).native.get(key) == value


@pytest.mark.parametrize("extra", [
    {"metadata": {"a": "b"}}, {"user": "u"}, {"store": False}, {"previous_response_id": "resp_0"},
    {"include": ["reasoning.encrypted_content", "file_search_call.results"]}, {"prompt_cache_key": "k"},
    {"prompt_cache_retention": "24h"}, {"client_metadata": {"a": 1}}, {"service_tier": "auto"},
    {"safety_identifier": "s"}, {"stream_options": {"include_obfuscation": False}}, {"truncation": "auto"},
    {"top_logprobs": 0}, {"max_tool_calls": 3}, {"background": False}, {"parallel_tool_calls": False},
    {"text": {"verbosity": "low"}}, {"reasoning": {"generate_summary": "concise"}},
    {"conversation": None, "prompt": None},
])
def test_bookkeeping_fields_are_accepted(extra):
    """Fields that are the shell's concern or change nothing Ollama does are accepted."""
    assert translate(extra).native["messages"] == [{"role": "user", "content": "hi"}]


def test_route_defaults_fill_only_what_the_client_left_unset():
    """Route options and keep_alive apply under the client's own, as for chat."""
    native = translate({"temperature": 0.1, "options": {"num_ctx": 2048}},
                       default_options={"temperature": 0.9, "num_ctx": 8192, "top_k": 20},
                       default_keep_alive="5m").native
    assert native["options"] == {"temperature": 0.1, "num_ctx": 2048, "top_k": 20}
    assert native["keep_alive"] == "5m"


def test_hosted_tools_are_left_out_and_reported():
    """Hosted tools and hosted-call items never reach Ollama; the request lists them once each."""
    request = translate({"tools": [{"type": "web_search"}, WEATHER, {"type": "web_search"}, {"type": "mcp"}],
                         "input": [{"type": "web_search_call", "id": "ws", "status": "completed"},
                                   {"role": "user", "content": "hi"}]})
    assert request.left_out == ("web_search_call", "web_search", "mcp")
    assert [t["function"]["name"] for t in request.native["tools"]] == ["get_weather"]
    assert [m["role"] for m in request.native["messages"]] == ["user"]


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type"),
    ({"input": [{"type": "local_shell_call", "id": "x"}]}, "input[0].type"),
])
def test_hosted_tools_can_be_refused(extra, param):
    """With hosted_tools="refuse" a hosted tool or hosted-call item is a 400 naming it."""
    with pytest.raises(InvalidRequestError) as info:
        translate(extra, hosted_tools="refuse")
    assert info.value.param == param and info.value.code == "unsupported_parameter"


def test_string_input_and_instructions_become_system_then_user():
    """``instructions`` is a system message before the input."""
    request = translate({"instructions": "Be kind.", "input": "hello"})
    assert request.native["messages"] == [{"role": "system", "content": "Be kind."},
                                          {"role": "user", "content": "hello"}]
    assert request.input_items == ({"type": "message", "role": "user",
                                    "content": [{"type": "input_text", "text": "hello"}]},)


def test_prior_items_come_first_and_previous_instructions_do_not():
    """The stored conversation precedes the new input; only this request's instructions are used."""
    prior = [{"type": "message", "role": "user", "content": "first"},
             {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
              "content": [{"type": "output_text", "text": "one", "annotations": []}]}]
    request = translate({"instructions": "Now.", "input": "second", "previous_response_id": "resp_0"},
                        prior_items=prior)
    assert request.native["messages"] == [
        {"role": "system", "content": "Now."}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one"}, {"role": "user", "content": "second"}]


def test_a_stored_conversation_continues_with_its_reasoning_and_calls():
    """conversation_items of one response, given back as prior_items, rebuild the assistant turn."""
    first = translate({"input": "Weather in Rome?", "tools": [WEATHER],
                       "include": ["reasoning.encrypted_content"]})
    answer = {"model": "m", "done": True, "done_reason": "stop", "message": {
        "role": "assistant", "content": "", "thinking": "Use the tool.",
        "tool_calls": [{"id": "call_r", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]}}
    response = ollama_chat_to_response(answer, request=first, **PIN, new_id=counting_ids())
    stored = conversation_items(first, response)
    second = translate({"input": [{"type": "function_call_output", "call_id": "call_r", "output": "rain"}],
                        "tools": [WEATHER]}, prior_items=stored)
    assert second.native["messages"] == [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": "", "thinking": "Use the tool.", "tool_calls": [
            {"id": "call_r", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
        {"role": "tool", "content": "rain", "tool_call_id": "call_r", "tool_name": "get_weather"}]


def test_images_in_user_messages_and_tool_outputs():
    """input_image data URLs become Ollama images on user and tool messages."""
    native = translate({"input": [
        {"role": "user", "content": [{"type": "input_text", "text": "see"}, {"type": "input_image", "image_url": PNG,
                                                                             "detail": "low"}]},
        {"type": "function_call", "call_id": "c", "name": "shot", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": PNG}]}]}).native
    payload = PNG.partition(",")[2]
    assert native["messages"][0] == {"role": "user", "content": "see", "images": [payload]}
    assert native["messages"][2]["images"] == [payload] and native["messages"][2]["content"] == ""


# request: refusals, each naming the field


@pytest.mark.parametrize(("extra", "param"), [
    ({"seed": 1}, "seed"),
    ({"stop": ["x"]}, "stop"),
    ({"n": 2}, "n"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"context_management": [{"type": "compaction"}]}, "context_management"),
    ({"background": True}, "background"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"model": None}, "model"),
    ({"model": 3}, "model"),
    ({"input": None}, "input"),
    ({"input": []}, "input"),
    ({"input": 5}, "input"),
    ({"input": [{"role": "user", "content": "x"}] * 4097}, "input"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user"}]}, "input[0].content"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/a.png"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": PNG}]}]},
     "input[0].content[0].type"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{bad"}]}, "input[0].arguments"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}, "input[0].arguments"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"type": "custom_tool_call", "call_id": "c"}]}, "input[0].type"),
    ({"instructions": ["x"]}, "instructions"),
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": [{"type": "custom", "name": "patch"}]}, "tools[0].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].name"),
    ({"tools": [{"type": "function", "name": "f", "parameters": "x"}]}, "tools[0].parameters"),
    ({"tools": [{"type": "function", "name": "f", "strict": "yes"}]}, "tools[0].strict"),
    ({"tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "custom", "name": "c"}]}]},
     "tools[0].tools[0].type"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "other"}}, "tool_choice.name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "mode": "any", "tools": []}}, "tool_choice.mode"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": []}},
     "tool_choice.tools"),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"text": {"verbosity": "loud"}}, "text.verbosity"),
    ({"text": {"colour": "red"}}, "text.colour"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"reasoning": {"summary": "long"}}, "reasoning.summary"),
    ({"reasoning": {"mode": "pro"}}, "reasoning.mode"),
    ({"reasoning": "high"}, "reasoning"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"truncation": "middle"}, "truncation"),
    ({"metadata": {"k": 1}}, "metadata"),
    ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
    ({"include": "reasoning.encrypted_content"}, "include"),
    ({"store": "yes"}, "store"),
    ({"stream": 1}, "stream"),
    ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"options": [1]}, "options"),
    ({"keep_alive": True}, "keep_alive"),
    ({"stream_options": True}, "stream_options"),
])
def test_request_refusals_name_the_field(extra, param):
    """Every field that cannot be honoured, or is malformed, is a 400 whose param names it."""
    with pytest.raises(InvalidRequestError) as info:
        translate(extra)
    assert info.value.status == 400 and info.value.param == param


# answers and events, validated with the SDK's own models


RESPONSE_CASES = sorted(GOLDEN.glob("responses_response_*.json"))
STREAM_CASES = sorted(GOLDEN.glob("responses_stream_*.json"))


@pytest.mark.parametrize("path", RESPONSE_CASES, ids=[p.stem for p in RESPONSE_CASES])
def test_every_golden_response_is_an_sdk_response(path):
    """Each golden answer validates as the SDK's Response, and output_text reads its text."""
    case = json.loads(path.read_text())
    response = Response.model_validate(case["expected"])
    content = case["input"]["message"]["content"]
    assert response.output_text == ("" if case["request"].get("tool_choice") == "required" else content)


@pytest.mark.parametrize("path", STREAM_CASES, ids=[p.stem for p in STREAM_CASES])
def test_every_golden_stream_event_is_an_sdk_event_and_accumulates(path):
    """Each golden event validates, sequence numbers count from 0, and the SDK's accumulator agrees."""
    case = json.loads(path.read_text())
    events = events_of("".join(case["expected"]).encode())
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1].type in ("response.completed", "response.incomplete")
    state = ResponseStreamState(input_tools=case["request"].get("tools", omit), text_format=omit)
    for event in events:
        for built in state.handle_event(event):
            if built.type in ("response.completed", "response.incomplete"):
                final = built.response
    assert final.output_text == events[-1].response.output_text
    assert [o.type for o in final.output] == [o.type for o in events[-1].response.output]


def test_stream_and_non_stream_answers_agree():
    """Fed token by token, the stream's final response equals the non-streamed translation."""
    request = translate({"tools": [WEATHER], "reasoning": {"effort": "low"}, "include": ["reasoning.encrypted_content"]})
    call = {"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    lines = chunks({"thinking": "Hm"}, {"thinking": "m."}, {"content": "Let me "}, {"content": "check."},
                   {"tool_calls": [call]})
    stream = ResponsesStream(request=request, **PIN, new_id=counting_ids())
    raw = b"".join(stream.feed(line) for line in lines)
    whole = {**lines[-1], "message": {"role": "assistant", "content": "Let me check.", "thinking": "Hmm.",
                                      "tool_calls": [call]}}
    assert stream.response == ollama_chat_to_response(whole, request=request, **PIN, new_id=counting_ids())
    assert events_of(raw)[-1].response.model_dump(exclude_none=True) == Response.model_validate(
        stream.response).model_dump(exclude_none=True)


def test_text_streams_token_by_token_without_buffering():
    """Every Ollama token line yields its own output_text.delta at once."""
    stream = ResponsesStream(request=translate({}), **PIN, new_id=counting_ids())
    first = events_of(stream.feed({"message": {"role": "assistant", "content": "A"}, "done": False}))
    assert [e.type for e in first][-1] == "response.output_text.delta" and first[-1].delta == "A"
    second = events_of(stream.feed({"message": {"role": "assistant", "content": "B"}, "done": False}))
    assert [(e.type, e.delta) for e in second] == [("response.output_text.delta", "B")]


@pytest.mark.parametrize("text", ["B", "naïve \"quoted\"\n", "\u2028 emoji \U0001F600"])
def test_a_plain_token_line_gives_the_same_bytes_as_any_other_token_line(text):
    """The common token line ({"role", "content"} only, four keys at most) takes a short path; its
    bytes are those of the general path (here reached with a fifth, unknown key)."""
    fast = ResponsesStream(request=translate({}), **PIN, new_id=counting_ids())
    general = ResponsesStream(request=translate({}), **PIN, new_id=counting_ids())
    first = {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": "A"}, "done": False}
    assert fast.feed(first) == general.feed(first)
    line = {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": text}, "done": False}
    out = fast.feed(line)
    assert out == general.feed({**line, "extra": 1})
    assert [(e.type, e.delta, e.sequence_number) for e in events_of(out)] == [
        ("response.output_text.delta", text, 5)]
    final = {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"}
    assert fast.feed(final) == general.feed(final)


def test_relay_attributes_follow_the_stream():
    """has_output turns true with the first output; final, usage, text_parts and response come at the end."""
    stream = ResponsesStream(request=translate({}), **PIN, new_id=counting_ids())
    stream.keep_text = True
    assert stream.feed({"message": {"role": "assistant", "content": ""}, "done": False})  # created, in_progress
    assert not stream.has_output and stream.final is None and stream.response is None
    stream.feed({"message": {"role": "assistant", "content": "Hi"}, "done": False})
    assert stream.has_output
    end = chunks()[-1]
    stream.feed(end)
    assert stream.final is end and stream.text_parts == ["Hi"]
    assert stream.usage == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    assert Response.model_validate(stream.response).output_text == "Hi"


def test_a_failure_after_the_first_event_ends_with_error_then_response_failed():
    """fail() closes the open item as incomplete, then sends an error event and response.failed."""
    stream = ResponsesStream(request=translate({}), **PIN, new_id=counting_ids())
    head = stream.feed({"message": {"role": "assistant", "content": "Hal"}, "done": False})
    tail = events_of(stream.fail(UpstreamStreamError("backend b failed: out of memory")))
    assert [e.type for e in tail] == ["response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "error", "response.failed"]
    assert tail[0].sequence_number == events_of(head)[-1].sequence_number + 1
    assert tail[3].code == "upstream_stream_error" and "out of memory" in tail[3].message
    failed = tail[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error"
    assert failed.output[0].status == "incomplete" and failed.output_text == "Hal"


def test_an_empty_answer_is_one_empty_message():
    """No tokens at all still gives a message item, streamed or not, so output_text is ""."""
    request = translate({})
    stream = ResponsesStream(request=request, **PIN, new_id=counting_ids())
    events = events_of(b"".join(stream.feed(line) for line in chunks()))
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    assert stream.response == ollama_chat_to_response(chunks()[-1], request=request, **PIN, new_id=counting_ids())


def test_forced_answers_are_calls_and_a_cut_short_one_is_incomplete():
    """A forced call comes back as a function_call; cut by max_output_tokens it is incomplete."""
    request = translate({"tools": [WEATHER], "tool_choice": "required", "max_output_tokens": 3})
    stream = ResponsesStream(request=request, **PIN, new_id=counting_ids())
    raw = b"".join(stream.feed(line) for line in chunks({"content": '{"city":'}, done_reason="length"))
    events = events_of(raw)
    final = events[-1].response
    assert events[-1].type == "response.incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert [(o.type, o.name, o.arguments, o.status) for o in final.output] == [
        ("function_call", "get_weather", '{"city":', "incomplete")]
    whole = ollama_chat_to_response({**chunks()[-1], "message": {"role": "assistant", "content": '{"city": "Oslo"}'}},
                                    request=request, **PIN, new_id=counting_ids())
    assert [(o["name"], o["arguments"], o["status"]) for o in whole["output"]] == [
        ("get_weather", '{"city": "Oslo"}', "completed")]


def test_thinking_after_a_forced_call_began_does_not_split_the_call():
    """Late thinking during a forced call is left out, so the call stays one item with whole arguments."""
    request = translate({"tools": [WEATHER], "tool_choice": "required"})
    stream = ResponsesStream(request=request, **PIN, new_id=counting_ids())
    stream.feed({"message": {"role": "assistant", "content": '{"city": '}, "done": False})
    stream.feed({"message": {"role": "assistant", "content": '"Oslo"}', "thinking": "late"}, "done": False})
    stream.feed(chunks()[-1])
    assert [(o["type"], o.get("arguments")) for o in stream.response["output"]] == [
        ("function_call", '{"city": "Oslo"}')]


def test_parallel_tool_calls_false_keeps_the_first_call():
    """With parallel_tool_calls false only the first call is returned."""
    request = translate({"tools": [WEATHER], "parallel_tool_calls": False})
    calls = [{"id": f"call_{c}", "function": {"name": "get_weather", "arguments": {"city": c}}} for c in "AB"]
    out = ollama_chat_to_response({**chunks()[-1], "message": {"role": "assistant", "content": "", "tool_calls": calls}},
                                  request=request, **PIN, new_id=counting_ids())
    assert [o["call_id"] for o in out["output"]] == ["call_A"]


def test_golden_vectors_run_through_the_shared_runner():
    """The responses golden kinds run (guards the runner the golden test uses)."""
    case = json.loads((GOLDEN / "responses_stream_text.json").read_text())
    assert run_case(case) == case["expected"]
