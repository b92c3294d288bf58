"""Anthropic Messages <-> Ollama /api/chat: golden vectors, field and refusal tables, and the anthropic SDK's view."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from policies.outcome import Outcome
from proxy.errors import (
    AuthenticationError,
    InvalidRequestError,
    ModelNotFoundError,
    PassthroughError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProxyError,
    RateLimitedError,
    ServiceUnavailableError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from proxy.jsonio import dumps
from proxy.translate.anthropic_answer import AnswerPlan, ollama_chat_to_anthropic
from proxy.translate.anthropic_errors import (
    anthropic_error_body,
    anthropic_error_event,
    anthropic_error_type,
    render_anthropic_error,
)
from proxy.translate.anthropic_request import answer_plan_of, messages_request_to_ollama, user_of
from proxy.translate.anthropic_stream import MessagesStream
from proxy.translate.anthropic_token_count import count_tokens_estimate

GOLDEN = Path(__file__).parent.parent / "fixtures" / "golden" / "anthropic_messages"
CASES = sorted(GOLDEN.glob("anthropic_*.json"))
MESSAGE_ID = "msg_0123456789abcdef01234567"
PNG = "iVBORw0KGgoAAAAAAAAA"  # a PNG signature: enough for the image checks
USER = [{"role": "user", "content": "hi"}]
WEATHER = {"name": "get_weather", "description": "Current weather.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}}
EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude", "max_tokens": 100, "messages": USER, **extra}


def translate(raw: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    return messages_request_to_ollama(raw, model=kwargs.pop("model", "m"), **kwargs).native


def plan_of(raw: Mapping[str, Any]) -> AnswerPlan:
    return messages_request_to_ollama(raw, model="m").plan


def run_case(case: Mapping[str, Any]) -> Any:
    """One golden vector through the translators (also used to write a new vector's first draft)."""
    kind, given, kwargs = case["kind"], case["input"], dict(case.get("kwargs", {}))
    if kind == "request":
        req = messages_request_to_ollama(given, **kwargs)
        return {"native": req.native, "stream": req.stream, "sticky_key": req.sticky_key,
                "dropped": list(req.dropped)}
    if kind == "count":
        return count_tokens_estimate(given)
    plan = plan_of(case["request"])
    if kind == "response":
        return ollama_chat_to_anthropic(given, message_id=MESSAGE_ID, plan=plan, **kwargs)
    if kind == "stream":
        stream = MessagesStream(message_id=MESSAGE_ID, plan=plan, **kwargs)
        return [stream.feed(line).decode() for line in given]
    raise ValueError(kind)


def sse(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Split SSE bytes into (event line, parsed data) pairs, checking the framing."""
    events = []
    for frame in data.decode().split("\n\n")[:-1]:
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        events.append((event_line[7:], json.loads(data_line[6:])))
    return events


def check_events(data: bytes) -> list[dict[str, Any]]:
    """Every event validates as the SDK's RawMessageStreamEvent (or is a ping), in a well-formed order."""
    events = sse(data)
    open_index = None
    last_index = -1
    for name, payload in events:
        assert payload["type"] == name
        if name == "ping":
            continue
        EVENTS.validate_python(payload)
        if name == "content_block_start":
            assert open_index is None and payload["index"] == last_index + 1
            open_index = last_index = payload["index"]
        elif name == "content_block_delta":
            assert payload["index"] == open_index
        elif name == "content_block_stop":
            assert payload["index"] == open_index
            open_index = None
    assert [n for n, _ in events][:2] == ["message_start", "ping"]
    assert [n for n, _ in events][-2:] == ["message_delta", "message_stop"] and open_index is None
    return [p for _, p in events]


def feed_all(lines: Iterable[Mapping[str, Any]], plan: AnswerPlan = AnswerPlan(), **kwargs: Any) -> bytes:
    stream = MessagesStream(message_id=MESSAGE_ID, model="claude", plan=plan, **kwargs)
    return b"".join(stream.feed(line) for line in lines)


def done(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
            "prompt_eval_count": 3, "eval_count": 2, **extra}


def tokens(*texts: str, key: str = "content") -> list[dict[str, Any]]:
    return [{"model": "m", "message": {"role": "assistant", "content": "", key: t}, "done": False} for t in texts]


def whole(lines: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The non-streamed answer Ollama gives for the same stream: contents joined, calls collected."""
    message: dict[str, Any] = {"role": "assistant", "content": "", "thinking": "", "tool_calls": []}
    for line in lines:
        part = line.get("message", {})
        message["content"] += part.get("content", "")
        message["thinking"] += part.get("thinking", "")
        message["tool_calls"] += part.get("tool_calls", [])
    return {**lines[-1], "message": message}


# -- golden vectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_vector(path: Path) -> None:
    """The translator's output equals the reviewed expected output."""
    case = json.loads(path.read_text())
    assert run_case(case) == case["expected"]


def test_there_are_vectors_for_every_direction() -> None:
    """Requests, whole answers, streams and counts each have golden vectors."""
    kinds = {json.loads(p.read_text())["kind"] for p in CASES}
    assert kinds == {"request", "response", "stream", "count"}


def test_golden_inputs_are_valid_anthropic_requests() -> None:
    """The vectors' request bodies are what the SDK's own request types accept."""
    params: TypeAdapter[Any] = TypeAdapter(anthropic.types.MessageCreateParams)
    for path in CASES:
        case = json.loads(path.read_text())
        raw = case["input"] if case["kind"] == "request" else case.get("request")
        if raw is not None:
            params.validate_python({k: v for k, v in raw.items() if k not in ("options", "keep_alive")})


def test_golden_answers_validate_with_the_sdk() -> None:
    """Whole answers validate as anthropic.types.Message; stream vectors as RawMessageStreamEvent."""
    for path in CASES:
        case = json.loads(path.read_text())
        if case["kind"] == "response":
            Message.model_validate(case["expected"])
        elif case["kind"] == "stream":
            check_events("".join(case["expected"]).encode())


# -- request: field mappings ------------------------------------------------------------------------

MAPPINGS: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ({}, {}, {"options": {"num_predict": 100}}),
    ({"max_tokens": 64000}, {"max_tokens_cap": 4096}, {"options": {"num_predict": 4096}}),
    ({"max_tokens": 50}, {"max_tokens_cap": 4096}, {"options": {"num_predict": 50}}),
    ({"max_tokens": 1e30}, {}, {"options": {"num_predict": 1_048_576}}),
    ({"temperature": 0, "top_p": 0.5, "top_k": 5}, {},
     {"options": {"num_predict": 100, "temperature": 0, "top_p": 0.5, "top_k": 5}}),
    ({"stop_sequences": ["\n\nHuman:", "END"]}, {}, {"options": {"num_predict": 100, "stop": ["\n\nHuman:", "END"]}}),
    ({"stop_sequences": []}, {}, {"options": {"num_predict": 100}}),
    ({"system": "Be brief."}, {}, {"messages": [{"role": "system", "content": "Be brief."}, USER[0]]}),
    ({"system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}, {},
     {"messages": [{"role": "system", "content": "A\nB"}, USER[0]]}),
    ({"system": ""}, {}, {"messages": [USER[0]]}),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, {}, {"think": "low"}),
    ({"thinking": {"type": "enabled", "budget_tokens": 10000}}, {}, {"think": "medium"}),
    ({"thinking": {"type": "enabled", "budget_tokens": 31999}}, {}, {"think": "high"}),
    ({"thinking": {"type": "between_tools"}}, {}, {"think": True}),
    ({"thinking": {"type": "disabled"}}, {}, {"think": False}),
    ({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}}, {}, {"think": False}),
    ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}, {}, {"think": "low"}),
    ({"output_config": {"effort": "max"}}, {}, {"think": "max"}),
    ({"output_config": {"effort": "xhigh"}}, {}, {"think": "max"}),
    ({"output_config": {"effort": "medium"}}, {}, {"think": "medium"}),
    ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, {"thinking_capable": False}, {}),
    ({"thinking": {"type": "disabled"}}, {"thinking_capable": False}, {"think": False}),
    ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}, {},
     {"format": {"type": "object"}}),
    ({"tools": [WEATHER]}, {}, {"tools": [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather.", "parameters": WEATHER["input_schema"]}}]}),
    ({"tools": [WEATHER], "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}, {},
     {"tools": [{"type": "function", "function": {
         "name": "get_weather", "description": "Current weather.", "parameters": WEATHER["input_schema"]}}]}),
    ({"keep_alive": "1h", "options": {"num_ctx": 8192, "num_predict": 5}}, {"default_keep_alive": "5m"},
     {"keep_alive": "1h", "options": {"num_predict": 100, "num_ctx": 8192}}),
    ({}, {"default_options": {"num_ctx": 2048, "num_predict": 1}, "default_keep_alive": "5m"},
     {"keep_alive": "5m", "options": {"num_predict": 100, "num_ctx": 2048}}),
]


@pytest.mark.parametrize(("extra", "kwargs", "expected"), MAPPINGS, ids=[str(i) for i in range(len(MAPPINGS))])
def test_request_fields_map_to_ollama(extra: dict[str, Any], kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    """Each Anthropic field lands on its Ollama field; absent ones are left unset."""
    native = translate(body(**extra), **kwargs)
    for key, value in expected.items():
        assert native[key] == value, key
    assert ("think" in native) == ("think" in expected)
    assert ("tools" in native) == ("tools" in expected)


def test_bookkeeping_fields_are_accepted_and_change_nothing() -> None:
    """Fields Claude Code sends that do not change the answer on Ollama are accepted and ignored."""
    extra = {"service_tier": "auto", "container": "c_1", "cache_control": {"type": "ephemeral"}, "speed": "fast",
             "inference_geo": "us", "diagnostics": {"previous_message_id": "msg_1"}, "user_profile_id": "p",
             "workspace_id": "w", "metadata": {"user_id": "u"}, "billing_policy": {"type": "billing_policy",
             "bill_to": "self"}, "fallbacks": "default", "fallback_credit_token": "t",
             "context_management": {"edits": []}}
    assert translate(body(**extra)) == translate(body())


def test_metadata_user_id_is_the_sticky_key() -> None:
    """metadata.user_id comes back for sticky routing; without it there is no key."""
    assert messages_request_to_ollama(body(metadata={"user_id": "abc"}), model="m").sticky_key == "abc"
    assert messages_request_to_ollama(body(metadata={}), model="m").sticky_key is None
    assert messages_request_to_ollama(body(), model="m").sticky_key is None


def test_stream_flag_is_forwarded() -> None:
    """``stream`` is always sent to Ollama, false when absent."""
    assert messages_request_to_ollama(body(stream=True), model="m").stream is True
    assert translate(body())["stream"] is False


def test_tool_results_keep_their_place_in_the_turn() -> None:
    """A user turn of text, tool results and text becomes user, tool, tool, user messages in that order."""
    raw = body(messages=[
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "before"},
            {"type": "tool_result", "tool_use_id": "t1"},
            {"type": "tool_result", "tool_use_id": "t9", "content": [
                {"type": "text", "text": "a"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                           "data": PNG}}]},
            {"type": "text", "text": "after"}]}])
    assert translate(raw)["messages"][1:] == [
        {"role": "user", "content": "before"},
        {"role": "tool", "content": "", "tool_call_id": "t1", "tool_name": "f"},
        {"role": "tool", "content": "a", "images": [PNG], "tool_call_id": "t9"},
        {"role": "user", "content": "after"},
    ]


