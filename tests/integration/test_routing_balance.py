"""Choosing among backends: circuit breakers, loaded-model preference, sticky splits and retries."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from proxy.background.health import check_all
from tests.fakes import ollama as o
from tests.integration.test_routing import HI, backend, primary_then, routed


async def _chat_backend(client: openai.AsyncOpenAI, **kwargs: object) -> str:
    """Send one chat; return the backend that served it (from ``x-gateway-backend``)."""
    raw = await client.chat.completions.with_raw_response.create(model="llama3.2", messages=HI, **kwargs)
    assert raw.parse().choices[0].message.content
    return raw.headers["x-gateway-backend"]


async def test_breaker_skips_a_dead_backend_until_cooldown(start_fake, start_gateway):
    """After ``failures`` errors the dead backend gets no requests until the cooldown lets one probe through."""
    dead, backup = await start_fake(), await start_fake()
    dead.fake.down = True
    gw = await start_gateway(routed([backend("dead", dead.url), backend("backup", backup.url)],
                                    primary_then("dead", "backup"), breaker={"failures": 2, "cooldown": 1.0}))
    async with gw.client() as client:
        served = [await _chat_backend(client) for _ in range(5)]
        assert len(dead.fake.bodies("/api/chat")) == 2
        await asyncio.sleep(1.1)
        served.append(await _chat_backend(client))
    assert served == ["backup"] * 6
    assert len(dead.fake.bodies("/api/chat")) == 3  # the one half-open probe after the cooldown
    assert gw.backends.breakers["dead"].state == "open"


async def test_prefers_the_backend_with_the_model_loaded(start_fake, start_gateway):
    """In a pool, the backend whose /api/ps lists the model gets the requests."""
    cold, warm = await start_fake(), await start_fake(running=["llama3.2:latest"])
    route = {"targets": [{"backend": ["cold", "warm"]}]}
    gw = await start_gateway(routed([backend("cold", cold.url), backend("warm", warm.url)], route))
    await check_all(gw.backends)
    async with gw.client() as client:
        served = [await _chat_backend(client) for _ in range(3)]
    assert served == ["warm"] * 3
    assert cold.fake.bodies("/api/chat") == []


async def test_pool_without_loaded_model_uses_the_first_idle_backend(start_fake, start_gateway):
    """With nothing loaded anywhere, ties go to the order the pool lists its backends."""
    a, b = await start_fake(), await start_fake()
    gw = await start_gateway(routed([backend("a", a.url), backend("b", b.url)],
                                    {"targets": [{"backend": ["a", "b"]}]}))
    await check_all(gw.backends)
    async with gw.client() as client:
        assert await _chat_backend(client) == "a"


async def test_sticky_split_keeps_a_user_on_one_backend(start_fake, start_gateway):
    """The same ``user`` always lands on the same arm of a 50/50 split; different users use both."""
    a, b = await start_fake(), await start_fake()
    route = {"targets": [{"backend": "a", "weight": 50}, {"backend": "b", "weight": 50}], "sticky": ["user"]}
    gw = await start_gateway(routed([backend("a", a.url), backend("b", b.url)], route))
    async with gw.client() as client:
        for user in ("alice", "bob", "carol"):
            assert len({await _chat_backend(client, user=user) for _ in range(4)}) == 1
        arms = {await _chat_backend(client, user=f"user-{i}") for i in range(24)}
    assert arms == {"a", "b"}


async def test_sticky_split_by_session_header(start_fake, start_gateway):
    """With ``sticky: [header:X-Session-Id]`` one session id always gets the same backend."""
    a, b = await start_fake(), await start_fake()
    route = {"targets": [{"backend": "a"}, {"backend": "b"}], "sticky": ["header:X-Session-Id"]}
    gw = await start_gateway(routed([backend("a", a.url), backend("b", b.url)], route))
    async with gw.client() as client:
        per_session = [{await _chat_backend(client, extra_headers={"X-Session-Id": f"s{i}"}) for _ in range(3)}
                       for i in range(16)]
    assert all(len(arms) == 1 for arms in per_session)
    assert set().union(*per_session) == {"a", "b"}


async def test_retry_waits_for_retry_after_on_429(start_fake, start_gateway):
    """A 429 with Retry-After is retried on the same backend after at least that long."""
    busy = await start_fake()
    busy.fake.script("/api/chat", o.status(429, "busy", headers={"Retry-After": "0.4"}), o.ok())
    route = {"targets": [{"backend": "busy"}], "retry": {"attempts": 2, "base_delay": 0.01, "budget": 5}}
    gw = await start_gateway(routed([backend("busy", busy.url)], route))
    started = time.perf_counter()
    async with gw.client() as client:
        assert await _chat_backend(client) == "busy"
    assert time.perf_counter() - started >= 0.4
    assert len(busy.fake.bodies("/api/chat")) == 2


async def test_retry_after_beyond_the_budget_is_not_waited_for(start_fake, start_gateway):
    """A Retry-After longer than the retry budget ends retries at once and the 429 reaches the client."""
    busy = await start_fake()
    busy.fake.script("/api/chat", o.status(429, "busy", headers={"Retry-After": "30"}))
    route = {"targets": [{"backend": "busy"}], "retry": {"attempts": 3, "budget": 2}}
    gw = await start_gateway(routed([backend("busy", busy.url)], route))
    started = time.perf_counter()
    async with gw.client() as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="llama3.2", messages=HI)
    assert caught.value.response.headers["Retry-After"] == "30"
    assert time.perf_counter() - started < 1.5
    assert len(busy.fake.bodies("/api/chat")) == 1
