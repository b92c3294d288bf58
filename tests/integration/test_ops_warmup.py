"""Warm-up: ``ops.warmup`` models are loaded in the background at startup; /readyz waits for them."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from proxy.background.health import check_all
from tests.fakes.ollama import slow


def _config(url: str, warmup: list[Any], **ops: Any) -> dict[str, Any]:
    return {"backends": [{"name": "local", "type": "ollama", "url": url}], "logging": {"requests": False},
            "ops": {"warmup": warmup, **ops}}


async def _readyz(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url + "/readyz") as resp:
        return resp.status, await resp.json()


async def _until_ready(url: str) -> dict[str, Any]:
    for _ in range(200):
        status, body = await _readyz(url)
        if status == 200:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"never ready: {body}")


async def test_warmup_sends_a_load_request_per_model(start_fake, start_gateway):
    """Each warm-up model gets one prompt-less /api/generate carrying ops.warmup_keep_alive."""
    local = await start_fake(models=["llama3.2:latest", "nomic-embed-text:latest"])
    gateway = await start_gateway(_config(local.url, [{"backend": "local", "model": "llama3.2:latest"},
                                                      "nomic-embed-text:latest"], warmup_keep_alive="30m"))
    await check_all(gateway.backends)
    await _until_ready(gateway.url)
    assert local.fake.bodies("/api/generate") == [
        {"model": "llama3.2:latest", "keep_alive": "30m"},
        {"model": "nomic-embed-text:latest", "keep_alive": "30m"},
    ]
    assert gateway.warmup.states == {("local", "llama3.2:latest"): "ready", ("local", "nomic-embed-text:latest"): "ready"}


async def test_readiness_waits_for_warmup_while_the_gateway_serves(start_fake, start_gateway):
    """/readyz is 503 with a `warming` list during a slow load; chat requests are answered meanwhile."""
    local = await start_fake(models=["llama3.2:latest"])
    local.fake.script("/api/generate", slow(1.0))
    gateway = await start_gateway(_config(local.url, [{"backend": "local", "model": "llama3.2:latest"}]))
    await check_all(gateway.backends)
    status, body = await _readyz(gateway.url)
    assert status == 503 and body["warming"] == ["local/llama3.2:latest"]
    async with gateway.client() as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Hello world"
    assert (await _until_ready(gateway.url))["warming"] == []
    assert local.fake.bodies("/api/generate") == [{"model": "llama3.2:latest"}]


async def test_a_failed_warmup_does_not_block_readiness(start_fake, start_gateway):
    """A warm-up model the backend lacks fails (logged, in /status) and readiness still turns green."""
    local = await start_fake(models=["llama3.2:latest"])
    gateway = await start_gateway(_config(local.url, [{"backend": "local", "model": "ghost:1b"}]))
    await check_all(gateway.backends)
    await _until_ready(gateway.url)
    state = gateway.warmup.states[("local", "ghost:1b")]
    assert state.startswith("failed") and "not found" in state


async def test_a_missing_warmup_model_is_pulled_first_when_auto_pull_allows(start_fake, start_gateway):
    """With auto-pull allowing it, a warm-up model that is missing is pulled, then loaded."""
    local = await start_fake(models=[])
    gateway = await start_gateway(_config(local.url, [{"backend": "local", "model": "qwen2.5:0.5b"}],
                                          auto_pull={"enabled": True, "models": ["qwen*"]}))
    await check_all(gateway.backends)
    await _until_ready(gateway.url)
    assert local.fake.bodies("/api/pull") == [{"model": "qwen2.5:0.5b", "stream": True}]
    assert len(local.fake.bodies("/api/generate")) == 2
    assert gateway.warmup.states[("local", "qwen2.5:0.5b")] == "ready"