def test_system_role_messages_and_documents_become_text() -> None:
    """A ``system`` message and a plain-text document are passed as text."""
    raw = body(messages=[
        {"role": "system", "content": "Rules."},
        {"role": "user", "content": [{"type": "document", "title": "notes.txt",
                                      "source": {"type": "text", "media_type": "text/plain", "data": "x = 1"}}]}])
    assert translate(raw)["messages"] == [{"role": "system", "content": "Rules."},
                                          {"role": "user", "content": "notes.txt\nx = 1"}]


def test_server_tools_and_mcp_servers_are_left_out_and_reported() -> None:
    """Tools only Anthropic can run are not sent to Ollama and are listed in ``dropped``."""
    raw = body(tools=[WEATHER, {"type": "bash_20250124", "name": "bash"},
                      {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
                      {"type": "custom", **TIME}],
               mcp_servers=[{"type": "url", "url": "https://mcp.example", "name": "docs"}])
    req = messages_request_to_ollama(raw, model="m")
    assert [t["function"]["name"] for t in req.native["tools"]] == ["get_weather", "get_time"]
    assert req.dropped == ("bash (bash_20250124)", "str_replace_based_edit_tool (text_editor_20250728)",
                           "docs (mcp_server)")


def test_tool_choice_none_sends_no_tools() -> None:
    """``tool_choice: none`` keeps the model from calling tools: Ollama does not see them."""
    assert "tools" not in translate(body(tools=[WEATHER], tool_choice={"type": "none"}))


def test_forced_any_constrains_the_content_to_one_of_the_tools() -> None:
    """``any`` over two tools sends no tools, an any-of format and an instruction naming both."""
    native = translate(body(tools=[WEATHER, TIME], tool_choice={"type": "any"}))
    assert "tools" not in native
    assert [o["properties"]["name"] for o in native["format"]["anyOf"]] == [{"enum": ["get_weather"]},
                                                                           {"enum": ["get_time"]}]
    assert native["messages"][0]["role"] == "system" and "get_time" in native["messages"][0]["content"]


def test_clear_thinking_keeps_thinking_on_the_last_turns_only() -> None:
    """A clear_thinking edit drops thinking from all but the last N assistant turns that have it."""
    turns = []
    for i in range(3):
        turns += [{"role": "user", "content": f"q{i}"},
                  {"role": "assistant", "content": [{"type": "thinking", "thinking": f"t{i}", "signature": ""},
                                                    {"type": "text", "text": f"a{i}"}]}]

    def kept(edit: dict[str, Any]) -> list[str]:
        native = translate(body(messages=turns + USER, context_management={"edits": [edit]}))
        return [m["thinking"] for m in native["messages"] if "thinking" in m]

    assert kept({"type": "clear_thinking_20251015", "keep": "all"}) == ["t0", "t1", "t2"]
    assert kept({"type": "clear_thinking_20251015"}) == ["t2"]
    assert kept({"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 2}}) == ["t1", "t2"]
    assert kept({"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 0}}) == []


def test_sdk_built_requests_translate() -> None:
    """What anthropic-python itself sends for create() and stream() is accepted."""
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        return httpx2.Response(400, json=anthropic_error_body(400, "stop here"))

    client = anthropic.Anthropic(api_key="k", base_url="http://gateway.test", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="claude", max_tokens=10, system=[{"type": "text", "text": "S"}],
                               messages=[{"role": "user", "content": "hi"}], tools=[WEATHER],  # type: ignore[list-item]
                               tool_choice={"type": "tool", "name": "get_weather"}, metadata={"user_id": "u"},
                               thinking={"type": "enabled", "budget_tokens": 1024})
    with pytest.raises(anthropic.BadRequestError):
        with client.messages.stream(model="claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}]):
            pass
    reqs = [messages_request_to_ollama(raw, model="m") for raw in seen]
    assert [r.stream for r in reqs] == [False, True]
    assert reqs[0].sticky_key == "u" and reqs[0].plan.forced is not None


# -- request: refusals --------------------------------------------------------------------------------

REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"frequency_penalty": 1}, "frequency_penalty"),
    ({"compaction": {"type": "compaction"}}, "compaction"),
    ({"thread": {"type": "create"}}, "thread"),
    ({"context_management": {"edits": [{"type": "compact_20260112"}]}}, "context_management.edits[0].type"),
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "9"}, "max_tokens"),
    ({"model": None}, "model"),
    ({"messages": None}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "url", "url": "https://x/a.png"}}]}]}, "messages[0].content[0].source"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages[0].content[0].source.type"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/bmp", "data": PNG}}]}]}, "messages[0].content[0].source.data"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/jpeg", "data": PNG}}]}]}, "messages[0].content[0].source.data"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBER"}}]}]}, "messages[0].content[0].source"),
    ({"messages": [{"role": "user", "content": [{"type": "search_result"}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "thinking", "thinking": "x"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "assistant", "content": [{"type": "image", "source": {}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]},
     "messages[0].content[0].id"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}]},
     "messages[0].content[0].input"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]},
     "messages[0].content[0].tool_use_id"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]}]},
     "messages[0].content[0].is_error"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                 "content": [{"type": "tool_reference", "tool_name": "x"}]}]}]},
     "messages[0].content[0].content[0].type"),
    ({"system": 5}, "system"),
    ({"system": [{"type": "image", "source": {}}]}, "system[0].type"),
    ({"temperature": 1.5}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"stop_sequences": [""]}, "stop_sequences[0]"),
    ({"stream": "yes"}, "stream"),
    ({"metadata": "u"}, "metadata"),
    ({"metadata": {"user_id": 5}}, "metadata.user_id"),
    ({"tools": {"name": "f"}}, "tools"),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
    ({"tools": [{"input_schema": {}}]}, "tools[0].name"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].name"),
    ({"mcp_servers": {}}, "mcp_servers"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tool_choice": {"type": "required"}}, "tool_choice.type"),
    ({"tool_choice": {"type": "tool"}, "tools": [WEATHER]}, "tool_choice.name"),
    ({"tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, "tool_choice.name"),
    ({"tool_choice": {"type": "tool", "name": "web_search"},
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tool_choice.name"),
    ({"tool_choice": {"type": "any"}}, "tool_choice"),
    ({"tool_choice": {"type": "any", "disable_parallel_tool_use": "no"}, "tools": [WEATHER]},
     "tool_choice.disable_parallel_tool_use"),
    ({"thinking": True}, "thinking"),
    ({"thinking": {"type": "on"}}, "thinking.type"),
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "enabled", "budget_tokens": -1}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "adaptive", "display": "full"}}, "thinking.display"),
    ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
    ({"output_config": {"task_budget": 5}}, "output_config.task_budget"),
    ({"output_config": {"format": {"type": "xml"}}}, "output_config.format"),
    ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema"),
    ({"output_config": {"format": {"type": "json_schema", "schema": {}}}, "tools": [WEATHER],
      "tool_choice": {"type": "any"}}, "output_config.format"),
    ({"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}}, "context_management.edits[0].type"),
    ({"context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": 3}]}},
     "context_management.edits[0].keep"),
    ({"context_management": []}, "context_management"),
    ({"options": [1]}, "options"),
    ({"keep_alive": True}, "keep_alive"),
]


