"""Auto-pull: a model missing on an Ollama backend is pulled once, however many requests wait for it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import openai
import orjson
from aiohttp import web

from tests.fakes.ollama import FakeOllama, slow

CHAT = [{"role": "user", "content": "hi"}]


def _config(url: str, *, spare: str | None = None, enabled: bool = True, timeout: float = 10.0,
            models: tuple[str, ...] = ("llama3.2*",)) -> dict[str, Any]:
    backends = [{"name": "local", "type": "ollama", "url": url}]
    route: dict[str, Any] = {"name": "chat", "models": ["*"], "targets": [{"backend": "local"}]}
    if spare is not None:
        backends.append({"name": "spare", "type": "ollama", "url": spare})
        route["fallback"] = [{"backend": "spare"}]
    return {"backends": backends, "routes": [route], "logging": {"requests": False},
            "ops": {"auto_pull": {"enabled": enabled, "models": list(models), "timeout": timeout}}}


def pull_error(message: str):  # noqa: ANN201 - a FakeOllama behaviour
    """Ollama's way of failing a pull: a 200 stream whose last line is ``{"error": ...}``."""

    async def behave(fake: FakeOllama, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(orjson.dumps({"status": "pulling manifest"}) + b"\n")
        await asyncio.sleep(0.05)
        await resp.write(orjson.dumps({"error": message}) + b"\n")
        await resp.write_eof()
        return resp

    return behave


async def _ask_ten(gateway: Any, model: str = "llama3.2") -> list[Any]:
    async with gateway.client() as client:
        calls = [client.chat.completions.create(model=model, messages=CHAT) for _ in range(10)]
        return await asyncio.gather(*calls, return_exceptions=True)


async def test_ten_concurrent_requests_trigger_one_pull_and_all_succeed(start_fake, start_gateway):
    """Ten requests for a missing, allowed model: one /api/pull, then each request is retried and answered."""
    local = await start_fake(models=[])
    gateway = await start_gateway(_config(local.url))
    answers = await _ask_ten(gateway)
    assert [a.choices[0].message.content for a in answers] == ["Hello world"] * 10
    assert local.fake.bodies("/api/pull") == [{"model": "llama3.2", "stream": True}]
    assert "llama3.2" in local.fake.models
    async with aiohttp.ClientSession() as session, session.get(gateway.url + "/status") as resp:
        pulls = (await resp.json())["pulls"]
    assert pulls[0]["model"] == "llama3.2" and pulls[0]["state"] == "done" and pulls[0]["percent"] == 100.0
    assert pulls[0]["trigger"] == "auto"


async def test_a_failed_pull_is_a_clear_error_for_every_waiter(start_fake, start_gateway):
    """A pull that streams an error line is tried once; each request gets a 404 naming the pull failure."""
    local = await start_fake(models=[])
    local.fake.pull_behaviour = pull_error("pull model manifest: file does not exist")
    gateway = await start_gateway(_config(local.url))
    started = time.monotonic()
    answers = await _ask_ten(gateway)
    assert time.monotonic() - started < 5
    assert all(isinstance(a, openai.NotFoundError) for a in answers), answers
    message = answers[0].body["message"]
    assert "auto-pull failed" in message and "file does not exist" in message
    assert len(local.fake.bodies("/api/pull")) == 1


async def test_a_failed_pull_falls_back_as_the_route_says(start_fake, start_gateway):
    """When the pull fails, the route's fallback serves the request."""
    local, spare = await start_fake(models=[]), await start_fake(models=["llama3.2"])
    local.fake.pull_behaviour = pull_error("registry unreachable")
    gateway = await start_gateway(_config(local.url, spare=spare.url))
    answers = await _ask_ten(gateway)
    assert [a.choices[0].message.content for a in answers] == ["Hello world"] * 10
    assert len(local.fake.bodies("/api/pull")) == 1
    assert len(spare.fake.bodies("/api/chat")) == 10


async def test_a_slow_pull_times_out_and_the_route_falls_back(start_fake, start_gateway):
    """Callers wait ops.auto_pull.timeout at most, then fall back; the pull itself is still sent once."""
    local, spare = await start_fake(models=[]), await start_fake(models=["llama3.2"])
    local.fake.pull_behaviour = slow(30)
    gateway = await start_gateway(_config(local.url, spare=spare.url, timeout=0.3))
    started = time.monotonic()
    answers = await _ask_ten(gateway)
    assert time.monotonic() - started < 5
    assert [a.choices[0].message.content for a in answers] == ["Hello world"] * 10
    assert len(local.fake.bodies("/api/pull")) == 1
    assert gateway.puller.board.snapshot()[0]["state"] == "pulling"


async def test_a_slow_pull_without_fallback_answers_404_with_the_reason(start_fake, start_gateway):
    """Without a fallback, the timed-out caller gets the model-not-found error, saying the pull goes on."""
    local = await start_fake(models=[])
    local.fake.pull_behaviour = slow(30)
    gateway = await start_gateway(_config(local.url, timeout=0.2))
    async with gateway.client() as client:
        try:
            await client.chat.completions.create(model="llama3.2", messages=CHAT)
        except openai.NotFoundError as exc:
            assert "did not finish within 0.2s" in exc.body["message"]
        else:
            raise AssertionError("expected a 404")


async def test_nothing_is_pulled_when_auto_pull_is_off_or_the_model_is_not_allowed(start_fake, start_gateway):
    """Auto-pull is off by default and limited to its allow-list of globs."""
    off, listed = await start_fake(models=[]), await start_fake(models=[])
    for fake, config in ((off, _config(off.url, enabled=False)), (listed, _config(listed.url, models=("qwen*",)))):
        gateway = await start_gateway(config)
        async with gateway.client() as client:
            try:
                await client.chat.completions.create(model="llama3.2", messages=CHAT)
            except openai.NotFoundError as exc:
                assert "auto-pull" not in exc.body["message"]
            else:
                raise AssertionError("expected a 404")
        assert fake.fake.bodies("/api/pull") == []


async def test_a_streamed_request_is_pulled_for_then_streamed(start_fake, start_gateway):
    """The pull happens before the stream commits, so a streaming client just sees a slower first token."""
    local = await start_fake(models=[])
    gateway = await start_gateway(_config(local.url))
    async with gateway.client() as client:
        stream = await client.chat.completions.create(model="llama3.2", messages=CHAT, stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == "Hello world"
    assert len(local.fake.bodies("/api/pull")) == 1
