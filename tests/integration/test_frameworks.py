"""What real client libraries do by default, against the gateway: retries, model names, usage.

Driven by the official ``openai`` SDK with its defaults (``max_retries=2``), in front of a fake
cloud (``FakeOpenAI``) and fake Ollama servers.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import openai
import orjson
import pytest

from tests.fakes import ollama as o
from tests.fakes import openai as fo
from tests.integration.test_observability import eventually, scrape, series
from tests.integration.test_observability_logs import log_lines
from tests.integration.test_routing import HI, backend, routed

CHAT = "/v1/chat/completions"


def sdk(gw, **kwargs) -> openai.AsyncOpenAI:
    """The SDK as users construct it: default retries (two), only a short backoff for the test."""
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-test", timeout=20, **kwargs)


def cloud_route(url: str, **route: object) -> dict[str, object]:
    return routed([backend("cloud", url, "openai")],
                  {"models": ["gpt-4o-mini", "llama3.2"],
                   "targets": [{"backend": "cloud", "model": "qwen2.5:0.5b"}], **route})


@pytest.mark.parametrize("stream", [False, True])
async def test_a_relayed_cloud_500_reaches_the_backend_once(start_openai, start_gateway, stream):
    """A final 500 from an openai backend carries x-should-retry: false and the x-gateway headers."""
    cloud, url = await start_openai()
    cloud.script(CHAT, fo.status(500, "the cloud broke"))
    gw = await start_gateway(cloud_route(url))
    async with sdk(gw) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=stream)
    headers = caught.value.response.headers
    assert caught.value.status_code == 500
    assert headers["x-should-retry"] == "false"
    assert (headers["x-gateway-backend"], headers["x-gateway-model"]) == ("cloud", "qwen2.5:0.5b")
    assert len(cloud.bodies(CHAT)) == 1


async def test_a_failure_not_in_fallback_on_is_final(start_fake, start_gateway):
    """A primary 500 on a route falling back only on queue_full: 502, not retried by the SDK, one call."""
    primary, backup = await start_fake(), await start_fake()
    primary.fake.script("/api/chat", o.status(500, "broken"))
    gw = await start_gateway(routed([backend("primary", primary.url), backend("backup", backup.url)],
                                    {"targets": [{"backend": "primary"}], "fallback": [{"backend": "backup"}],
                                     "fallback_on": ["queue_full"]}))
    async with sdk(gw) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="llama3.2", messages=HI)
    headers = caught.value.response.headers
    assert caught.value.status_code == 502
    assert headers["x-should-retry"] == "false"
    assert headers["x-gateway-backend"] == "primary"
    assert len(primary.fake.bodies("/api/chat")) == 1
    assert backup.fake.bodies("/api/chat") == []


async def test_a_cloud_answer_carries_the_clients_model_name(start_openai, start_gateway):
    """The body says the model the client asked for; the backend's name stays in x-gateway-model."""
    cloud, url = await start_openai(models=("qwen2.5:0.5b",))
    gw = await start_gateway(cloud_route(url))
    async with sdk(gw) as client:
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
        legacy = await client.completions.create(model="gpt-4o-mini", prompt="Say hi")
    assert raw.parse().model == "gpt-4o-mini"
    assert raw.headers["x-gateway-model"] == "qwen2.5:0.5b"
    assert legacy.model == "gpt-4o-mini"
    assert cloud.bodies(CHAT)[0]["model"] == "qwen2.5:0.5b"


async def test_every_streamed_cloud_chunk_carries_the_clients_model_name(start_openai, start_gateway):
    """Each SSE chunk of a cloud stream names the client's model, and the client gets no usage chunk it did
    not ask for, though the gateway asked the cloud for one."""
    cloud, url = await start_openai(models=("qwen2.5:0.5b",))
    gw = await start_gateway(cloud_route(url))
    async with sdk(gw) as client:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
        chunks = [chunk async for chunk in stream]
    assert [c.model for c in chunks] == ["gpt-4o-mini"] * 5
    assert all(c.choices and c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from the cloud"
    assert cloud.bodies(CHAT)[0]["stream_options"] == {"include_usage": True}


async def test_a_streamed_cloud_answer_keeps_the_usage_the_client_asked_for(start_openai, start_gateway):
    """With include_usage the client gets the cloud's usage chunk, renamed like the others."""
    cloud, url = await start_openai(models=("qwen2.5:0.5b",))
    gw = await start_gateway(cloud_route(url))
    async with sdk(gw) as client:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True,
                                                      stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == [] and chunks[-1].model == "gpt-4o-mini"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


async def test_a_streamed_cloud_answer_is_metered_with_its_tokens(start_openai, start_gateway, tmp_path: Path):
    """The request log and proxy_tokens_total count a cloud stream's real tokens, not 0."""
    cloud, url = await start_openai(models=("qwen2.5:0.5b",))
    raw = cloud_route(url)
    raw["logging"] = {"requests": True, "file": str(tmp_path / "requests.log")}
    gw = await start_gateway(raw)
    async with aiohttp.ClientSession() as http:
        payload = {"model": "llama3.2", "messages": HI, "stream": True}
        async with http.post(gw.url + CHAT, json=payload) as resp:
            text = await resp.text()
    assert '"usage"' not in text and text.endswith("data: [DONE]\n\n")
    record = orjson.loads((await log_lines(tmp_path / "requests.log", 1))[0])
    assert (record["prompt_tokens"], record["completion_tokens"]) == (5, 4)
    labels = {"route": "chat", "model": "llama3.2", "backend": "cloud"}
    key = series("proxy_tokens_total", **labels, kind="completion")
    await eventually(lambda: scrape(gw).get(key) == 4.0, )
    assert scrape(gw)[series("proxy_tokens_total", **labels, kind="prompt")] == 5.0