@pytest.mark.parametrize(("extra", "param"), REFUSALS, ids=[f"{i}-{c[1]}" for i, c in enumerate(REFUSALS)])
def test_bad_requests_name_the_field(extra: dict[str, Any], param: str) -> None:
    """Each malformed or unhonourable field gives a 400 whose param is that field."""
    with pytest.raises(InvalidRequestError) as info:
        translate(body(**extra))
    assert info.value.param == param and info.value.status == 400


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search"}]}, "tools[1].type"),
    ({"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "docs"}]}, "mcp_servers[0]"),
])
def test_server_tools_are_refused_when_asked(extra: dict[str, Any], param: str) -> None:
    """With ``refuse_server_tools`` a tool Ollama cannot run is a 400 instead of being left out."""
    with pytest.raises(InvalidRequestError) as info:
        translate(body(**extra), refuse_server_tools=True)
    assert info.value.param == param and info.value.code == "unsupported_parameter"


# -- whole answers ------------------------------------------------------------------------------------

ANSWERS: list[tuple[dict[str, Any], dict[str, Any], list[str], str]] = [
    ({"content": "Hi"}, {"done_reason": "stop"}, ["text"], "end_turn"),
    ({"content": ""}, {"done_reason": "stop"}, [], "end_turn"),
    ({"content": "Hi"}, {"done_reason": ""}, ["text"], "end_turn"),
    ({"content": "Hi", "thinking": "hm"}, {"done_reason": "length"}, ["thinking", "text"], "max_tokens"),
    ({"content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": [1]}}}]},
     {"done_reason": "stop"}, ["tool_use"], "tool_use"),
    ({"content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
     {"done_reason": "length"}, ["tool_use"], "max_tokens"),
]


