"""What every door leaves in the request log and the metrics, whatever the door."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import pytest

from tests.integration.test_observability import samples
from tests.integration.test_observability_logs import log_lines


async def test_left_out_tools_are_in_the_request_log(start_fake, start_gateway, tmp_path):
    """A Responses request with hosted tools: the log line names the tools Ollama never saw."""
    local = await start_fake()
    raw = {"backends": [{"name": "local", "type": "ollama", "url": local.url}],
           "logging": {"requests": True, "file": str(tmp_path / "requests.log")}}
    gw = await start_gateway(raw)
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
        await client.responses.create(model="llama3.2", input="hi",
                                      tools=[{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["v"]}])
    (line,) = await log_lines(tmp_path / "requests.log", 1)
    assert json.loads(line)["ignored_tools"] == ["web_search", "file_search"]


async def test_native_calls_refused_before_routing_are_counted(start_fake, start_gateway):
    """A bad native /api/chat body and an unknown model: counted in proxy_requests_total like /v1/* refusals."""
    local = await start_fake()
    gw = await start_gateway({"backends": [{"name": "local", "type": "ollama", "url": local.url}],
                              "routes": [{"name": "only", "models": ["llama3.2"], "targets": [{"backend": "local"}]}],
                              "logging": {"requests": False}})
    async with aiohttp.ClientSession() as session:
        for body in (b"{not json", json.dumps({"model": "nope", "messages": []}).encode()):
            async with session.post(gw.url + "/api/chat", data=body) as resp:
                assert resp.status in (400, 404)
                assert isinstance((await resp.json())["error"], str)
    from prometheus_client import generate_latest

    found: dict[str, Any] = samples(generate_latest(gw.metrics.registry).decode())
    refused = {k: v for k, v in found.items() if k.startswith("proxy_requests_total") and 'route="-"' in k}
    assert sum(refused.values()) == 2


async def test_a_weight_0_arm_reads_0_in_the_metrics(start_fake, start_gateway):
    """A 100/0 split: three requests, arm ``a`` counts 3 and arm ``b`` exists at 0 (not missing)."""
    from prometheus_client import generate_latest

    local = await start_fake()
    gw = await start_gateway({"backends": [{"name": "a", "type": "ollama", "url": local.url},
                                           {"name": "b", "type": "ollama", "url": local.url}],
                              "routes": [{"name": "split", "models": ["llama3.2"],
                                          "targets": [{"backend": "a", "weight": 100}, {"backend": "b", "weight": 0}]}],
                              "logging": {"requests": False}})
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
        for _ in range(3):
            await client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    found = samples(generate_latest(gw.metrics.registry).decode())
    arms = {k: v for k, v in found.items() if k.startswith("proxy_split_arm_total")}
    assert arms == {'proxy_split_arm_total{arm="a:*",route="split"}': 3.0, 'proxy_split_arm_total{arm="b:*",route="split"}': 0.0}


async def test_a_route_can_refuse_hosted_tools_and_cap_max_tokens(start_fake, start_gateway):
    """``hosted_tools: refuse`` makes web_search a 400 on Responses and Messages; ``max_output_tokens`` caps
    what a Messages request asks for instead of refusing it."""
    import anthropic

    local = await start_fake()
    gw = await start_gateway({"backends": [{"name": "local", "type": "ollama", "url": local.url}],
                              "routes": [{"name": "strict", "models": ["*"], "targets": [{"backend": "local", "model": "llama3.2"}],
                                          "hosted_tools": "refuse", "max_output_tokens": 512}],
                              "logging": {"requests": False}})
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError, match="web_search"):
            await client.responses.create(model="llama3.2", input="hi", tools=[{"type": "web_search"}])
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="x", max_retries=0) as claude:
        with pytest.raises(anthropic.BadRequestError):
            await claude.messages.create(model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi"}],
                                         tools=[{"type": "web_search_20250305", "name": "web_search"}])
        await claude.messages.create(model="claude-x", max_tokens=16000, messages=[{"role": "user", "content": "hi"}])
    assert local.fake.bodies("/api/chat")[-1]["options"]["num_predict"] == 512
