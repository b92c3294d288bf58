"""Anthropic's Messages API through the running gateway, driven by the anthropic SDK, against the fake Ollama."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pytest

from tests.fakes import ollama as o
from tests.integration.test_observability import eventually, scrape, series

WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
HI = [{"role": "user", "content": "hi"}]
CALL = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
ENV = {"TEAM_KEY": "sk-team-0001"}


def claude_config(url: str, **extra: Any) -> dict[str, Any]:
    """One Ollama backend; Claude model names reach llama3.2 through the ``claude`` route."""
    return {"backends": [{"name": "local", "type": "ollama", "url": url}],
            "routes": [{"name": "claude", "models": ["claude-*"], "targets": [{"backend": "local", "model": "llama3.2"}]}],
            "logging": {"requests": False}, **extra}


def client(gw: Any, api_key: str = "sk-test", **kwargs: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.url, api_key=api_key, max_retries=0, timeout=20, **kwargs)


@pytest.fixture
async def claude(start_fake, start_gateway):
    local = await start_fake()
    gw = await start_gateway(claude_config(local.url))
    return local.fake, gw


async def test_create_answers_a_claude_model_name_from_the_local_model(claude):
    """messages.create on a Claude name reaches llama3.2 via /api/chat; max_tokens 32000 is sent, not refused."""
    fake, gw = claude
    fake.script("/api/chat", o.ok("Hello world"))
    async with client(gw) as c:
        raw = await c.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=32000, messages=HI,
                                                         system=[{"type": "text", "text": "Be brief.",
                                                                  "cache_control": {"type": "ephemeral"}}])
    message = await raw.parse()
    assert [b.model_dump() for b in message.content] == [{"type": "text", "text": "Hello world", "citations": None}]
    assert (message.model, message.stop_reason, message.role) == ("claude-sonnet-4-5", "end_turn", "assistant")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 2)
    assert message.id.startswith("msg_")
    assert raw.headers["x-gateway-backend"] == "local" and raw.headers["x-gateway-model"] == "llama3.2"
    sent = fake.bodies("/api/chat")
    assert len(sent) == 1
    assert sent[0]["model"] == "llama3.2" and sent[0]["stream"] is False
    assert sent[0]["options"] == {"num_predict": 32000}
    assert sent[0]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


async def test_beta_query_and_anthropic_headers_are_accepted(claude):
    """The SDK's beta namespace (``?beta=true``, ``anthropic-beta``) works like the plain call."""
    fake, gw = claude
    async with client(gw) as c:
        message = await c.beta.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=HI,
                                               betas=["interleaved-thinking-2025-05-14"],
                                               metadata={"user_id": "user-42"})
    assert message.content[0].text == "Hello world"  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:  # Claude Code adds ?beta=true to both paths
        async with http.post(gw.url + "/v1/messages?beta=true", headers={"anthropic-version": "2023-06-01"},
                             json={"model": "claude-x", "max_tokens": 5, "messages": HI}) as resp:
            assert (resp.status, (await resp.json())["content"]) == (200, [{"type": "text", "text": "Hello world"}])
        async with http.post(gw.url + "/v1/messages/count_tokens?beta=true",
                             json={"model": "claude-x", "messages": HI}) as resp:
            assert (resp.status, await resp.json()) == (200, {"input_tokens": 2})
    assert len(fake.requests) == 2
    _, path, _, headers = fake.requests[-1]
    assert path == "/api/chat" and "anthropic-beta" not in headers and "x-api-key" not in headers


async def test_stream_assembles_text_and_final_message(claude):
    """messages.stream(): text_stream yields the words, get_final_message has text and real usage."""
    fake, gw = claude
    fake.script("/api/chat", o.ok("one two three"))
    async with client(gw) as c:
        async with c.messages.stream(model="claude-sonnet-4-5", max_tokens=1024, messages=HI) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
    assert pieces == ["one ", "two ", "three"]
    assert final.content[0].text == "one two three"  # type: ignore[union-attr]
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("end_turn", 7, 3)
    assert fake.bodies("/api/chat")[0]["stream"] is True


