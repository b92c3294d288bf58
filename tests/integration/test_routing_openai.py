"""An OpenAI-compatible backend (a cloud, llama.cpp) behind the gateway: renamed, authenticated, invisible."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.fakes import openai as fo
from tests.integration.test_routing import HI, backend, closed_port, primary_then, routed

CHAT = "/v1/chat/completions"


def _cloud_fallback(cloud_url: str, **route: object) -> dict[str, object]:
    """A dead Ollama first, then the cloud under another model name with an API key from the env."""
    backends = [backend("local", f"http://127.0.0.1:{closed_port()}"),
                backend("cloud", cloud_url, "openai", api_key="${CLOUD_KEY}")]
    return routed(backends, {"targets": [{"backend": "local"}],
                             "fallback": [{"backend": "cloud", "model": "gpt-4o-mini"}], **route})


async def test_cloud_fallback_is_invisible_to_the_sdk(start_openai, start_gateway):
    """A non-streamed answer from the cloud fallback parses as a normal completion; model and key are the route's."""
    cloud, url = await start_openai()
    gw = await start_gateway(_cloud_fallback(url), environ={"CLOUD_KEY": "sk-cloud"})
    async with gw.client() as client:
        raw = await client.chat.completions.with_raw_response.create(model="llama3.2", messages=HI)
    answer = raw.parse()
    assert answer.choices[0].message.content == "Hello from the cloud"
    assert answer.usage is not None and answer.usage.completion_tokens == 4
    assert raw.headers["x-gateway-backend"] == "cloud"
    (_, _, sent, headers), = cloud.requests
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"] == HI
    assert headers["Authorization"] == "Bearer sk-cloud"


async def test_cloud_fallback_streams_unchanged(start_openai, start_gateway):
    """A streamed answer from the cloud fallback arrives chunk by chunk and ends cleanly."""
    cloud, url = await start_openai()
    gw = await start_gateway(_cloud_fallback(url), environ={"CLOUD_KEY": "sk-cloud"})
    async with gw.client() as client:
        stream = await client.chat.completions.create(model="llama3.2", messages=HI, stream=True,
                                                      stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the cloud"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert cloud.bodies(CHAT)[0]["stream"] is True


async def test_cloud_serves_completions_and_embeddings(start_openai, start_gateway):
    """Legacy completions and embeddings reach an openai backend at its own paths, model renamed."""
    cloud, url = await start_openai()
    gw = await start_gateway({"backends": [backend("cloud", url, "openai")], "logging": {"requests": False},
                              "routes": [{"name": "emb", "models": ["embed"],
                                          "targets": [{"backend": "cloud", "model": "text-embedding-3-small"}]},
                                         {"name": "text", "models": ["*"],
                                          "targets": [{"backend": "cloud", "model": "gpt-4o-mini"}]}]})
    async with gw.client() as client:
        completion = await client.completions.create(model="anything", prompt="Say hi")
        vectors = await client.embeddings.create(model="embed", input=["a", "b"])
    assert completion.choices[0].text == "Hello from the cloud"
    assert [len(item.embedding) for item in vectors.data] == [8, 8]
    assert cloud.bodies("/v1/completions")[0]["model"] == "gpt-4o-mini"
    assert cloud.bodies("/v1/embeddings")[0]["model"] == "text-embedding-3-small"


@pytest.mark.parametrize("stream", [False, True])
async def test_cloud_errors_pass_through_unchanged(start_openai, start_gateway, stream):
    """A 4xx from an openai backend reaches the client with its own status and error body."""
    cloud, url = await start_openai()
    cloud.script(CHAT, fo.status(400, "'messages' is too long", type="invalid_request_error",
                                 error_code="context_length_exceeded"))
    gw = await start_gateway(routed([backend("cloud", url, "openai")], {"targets": [{"backend": "cloud"}]}))
    async with aiohttp.ClientSession() as http:
        payload = {"model": "llama3.2", "messages": HI, "stream": stream}
        async with http.post(gw.url + "/v1/chat/completions", json=payload) as resp:
            assert resp.status == 400
            body = await resp.json()
    assert body == {"error": {"message": "'messages' is too long", "type": "invalid_request_error",
                              "param": None, "code": "context_length_exceeded"}}
    async with gw.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="llama3.2", messages=HI, stream=stream)
    assert caught.value.code == "context_length_exceeded"


async def test_cloud_429_keeps_retry_after(start_openai, start_gateway):
    """A cloud 429 is relayed with its body and Retry-After, so clients back off as the cloud asked."""
    cloud, url = await start_openai()
    cloud.script(CHAT, fo.status(429, "Rate limit reached", type="requests", error_code="rate_limit_exceeded",
                                 headers={"Retry-After": "7"}))
    gw = await start_gateway(routed([backend("cloud", url, "openai")], {"targets": [{"backend": "cloud"}]}))
    async with gw.client() as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="llama3.2", messages=HI)
    assert caught.value.response.headers["Retry-After"] == "7"
    assert caught.value.body == {"message": "Rate limit reached", "type": "requests", "param": None,
                                 "code": "rate_limit_exceeded"}


async def test_ollama_fallback_behind_a_failing_cloud(start_fake, start_openai, start_gateway):
    """Fallback works the other way too: a cloud 5xx moves on to Ollama."""
    cloud, url = await start_openai()
    cloud.script(CHAT, fo.status(503, "overloaded"))
    local = await start_fake()
    gw = await start_gateway(routed([backend("cloud", url, "openai"), backend("local", local.url)],
                                    primary_then("cloud", "local")))
    async with gw.client() as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=HI)
    assert answer.choices[0].message.content == "Hello world"
    assert len(cloud.bodies(CHAT)) == 1