@pytest.mark.parametrize(("message", "extra", "types", "reason"), ANSWERS, ids=[str(i) for i in range(len(ANSWERS))])
def test_answers_map_blocks_and_stop_reason(message: dict[str, Any], extra: dict[str, Any], types: list[str],
                                            reason: str) -> None:
    """Thinking, text and tool calls become blocks in that order; ``length`` wins over tool use."""
    native = {"model": "m", "done": True, "message": {"role": "assistant", **message}, **extra}
    answer = ollama_chat_to_anthropic(native, message_id=MESSAGE_ID, model="claude-x")
    Message.model_validate(answer)
    assert [b["type"] for b in answer["content"]] == types
    assert answer["stop_reason"] == reason and answer["stop_sequence"] is None and answer["model"] == "claude-x"
    assert answer["usage"] == {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                               "cache_read_input_tokens": 0}


def test_tool_use_ids_are_unique_per_message_and_inputs_are_objects() -> None:
    """Each tool_use gets a ``toolu_`` id derived from the message id, and its input as an object."""
    calls = [{"id": "call_x", "function": {"name": "f", "arguments": {"a": 1}}},
             {"function": {"name": "g", "arguments": "not json"}}]
    answer = ollama_chat_to_anthropic({"message": {"content": "", "tool_calls": calls}, "done": True},
                                      message_id="msg_abc", model="c")
    assert [(b["id"], b["name"], b["input"]) for b in answer["content"]] == [
        ("toolu_abc_0", "f", {"a": 1}), ("toolu_abc_1", "g", {})]