async def test_tool_round_trip_ends_in_text(claude):
    """tool_use comes back as a block; the tool_result turn reaches Ollama as a tool message; the answer is text."""
    fake, gw = claude
    fake.script("/api/chat", o.ok("", tool_calls=CALL), o.ok("It is sunny in Paris"))
    async with client(gw) as c:
        first = await c.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=HI, tools=[WEATHER])
        assert first.stop_reason == "tool_use"
        use = first.content[-1]
        assert (use.type, use.name, use.input) == ("tool_use", "get_weather", {"city": "Paris"})  # type: ignore[union-attr]
        follow = [*HI, {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,  # type: ignore[union-attr]
                                                "content": "sunny"}]}]
        final = await c.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=follow, tools=[WEATHER])
    assert final.content[0].text == "It is sunny in Paris" and final.stop_reason == "end_turn"  # type: ignore[union-attr]
    first_sent, second_sent = fake.bodies("/api/chat")
    assert first_sent["tools"][0]["function"]["name"] == "get_weather"
    assert second_sent["messages"][1]["tool_calls"] == [{"id": use.id, "function": {  # type: ignore[union-attr]
        "name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert second_sent["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": use.id,  # type: ignore[union-attr]
                                          "tool_name": "get_weather"}


@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "get_weather"}])
async def test_forced_tool_choice_returns_that_tool_from_constrained_output(claude, choice):
    """tool_choice any / tool: Ollama gets a schema format and no tools; the JSON comes back as tool_use."""
    fake, gw = claude
    fake.script("/api/chat", o.ok('{"city": "Oslo"}'))
    async with client(gw) as c:
        message = await c.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=HI, tools=[WEATHER],
                                          tool_choice=choice)  # type: ignore[arg-type]
        async with c.messages.stream(model="claude-sonnet-4-5", max_tokens=256, messages=HI, tools=[WEATHER],
                                     tool_choice=choice) as stream:  # type: ignore[arg-type]
            streamed = await stream.get_final_message()
    for answer in (message, streamed):
        assert answer.stop_reason == "tool_use"
        assert [(b.type, b.name, b.input) for b in answer.content] == [  # type: ignore[union-attr]
            ("tool_use", "get_weather", {"city": "Oslo"})]
    sent = fake.bodies("/api/chat")[0]
    assert "tools" not in sent and sent["format"]["properties"]["city"] == {"type": "string"}


async def test_thinking_blocks_are_returned_whole_and_streamed(claude):
    """thinking enabled maps to an Ollama level; the model's thinking comes back as thinking blocks."""
    fake, gw = claude
    fake.script("/api/chat", o.ok("Four", thinking="two plus two"))
    thinking = {"type": "enabled", "budget_tokens": 2048}
    async with client(gw) as c:
        message = await c.messages.create(model="claude-sonnet-4-5", max_tokens=4096, messages=HI,
                                          thinking=thinking)  # type: ignore[arg-type]
        async with c.messages.stream(model="claude-sonnet-4-5", max_tokens=4096, messages=HI,
                                     thinking=thinking) as stream:  # type: ignore[arg-type]
            streamed = await stream.get_final_message()
    for answer in (message, streamed):
        assert [b.type for b in answer.content] == ["thinking", "text"]
        assert answer.content[0].thinking == "two plus two"  # type: ignore[union-attr]
        assert answer.content[1].text == "Four"  # type: ignore[union-attr]
    assert [body["think"] for body in fake.bodies("/api/chat")] == ["low", "low"]


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_on_a_model_that_cannot_think_is_retried_without_it(claude, stream):
    """Ollama's 400 "does not support thinking" (Claude Code always asks) becomes a plain answer."""
    fake, gw = claude
    fake.script("/api/chat", o.status(400, '"llama3.2" does not support thinking'), o.ok("plain"))
    ask: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 4096, "messages": HI,
                           "thinking": {"type": "enabled", "budget_tokens": 20000}}
    async with client(gw) as c:
        if stream:
            async with c.messages.stream(**ask) as events:
                message = await events.get_final_message()
        else:
            message = await c.messages.create(**ask)
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "plain"  # type: ignore[union-attr]
    first, second = fake.bodies("/api/chat")
    assert first["think"] == "high" and "think" not in second


async def test_server_tools_are_left_out_and_named_in_a_header(claude):
    """web_search cannot run on Ollama: the custom tool is sent alone and the header names what was left out."""
    fake, gw = claude
    async with client(gw) as c:
        raw = await c.messages.with_raw_response.create(
            model="claude-sonnet-4-5", max_tokens=10, messages=HI,
            tools=[WEATHER, {"type": "web_search_20250305", "name": "web_search\r\nx-evil: 1"}])  # type: ignore[list-item]
    assert raw.headers["x-gateway-ignored-tools"] == "web_searchx-evil: 1 (web_search_20250305)"  # CR LF removed
    assert "x-evil" not in raw.headers
    assert [t["function"]["name"] for t in fake.bodies("/api/chat")[0]["tools"]] == ["get_weather"]


