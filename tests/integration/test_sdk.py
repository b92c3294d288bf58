"""The official openai SDK against the running gateway in front of a fake Ollama."""

from __future__ import annotations

import base64
import json

import openai
import pytest

from tests.conftest import one_backend_config
from tests.fakes.ollama import ok, status

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CALL = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
HI = [{"role": "user", "content": "hi"}]


async def test_chat_completion_has_openai_shape(gateway, fake_ollama):
    """A non-streamed chat carries id, model as asked, finish_reason and usage from Ollama's counts."""
    async with gateway.client() as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=HI)
    assert answer.id.startswith("chatcmpl-") and len(answer.id) > 20
    assert answer.object == "chat.completion"
    assert answer.model == "llama3.2"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == 7 and answer.usage.completion_tokens == 2
    assert answer.usage.total_tokens == 9


async def test_streaming_delivers_each_token_and_usage(gateway, fake_ollama):
    """A stream yields the role first, every token as its own chunk, one id, then usage."""
    fake_ollama.fake.script("/api/chat", ok("one two three"))
    async with gateway.client() as client:
        stream = await client.chat.completions.create(model="llama3.2", messages=HI, stream=True,
                                                      stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == ["one ", "two ", "three"]
    assert {c.id for c in chunks} == {chunks[0].id}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    assert fake_ollama.fake.bodies("/api/chat")[0]["stream"] is True


async def test_tool_call_non_streamed(gateway, fake_ollama):
    """Ollama's tool call comes back with a call_ id, JSON-string arguments and finish_reason tool_calls."""
    fake_ollama.fake.script("/api/chat", ok("", tool_calls=CALL))
    async with gateway.client() as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=HI, tools=[WEATHER_TOOL])
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    call = message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert fake_ollama.fake.bodies("/api/chat")[0]["tools"] == [WEATHER_TOOL]


async def test_tool_call_streamed_with_index_and_id(gateway, fake_ollama):
    """Streamed tool calls carry index, id, type and the whole function; the SDK's stream helper assembles them."""
    fake_ollama.fake.script("/api/chat", ok("", tool_calls=CALL + [
        {"function": {"name": "get_time", "arguments": {"tz": "UTC"}}}]))
    async with gateway.client() as client:
        stream = await client.chat.completions.create(model="llama3.2", messages=HI, tools=[WEATHER_TOOL],
                                                      stream=True)
        chunks = [chunk async for chunk in stream]
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [c.index for c in calls] == [0, 1]
    assert all(c.id.startswith("call_") for c in calls) and len({c.id for c in calls}) == 2
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_tool_result_carries_tool_name(gateway, fake_ollama):
    """A tool message is sent to Ollama with the tool name looked up from the assistant's call id."""
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    async with gateway.client() as client:
        await client.chat.completions.create(model="llama3.2", messages=messages, tools=[WEATHER_TOOL])
    sent = fake_ollama.fake.bodies("/api/chat")[0]["messages"]
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1", "tool_name": "get_weather"}