def test_disable_parallel_tool_use_keeps_the_first_call() -> None:
    """With disable_parallel_tool_use only the first call is returned, whole and streamed."""
    plan = plan_of(body(tools=[WEATHER], tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    calls = [{"function": {"name": "get_weather", "arguments": {"city": c}}} for c in ("Paris", "Rome")]
    answer = ollama_chat_to_anthropic({"message": {"content": "", "tool_calls": calls}, "done": True},
                                      message_id=MESSAGE_ID, model="c", plan=plan)
    assert [b["input"] for b in answer["content"]] == [{"city": "Paris"}]
    lines = [{"message": {"role": "assistant", "content": "", "tool_calls": [c]}, "done": False} for c in calls]
    events = check_events(feed_all([*lines, done()], plan))
    assert sum(e["type"] == "content_block_start" for e in events) == 1


def test_forced_answer_is_a_tool_use_and_a_cut_short_one_is_text() -> None:
    """The constrained content is the tool's input; JSON cut short by max_tokens is returned as text."""
    plan = plan_of(body(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}))

    def answer(content: str, reason: str) -> dict[str, Any]:
        native = {"message": {"role": "assistant", "content": content}, "done": True, "done_reason": reason}
        return ollama_chat_to_anthropic(native, message_id=MESSAGE_ID, model="c", plan=plan)

    whole_call = answer(' {"city": "Paris"}\n', "stop")
    assert whole_call["content"] == [{"type": "tool_use", "id": "toolu_0123456789abcdef01234567_0",
                                      "name": "get_weather", "input": {"city": "Paris"}}]
    assert whole_call["stop_reason"] == "tool_use"
    cut = answer('{"city": "Par', "length")
    assert cut["content"] == [{"type": "text", "text": '{"city": "Par'}] and cut["stop_reason"] == "max_tokens"
    assert answer("", "length")["content"] == []


def test_omitted_thinking_display_returns_empty_thinking_blocks() -> None:
    """``display: omitted`` keeps the thinking block but not its text, whole and streamed."""
    plan = plan_of(body(thinking={"type": "adaptive", "display": "omitted"}))
    native = {"message": {"role": "assistant", "content": "Hi", "thinking": "secret"}, "done": True}
    answer = ollama_chat_to_anthropic(native, message_id=MESSAGE_ID, model="c", plan=plan)
    assert answer["content"][0] == {"type": "thinking", "thinking": "", "signature": ""}
    data = feed_all([*tokens("secret", key="thinking"), *tokens("Hi"), done()], plan)
    check_events(data)
    assert b"secret" not in data


# -- streams ------------------------------------------------------------------------------------------


def test_each_token_is_sent_when_it_arrives() -> None:
    """Every text or thinking token yields its delta at once; nothing is held back."""
    stream = MessagesStream(message_id=MESSAGE_ID, model="claude")
    for line in [*tokens("mm", key="thinking"), *tokens("a", "b\n", '"c"')]:
        text = line["message"].get("thinking") or line["message"]["content"]
        out = stream.feed(line)
        assert json.dumps(text)[1:-1].encode() in out and out.endswith(b"}}\n\n")


def test_the_stream_is_output_only_once_a_block_or_the_end_comes() -> None:
    """message_start alone does not commit the relay, so a failure before any token can still fall back."""
    stream = MessagesStream(message_id=MESSAGE_ID, model="claude")
    first = stream.feed({"model": "m", "message": {"role": "assistant", "content": ""}, "done": False})
    assert first.startswith(b"event: message_start\n") and not stream.has_output
    assert stream.feed(tokens("x")[0]) and stream.has_output and stream.final is None
    stream.feed(done(prompt_eval_count=7, eval_count=4))
    assert stream.final is not None
    assert stream.usage == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}


def test_an_empty_answer_streams_a_valid_message() -> None:
    """A done object with no content still gives start, ping, message_delta and message_stop."""
    events = check_events(feed_all([done(done_reason="length")]))
    assert [e["type"] for e in events] == ["message_start", "ping", "message_delta", "message_stop"]
    assert events[2]["delta"]["stop_reason"] == "max_tokens"


def test_keep_text_collects_the_answer_text() -> None:
    """With keep_text the relay can log the answer's text."""
    stream = MessagesStream(message_id=MESSAGE_ID, model="claude")
    stream.keep_text = True
    for line in [*tokens("Hel", "lo"), done()]:
        stream.feed(line)
    assert "".join(stream.text_parts) == "Hello"


INTERLEAVED = [*tokens("I think", key="thinking"), *tokens("Hel", "lo"), *tokens("more", key="thinking"),
               *tokens(" again"), done()]
STREAMS: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
    ({}, [*tokens("I ", "think", key="thinking"), *tokens("Hel", "lo"), done()]),
    ({"tools": [WEATHER]}, [*tokens("Let me "), *tokens("check"),
                            {"done": False, "message": {"role": "assistant", "content": "", "tool_calls": [
                                {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
                                {"function": {"name": "get_weather", "arguments": {"city": "Bergen"}}}]}},
                            done()]),
    ({"tools": [WEATHER, TIME], "tool_choice": {"type": "any"}},
     [*tokens("thinking", key="thinking"), *tokens('{"name": "get', '_time", "argu', 'ments": {"tz"', ': "CET"}', "}"),
      done()]),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}},
     [*tokens('  {"ci', 'ty": "Rome"', "}  "), done()]),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}},
     [{"message": {"role": "assistant", "content": '{"city": "Nice"}'}, "done": True, "done_reason": "stop",
       "prompt_eval_count": 1, "eval_count": 1}]),
]