async def test_count_tokens_estimates_without_calling_a_backend(claude):
    """count_tokens answers ceil(characters / 4); an unknown model is a 404 as Anthropic answers it."""
    fake, gw = claude
    async with client(gw) as c:
        count = await c.messages.count_tokens(model="claude-sonnet-4-5", messages=[
            {"role": "user", "content": "x" * 36}], system="abcd")  # 4 + 4 ("user") + 36 characters
        beta = await c.beta.messages.count_tokens(model="claude-sonnet-4-5", messages=HI)
        with pytest.raises(anthropic.NotFoundError) as info:
            await c.messages.count_tokens(model="gpt-unknown", messages=HI)
    assert count.input_tokens == 11 and beta.input_tokens == 2
    body: Any = info.value.body
    assert body["type"] == "error" and body["request_id"] == info.value.response.headers["x-request-id"]
    assert body["error"] == {"type": "not_found_error",
                             "message": "The model 'gpt-unknown' does not exist or you do not have access to it."}
    assert fake.requests == []


@pytest.mark.parametrize(("behaviour", "error_class", "status"), [
    (o.status(500, "runner crashed"), anthropic.InternalServerError, 502),
    (o.status(503, "server busy"), anthropic.ServiceUnavailableError, 503),
])
async def test_backend_failures_raise_the_sdk_status_errors(claude, behaviour, error_class, status):
    """An Ollama 5xx reaches the SDK in Anthropic's shape with the gateway's status, and is not retried."""
    fake, gw = claude
    fake.script("/api/chat", behaviour)
    async with client(gw) as c:
        with pytest.raises(error_class) as info:
            await c.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=HI)
    assert isinstance(info.value, anthropic.APIStatusError) and info.value.status_code == status
    assert info.value.body["type"] == "error"  # type: ignore[index]
    assert info.value.response.headers["x-should-retry"] == "false"


async def test_bad_requests_and_unknown_models_raise_bad_request_and_not_found(claude):
    """An unknown field is a 400 naming it; a model no route serves is a 404; nothing reaches Ollama."""
    fake, gw = claude
    async with client(gw) as c:
        with pytest.raises(anthropic.BadRequestError) as bad:
            await c.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=HI,
                                    extra_body={"bogus": 1})
        with pytest.raises(anthropic.NotFoundError) as missing:
            await c.messages.create(model="llama-unrouted", max_tokens=10, messages=HI)
    assert bad.value.body["error"] == {"type": "invalid_request_error",  # type: ignore[index]
                                       "message": "bogus: Extra inputs are not permitted."}
    assert missing.value.status_code == 404 and missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert fake.requests == []


async def test_credentials_by_x_api_key_and_bearer_and_per_credential_limits(start_fake, start_gateway):
    """x-api-key and Bearer both authenticate; a wrong key is a 401, the limit a 429, each the SDK's class."""
    local = await start_fake()
    auth = {"credentials": [{"name": "team", "api_key": "${TEAM_KEY}", "requests_per_minute": 2}]}
    gw = await start_gateway(claude_config(local.url, auth=auth), environ=ENV)
    async with client(gw, api_key=ENV["TEAM_KEY"]) as by_key, \
            anthropic.AsyncAnthropic(base_url=gw.url, auth_token=ENV["TEAM_KEY"], max_retries=0) as by_token, \
            client(gw, api_key="sk-wrong") as wrong:
        assert (await by_key.messages.create(model="claude-x", max_tokens=5, messages=HI)).content
        assert (await by_token.messages.create(model="claude-x", max_tokens=5, messages=HI)).content
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await wrong.messages.create(model="claude-x", max_tokens=5, messages=HI)
        with pytest.raises(anthropic.RateLimitError) as limited:
            await by_key.messages.create(model="claude-x", max_tokens=5, messages=HI)
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "retry-after" in limited.value.response.headers
    assert len(local.fake.bodies("/api/chat")) == 2


async def test_a_failure_after_the_stream_started_ends_it_with_an_error_event(claude):
    """Ollama's error line mid-stream becomes Anthropic's ``error`` event: the SDK's stream raises."""
    fake, gw = claude
    fake.script("/api/chat", o.error_line_after(2, "model runner crashed"))
    seen: list[str] = []
    async with client(gw) as c:
        with pytest.raises(anthropic.APIStatusError) as info:
            async with c.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=HI) as stream:
                async for text in stream.text_stream:
                    seen.append(text)
    assert seen == ["t0 ", "t1 "]
    assert info.value.body == {"type": "error", "error": {"type": "api_error",  # type: ignore[comparison-overlap]
                                                          "message": "backend local failed: model runner crashed"}}