async def test_vision_data_url_goes_to_images(gateway, fake_ollama):
    """An image_url data URL reaches Ollama as a base64 entry in the message's images."""
    content = [{"type": "text", "text": "what is this?"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    async with gateway.client() as client:
        await client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": content}])
    sent = fake_ollama.fake.bodies("/api/chat")[0]["messages"][0]
    assert sent == {"role": "user", "content": "what is this?", "images": [PNG]}


async def test_json_mode_and_schema(gateway, fake_ollama):
    """json_object becomes format "json" and json_schema becomes the schema itself."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    async with gateway.client() as client:
        await client.chat.completions.create(model="llama3.2", messages=HI, response_format={"type": "json_object"})
        await client.chat.completions.create(
            model="llama3.2", messages=HI,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    bodies = fake_ollama.fake.bodies("/api/chat")
    assert bodies[0]["format"] == "json" and bodies[1]["format"] == schema


async def test_embeddings_float_and_default_base64(gateway, fake_ollama):
    """The SDK's default base64 request decodes to all 768 floats; float format returns floats."""
    async with gateway.client() as client:
        default = await client.embeddings.create(model="nomic-embed-text", input=["a", "b"])
        floats = await client.embeddings.create(model="nomic-embed-text", input="a", encoding_format="float")
    assert len(default.data) == 2 and len(default.data[0].embedding) == 768
    assert default.data[1].embedding[0] == pytest.approx(0.002, rel=1e-5)
    assert len(floats.data[0].embedding) == 768 and default.usage.prompt_tokens == 8


async def test_models_list_and_retrieve(gateway, fake_ollama):
    """Installed models are listed; ids with ':' and '/' can be retrieved; an unknown id is NotFoundError."""
    fake_ollama.fake.models.append("library/qwen2.5:7b")
    async with gateway.client() as client:
        listed = [m.id async for m in client.models.list()]
        assert "llama3.2:latest" in listed and "library/qwen2.5:7b" in listed
        assert (await client.models.retrieve("library/qwen2.5:7b")).id == "library/qwen2.5:7b"
        assert (await client.models.retrieve("llama3.2")).id == "llama3.2"
        with pytest.raises(openai.NotFoundError) as info:
            await client.models.retrieve("nope:1b")
    assert info.value.body["code"] == "model_not_found"


async def test_sdk_raises_its_own_errors(gateway, fake_ollama):
    """Our error bodies make the SDK raise NotFoundError and BadRequestError with our messages."""
    async with gateway.client() as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="not-pulled", messages=HI)
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="llama3.2", messages=HI, n=2)
    assert missing.value.body["code"] == "model_not_found"
    assert bad.value.body["param"] == "n"


async def test_sdk_raises_authentication_error(fake_ollama, start_gateway):
    """With an API key configured, a wrong key makes the SDK raise AuthenticationError."""
    raw = one_backend_config(fake_ollama.url, auth={"credentials": [{"name": "app", "api_key": "${KEY}"}]})
    gw = await start_gateway(raw, environ={"KEY": "sk-right"})
    async with gw.client(api_key="sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="llama3.2", messages=HI)
    async with gw.client(api_key="sk-right") as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=HI)
    assert answer.choices[0].message.content == "Hello world"


async def test_stream_error_line_raises_api_error(gateway, fake_ollama):
    """A mid-stream Ollama error line becomes an SSE error event; the SDK raises APIError."""
    from tests.fakes.ollama import error_line_after

    fake_ollama.fake.script("/api/chat", error_line_after(2, "CUDA out of memory"))
    async with gateway.client() as client:
        stream = await client.chat.completions.create(model="llama3.2", messages=HI, stream=True)
        with pytest.raises(openai.APIError) as info:
            async for _ in stream:
                pass
    assert "CUDA out of memory" in str(info.value)


async def test_completions_legacy(gateway, fake_ollama):
    """Legacy completions go to /api/generate with suffix and come back as text_completion."""
    async with gateway.client() as client:
        answer = await client.completions.create(model="llama3.2", prompt="def f(", suffix="return 1", max_tokens=5)
        stream = await client.completions.create(model="llama3.2", prompt="x", stream=True)
        texts = [c.choices[0].text async for c in stream]
    assert answer.choices[0].text == "Hello world" and answer.object == "text_completion"
    assert "".join(texts) == "Hello world"
    sent = fake_ollama.fake.bodies("/api/generate")[0]
    assert sent["suffix"] == "return 1" and sent["options"] == {"num_predict": 5}


async def test_upstream_error_statuses_map(gateway, fake_ollama):
    """An Ollama 500 is a 502 InternalServerError-class error naming the backend, never its URL."""
    fake_ollama.fake.script("/api/chat", status(500, "llama runner process has terminated"))
    async with gateway.client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="llama3.2", messages=HI)
    assert info.value.status_code == 502
    assert "local" in info.value.message and "127.0.0.1" not in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