@pytest.mark.parametrize(("extra", "lines"), STREAMS, ids=[str(i) for i in range(len(STREAMS))])
def test_sdk_stream_assembles_the_same_message_as_the_whole_answer(extra: dict[str, Any],
                                                                   lines: list[dict[str, Any]]) -> None:
    """anthropic-python's ``messages.stream`` accumulates our events into the non-streamed translation."""
    raw = body(**extra)
    plan = plan_of(raw)
    data = feed_all(lines, plan)
    check_events(data)
    expected = ollama_chat_to_anthropic(whole(lines), message_id=MESSAGE_ID, model="claude", plan=plan)
    client = sdk(lambda request: httpx2.Response(200, content=data, headers={"content-type": "text/event-stream"}))
    with client.messages.stream(**raw) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert [b.model_dump(exclude_none=True) for b in final.content] == expected["content"]
    assert final.stop_reason == expected["stop_reason"]
    assert final.usage.output_tokens == expected["usage"]["output_tokens"]
    assert text == "".join(b["text"] for b in expected["content"] if b["type"] == "text")


def test_a_thinking_block_after_text_opens_a_new_block() -> None:
    """Blocks are started and stopped in turn, with increasing indexes, however the kinds alternate."""
    events = check_events(feed_all(INTERLEAVED))
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text", "thinking", "text"]
    signatures = [e for e in events if e["type"] == "content_block_delta" and e["delta"]["type"] == "signature_delta"]
    assert len(signatures) == 2


def test_forced_arguments_stream_as_they_are_generated() -> None:
    """A forced call's input arrives in several input_json_delta events, not one at the end."""
    extra, lines = STREAMS[3]
    events = check_events(feed_all(lines, plan_of(body(**extra))))
    parts = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"]
    assert parts == ['{"ci', 'ty": "Rome"', "}"]


def test_message_delta_carries_the_real_counts() -> None:
    """message_start has the estimate given; message_delta the counts Ollama reported."""
    events = check_events(feed_all([*tokens("x"), done(prompt_eval_count=40, eval_count=9)], input_tokens=38))
    assert events[0]["message"]["usage"]["input_tokens"] == 38
    assert events[-2]["usage"] == {"input_tokens": 40, "output_tokens": 9}


# -- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (405, "invalid_request_error"), (413, "request_too_large"),
    (429, "rate_limit_error"), (500, "api_error"), (502, "api_error"), (503, "overloaded_error"),
    (504, "api_error"), (529, "overloaded_error"),
])
def test_error_types_follow_the_status(status: int, kind: str) -> None:
    """Each status gets Anthropic's error type."""
    assert anthropic_error_type(status) == kind
    assert anthropic_error_body(status, "m") == {"type": "error", "error": {"type": kind, "message": "m"}}


def test_error_body_may_carry_the_request_id() -> None:
    """A request id, when given, is at the top level as Anthropic puts it."""
    assert anthropic_error_body(400, "m", request_id="req_1")["request_id"] == "req_1"


@pytest.mark.parametrize(("exc", "status", "kind", "headers"), [
    (InvalidRequestError("bad", param="x"), 400, "invalid_request_error", {}),
    (AuthenticationError("who", headers={"WWW-Authenticate": 'Basic realm="proxy"'}), 401, "authentication_error",
     {"WWW-Authenticate": 'Basic realm="proxy"'}),
    (PermissionDeniedError("no"), 403, "permission_error", {}),
    (ModelNotFoundError("m"), 404, "not_found_error", {}),
    (PayloadTooLargeError("big"), 413, "request_too_large", {}),
    (RateLimitedError("slow", headers={"Retry-After": "3"}), 429, "rate_limit_error", {"Retry-After": "3"}),
    (ServiceUnavailableError("busy"), 503, "overloaded_error", {}),
    (UpstreamStreamError("boom", outcome=Outcome.STREAM_ERROR, backend="b"), 502, "api_error",
     {"x-should-retry": "false"}),  # an upstream failure reaching the renderer is final
])
def test_the_error_tree_renders_in_anthropic_shape(exc: Exception, status: int, kind: str,
                                                   headers: dict[str, str]) -> None:
    """Each ProxyError keeps its status and headers and gets Anthropic's body."""
    got_status, payload, got_headers = render_anthropic_error(exc)
    assert (got_status, got_headers) == (status, headers)
    assert json.loads(payload) == {"type": "error", "error": {"type": kind, "message": str(exc)}}


def test_final_upstream_failures_tell_the_sdk_not_to_retry() -> None:
    """Once every fallback failed, 5xx answers carry ``x-should-retry: false`` (anthropic-python honours it)."""
    exc = UpstreamTimeoutError("slow", outcome=Outcome.TIMEOUT, backend="b")
    exc.final = True
    assert render_anthropic_error(exc)[2] == {"x-should-retry": "false"}


def test_unknown_and_passthrough_errors_render_without_leaking() -> None:
    """A stray exception is a generic 500; a relayed backend error keeps its message only."""
    status, payload, _ = render_anthropic_error(KeyError("secret"))
    assert status == 500 and b"secret" not in payload and json.loads(payload)["error"]["type"] == "api_error"
    passthrough = PassthroughError(400, b'{"error": {"message": "bad model", "type": "x"}}',
                                   outcome=Outcome.BAD_REQUEST, backend="b")
    assert json.loads(render_anthropic_error(passthrough)[1])["error"] == {"type": "invalid_request_error",
                                                                         "message": "bad model"}