async def test_messages_are_counted_in_metrics_and_the_request_log(start_fake, start_gateway, tmp_path):
    """A whole and a streamed Messages request count as ok on the route with Ollama's tokens, and are logged."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("a b c"))
    raw = claude_config(local.url)
    raw["logging"] = {"requests": True, "file": str(tmp_path / "requests.log")}
    gw = await start_gateway(raw)
    async with client(gw) as c:
        await c.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=HI)
        async with c.messages.stream(model="claude-sonnet-4-5", max_tokens=10, messages=HI) as stream:
            await stream.get_final_message()
    labels = {"route": "claude", "model": "other", "backend": "local"}
    key = series("proxy_requests_total", **labels, outcome="ok", status_class="2xx")
    await eventually(lambda: scrape(gw).get(key) == 2.0)
    s = scrape(gw)
    assert s[series("proxy_tokens_total", **labels, kind="prompt")] == 14.0
    assert s[series("proxy_tokens_total", **labels, kind="completion")] == 6.0
    await eventually(lambda: len((tmp_path / "requests.log").read_text().splitlines()) == 2)
    records = [json.loads(line) for line in (tmp_path / "requests.log").read_text().splitlines()]
    assert [(r["path"], r["route"], r["model"], r["backend_model"], r["stream"], r["prompt_tokens"],
             r["completion_tokens"]) for r in records] == [
        ("/v1/messages", "claude", "claude-sonnet-4-5", "llama3.2", False, 7, 3),
        ("/v1/messages", "claude", "claude-sonnet-4-5", "llama3.2", True, 7, 3)]


async def test_streamed_tool_calls_and_base64_images(claude):
    """A streamed answer's tool call arrives as a tool_use block; a base64 image reaches Ollama's images."""
    fake, gw = claude
    fake.script("/api/chat", o.ok("Looking", tool_calls=CALL))
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    async with client(gw) as c:
        async with c.messages.stream(model="claude-sonnet-4-5", max_tokens=64, tools=[WEATHER], messages=[
                {"role": "user", "content": [image, {"type": "text", "text": "weather?"}]}]) as stream:
            final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "text", None), getattr(b, "input", None)) for b in final.content] == [
        ("text", "Looking", None), ("tool_use", None, {"city": "Paris"})]
    sent = fake.bodies("/api/chat")[0]["messages"]
    assert sent == [{"role": "user", "content": "weather?", "images": ["iVBORw0KGgo="]}]


async def test_a_claude_code_style_stream_has_anthropics_event_sequence(claude):
    """What Claude Code sends (Bearer, ?beta=true, beta headers, cached system blocks, big max_tokens) streams
    the exact event sequence Anthropic's clients expect."""
    fake, gw = claude
    fake.script("/api/chat", o.ok("ok then", thinking="hmm"))
    body = {"model": "claude-sonnet-4-5-20250929", "max_tokens": 32000, "stream": True,
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                       "cache_control": {"type": "ephemeral"}}]}],
            "tools": [{**WEATHER, "cache_control": {"type": "ephemeral"}}],
            "metadata": {"user_id": "user_abc_account_def_session_1"},
            "thinking": {"type": "enabled", "budget_tokens": 31999}, "temperature": 1}
    headers = {"Authorization": "Bearer anything", "anthropic-version": "2023-06-01", "x-app": "cli",
               "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"}
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/messages?beta=true", json=body, headers=headers) as resp:
            assert (resp.status, resp.headers["Content-Type"]) == (200, "text/event-stream")
            text = (await resp.read()).decode()
    events = [block.split("\n") for block in text.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    payloads = [json.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert [p["type"] for p in payloads] == names
    assert payloads[3]["delta"] == {"type": "thinking_delta", "thinking": "hmm"}
    assert payloads[4]["delta"] == {"type": "signature_delta", "signature": ""}
    assert [p["delta"] for p in payloads[7:9]] == [{"type": "text_delta", "text": "ok "},
                                                  {"type": "text_delta", "text": "then"}]
    assert payloads[10]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    sent = fake.bodies("/api/chat")[0]
    assert (sent["think"], sent["options"]) == ("high", {"num_predict": 32000, "temperature": 1})


async def test_metadata_user_id_is_the_sticky_split_key(start_fake, start_gateway):
    """On a 50/50 split with ``sticky: [user]``, one ``metadata.user_id`` always lands on the same arm."""
    one, two = await start_fake(), await start_fake()
    raw = {"backends": [{"name": "one", "type": "ollama", "url": one.url},
                        {"name": "two", "type": "ollama", "url": two.url}],
           "routes": [{"name": "claude", "models": ["claude-*"], "sticky": ["user"],
                       "targets": [{"backend": "one", "model": "llama3.2", "weight": 50},
                                   {"backend": "two", "model": "llama3.2", "weight": 50}]}],
           "logging": {"requests": False}}
    gw = await start_gateway(raw)
    seen: dict[str, set[str]] = {}
    async with client(gw) as c:
        for user in ("alice", "bob", "carol", "dave"):
            for _ in range(4):
                answer = await c.messages.with_raw_response.create(model="claude-x", max_tokens=5, messages=HI,
                                                                   metadata={"user_id": user})
                seen.setdefault(user, set()).add(answer.headers["x-gateway-backend"])
    assert all(len(backends) == 1 for backends in seen.values())
    assert len(one.fake.requests) + len(two.fake.requests) == 16