@pytest.mark.parametrize(("status", "error_class"), [
    (400, anthropic.BadRequestError), (401, anthropic.AuthenticationError), (403, anthropic.PermissionDeniedError),
    (404, anthropic.NotFoundError), (413, anthropic.APIStatusError), (429, anthropic.RateLimitError),
    (503, anthropic.APIStatusError), (529, anthropic.OverloadedError),
])
def test_sdk_raises_its_own_error_class_with_our_message(status: int, error_class: type[Exception]) -> None:
    """anthropic-python reads our error bodies: the right class, type and message."""
    payload = anthropic_error_body(status, "nope")
    client = sdk(lambda request: httpx2.Response(status, json=payload))
    with pytest.raises(error_class) as info:
        client.messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert info.value.body == payload  # type: ignore[attr-defined]


def test_a_mid_stream_error_event_makes_the_sdk_raise() -> None:
    """After the first byte a failure is an ``event: error``, which anthropic-python raises as an API error."""
    stream = MessagesStream(message_id=MESSAGE_ID, model="claude")
    exc = UpstreamStreamError("backend b failed: out of memory", outcome=Outcome.STREAM_ERROR, backend="b")
    data = stream.feed(tokens("par")[0]) + anthropic_error_event(exc)
    assert sse(anthropic_error_event(exc)) == [("error", {"type": "error", "error": {
        "type": "api_error", "message": "backend b failed: out of memory"}})]
    client = sdk(lambda request: httpx2.Response(200, content=data, headers={"content-type": "text/event-stream"}))
    with pytest.raises(anthropic.APIStatusError, match="out of memory"):
        with client.messages.stream(model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}]) as s:
            s.get_final_message()


# -- whole answers through the SDK, and count_tokens ---------------------------------------------------


def sdk(handler: Callable[[httpx2.Request], httpx2.Response]) -> anthropic.Anthropic:
    """An anthropic-python client whose transport is ``handler``, validating responses strictly."""
    return anthropic.Anthropic(api_key="k", base_url="http://gateway.test", max_retries=0,
                               _strict_response_validation=True,
                               http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_sdk_round_trip_of_a_whole_answer() -> None:
    """An SDK request translated, answered by Ollama, translated back: the SDK parses a Message."""
    native_answer = {"model": "m", "done": True, "done_reason": "stop", "prompt_eval_count": 12, "eval_count": 5,
                     "message": {"role": "assistant", "content": "Sunny.", "thinking": "Look it up.",
                                 "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}}

    def handler(request: httpx2.Request) -> httpx2.Response:
        req = messages_request_to_ollama(json.loads(request.content), model="qwen3")
        answer = ollama_chat_to_anthropic(native_answer, message_id=MESSAGE_ID, model="claude", plan=req.plan)
        return httpx2.Response(200, json=answer)

    message = sdk(handler).messages.create(model="claude", max_tokens=50, tools=[WEATHER],  # type: ignore[list-item]
                                           messages=[{"role": "user", "content": "Oslo?"}])
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.stop_reason == "tool_use" and message.usage.input_tokens == 12


def test_count_tokens_is_characters_over_four_plus_images() -> None:
    """The estimate is ceil(chars / 4) over texts, calls, results and tools, plus 1600 per image."""
    assert count_tokens_estimate({"messages": [{"role": "user", "content": "abcdefg"}]}) == {"input_tokens": 3}
    with_image = {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}
    assert count_tokens_estimate(with_image) == {"input_tokens": 1 + 1600}
    tools = {"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    assert count_tokens_estimate(tools)["input_tokens"] == 13  # 50 characters of JSON, still counted


def test_count_tokens_needs_messages() -> None:
    """Only a missing messages array is refused."""
    with pytest.raises(InvalidRequestError) as info:
        count_tokens_estimate({"model": "claude"})
    assert info.value.param == "messages"


# -- fuzz -------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
sources = st.fixed_dictionaries({"type": st.sampled_from(["base64", "url", "text", "file"]) | json_values},
                                optional={"media_type": st.sampled_from(["image/png", "image/gif"]) | json_values,
                                          "data": st.sampled_from([PNG, "!!", ""]) | json_values,
                                          "url": json_values})
blocks = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=12) | json_values}),
    st.fixed_dictionaries({"type": st.sampled_from(["image", "document"]), "source": sources | json_values}),
    st.fixed_dictionaries({"type": st.just("tool_use")}, optional={
        "id": st.sampled_from(["t1", "t2"]) | json_values, "name": st.text(max_size=5) | json_values,
        "input": st.dictionaries(st.text(max_size=4), json_values, max_size=2) | json_values}),
    st.fixed_dictionaries({"type": st.just("tool_result")}, optional={
        "tool_use_id": st.sampled_from(["t1", "t2"]) | json_values, "is_error": json_values,
        "content": st.text(max_size=8) | st.lists(st.just({"type": "text", "text": "r"}) | json_values, max_size=2)
        | json_values}),
    st.fixed_dictionaries({"type": st.sampled_from(["thinking", "redacted_thinking"])},
                          optional={"thinking": json_values, "data": json_values, "signature": json_values}),
    st.dictionaries(st.sampled_from(["type", "text", "source", "id"]), json_values, max_size=3),
)
anthropic_messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool"]) | json_values},
    optional={"content": st.text(max_size=12) | st.lists(blocks, max_size=4) | json_values}), max_size=4) | json_values
tools = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["f", "g"]) | json_values}, optional={
    "type": st.sampled_from(["custom", "web_search_20250305"]) | json_values,
    "input_schema": st.just({"type": "object", "properties": {"a": {"type": "string"}}}) | json_values,
    "description": json_values}), max_size=3) | json_values
requests = st.fixed_dictionaries({}, optional={
    "model": st.just("claude") | json_values, "max_tokens": st.integers(-5, 2**64) | json_values,
    "messages": anthropic_messages, "system": st.text(max_size=8) | st.lists(blocks, max_size=2) | json_values,
    "stream": json_values, "temperature": json_values, "top_p": json_values, "top_k": json_values,
    "stop_sequences": json_values, "tools": tools, "mcp_servers": json_values,
    "tool_choice": st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "tool", "none"]) | json_values},
                                         optional={"name": st.sampled_from(["f", "g"]) | json_values,
                                                   "disable_parallel_tool_use": json_values}) | json_values,
    "thinking": st.fixed_dictionaries({"type": st.sampled_from(["enabled", "disabled", "adaptive"]) | json_values},
                                      optional={"budget_tokens": json_values, "display": json_values}) | json_values,
    "output_config": st.fixed_dictionaries({}, optional={"effort": json_values, "format": json_values}) | json_values,
    "metadata": json_values, "context_management": json_values, "options": json_values, "keep_alive": json_values,
}) | st.dictionaries(st.text(max_size=8), json_values, max_size=4)
answers = st.fixed_dictionaries({"done": st.booleans()}, optional={
    "message": st.fixed_dictionaries({}, optional={
        "content": st.text(max_size=12) | json_values, "thinking": st.text(max_size=8) | json_values,
        "tool_calls": st.lists(st.fixed_dictionaries({"function": st.fixed_dictionaries(
            {"name": json_values, "arguments": json_values})}) | json_values, max_size=2) | json_values}) | json_values,
    "done_reason": st.sampled_from(["stop", "length", ""]) | json_values,
    "prompt_eval_count": json_values, "eval_count": json_values})


@FUZZ
@given(raw=requests, cap=st.none() | st.integers(1, 10_000), capable=st.sampled_from([None, True, False]))
def test_any_request_translates_or_is_a_4xx(raw: dict[str, Any], cap: int | None, capable: bool | None) -> None:
    """Any body gives a serialisable /api/chat body or a 4xx ProxyError; count_tokens likewise."""
    try:
        req = messages_request_to_ollama(raw, model="m", max_tokens_cap=cap, thinking_capable=capable)
    except ProxyError as exc:
        assert 400 <= exc.status < 500 and exc.message and exc.param is not None
    else:
        dumps(req.native)
        assert req.native["model"] == "m" and isinstance(req.native["options"]["num_predict"], int)
    try:
        assert count_tokens_estimate(raw)["input_tokens"] >= 0
    except ProxyError as exc:
        assert exc.status == 400


@FUZZ
@given(lines=st.lists(answers, min_size=1, max_size=4), forced=st.booleans(), single=st.booleans())
def test_any_answer_translates_to_sdk_valid_output(lines: list[dict[str, Any]], forced: bool, single: bool) -> None:
    """Whatever Ollama sends, the whole answer is a valid Message and the stream valid events."""
    raw = body(tools=[WEATHER, TIME], tool_choice={"type": "any" if forced else "auto",
                                                   "disable_parallel_tool_use": single})
    plan = plan_of(raw)
    Message.model_validate(ollama_chat_to_anthropic(lines[-1], message_id=MESSAGE_ID, model="c", plan=plan))
    stream = MessagesStream(message_id=MESSAGE_ID, model="c", plan=plan)
    data = b"".join(stream.feed(line) for line in [*lines, done()] if stream.final is None)
    check_events(data)


def test_user_and_plan_can_be_read_before_translation() -> None:
    """``user_of`` and ``answer_plan_of`` give what the full translation gives, for a shell that plans first."""
    raw = body(metadata={"user_id": "u7"}, tools=[WEATHER, TIME],
               tool_choice={"type": "any", "disable_parallel_tool_use": True},
               thinking={"type": "enabled", "budget_tokens": 2000, "display": "omitted"})
    req = messages_request_to_ollama(raw, model="m")
    assert user_of(raw) == req.sticky_key == "u7"
    assert answer_plan_of(raw) == req.plan
    assert answer_plan_of(body(tool_choice=None)) == AnswerPlan()
    with pytest.raises(InvalidRequestError):
        user_of({"metadata": []})


def test_a_token_line_with_more_than_text_loses_nothing() -> None:
    """Thinking or calls on a line inside a text block are translated, not taken for a plain token."""
    lines = [*tokens("Hi"), {"message": {"content": " there", "thinking": "later"}, "done": False},
             {"message": {"content": "", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}, "done": False},
             done()]
    events = check_events(feed_all(lines, plan_of(body(tools=[{"name": "f", "input_schema": {"type": "object"}}]))))
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["text", "thinking", "text", "tool_use"]


def test_thinking_inside_forced_arguments_does_not_split_the_call() -> None:
    """A forced call stays one tool_use block even if thinking arrives between its argument tokens."""
    plan = plan_of(body(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}))
    lines = [*tokens('{"city": '), *tokens("hmm", key="thinking"), *tokens('"Oslo"}'), done()]
    events = check_events(feed_all(lines, plan))
    assert [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"] == ["tool_use"]
    assert "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta") == \
        '{"city": "Oslo"}'
