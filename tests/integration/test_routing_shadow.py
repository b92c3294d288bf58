"""Shadow mode: a copy of the traffic goes to a candidate backend, and the client never notices."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.fakes import ollama as o
from tests.fakes import openai as fo
from tests.integration.test_routing import HI, backend, routed


def _shadowed(primary_url: str, shadow: dict[str, object], *, shadow_timeouts: dict[str, float] | None = None,
              kind: str = "ollama") -> dict[str, object]:
    backends = [backend("primary", primary_url),
                backend("candidate", str(shadow.pop("url")), kind, timeouts=shadow_timeouts or {})]
    route = {"targets": [{"backend": "primary"}], "options": {"num_ctx": 4096},
             "shadow": {"backend": "candidate", "share": 1.0, **shadow}}
    return routed(backends, route)


async def _shadows_done(gw) -> None:
    """Wait (bounded) until no shadow task is left in the gateway's background set."""
    async with asyncio.timeout(5):
        while any(task.get_name() == "shadow" for task in gw.tasks.running):
            await asyncio.sleep(0.02)


def _metric(gw, line_start: str) -> float:
    body = gw.metrics.render()[0].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(line_start))


@pytest.mark.parametrize("stream", [False, True])
async def test_shadow_gets_a_copy_and_the_client_the_primary_answer(start_fake, start_gateway, stream):
    """With share 1.0 the shadow backend receives a non-streamed copy; the client sees only the primary."""
    primary, candidate = await start_fake(), await start_fake(models=["qwen3:4b"])
    candidate.fake.script("/api/chat", o.ok("shadow answer"))
    gw = await start_gateway(_shadowed(primary.url, {"url": candidate.url, "model": "qwen3:4b"}))
    async with gw.client() as client:
        if stream:
            chunks = await client.chat.completions.create(model="llama3.2", messages=HI, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        else:
            text = (await client.chat.completions.create(model="llama3.2", messages=HI)).choices[0].message.content
    assert text == "Hello world"
    await _shadows_done(gw)
    (copy,) = candidate.fake.bodies("/api/chat")
    assert copy["model"] == "qwen3:4b" and copy["stream"] is False
    assert copy["messages"] == HI and copy["options"]["num_ctx"] == 4096
    assert _metric(gw, 'proxy_shadow_requests_total{backend="candidate",outcome="ok",route="chat"}') == 1
    assert _metric(gw, 'proxy_shadow_tokens_total{backend="candidate",kind="completion"') == 2


async def test_hanging_shadow_neither_slows_nor_fails_the_primary(start_fake, start_gateway):
    """A shadow that never answers leaves the client's latency alone and ends on its own timeout."""
    primary, candidate = await start_fake(), await start_fake()
    candidate.fake.script("/api/chat", o.hang())
    gw = await start_gateway(_shadowed(primary.url, {"url": candidate.url},
                                       shadow_timeouts={"first_byte": 2.0, "read": 2.0}))
    async with gw.client() as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=HI)
    # the client has its answer while the shadow is still waiting on its 2 s timeout
    assert any(task.get_name() == "shadow" and not task.done() for task in gw.tasks.running)
    assert answer.choices[0].message.content == "Hello world"
    await _shadows_done(gw)
    assert _metric(gw, 'proxy_shadow_requests_total{backend="candidate",outcome="timeout"') == 1
    assert gw.backends.upstreams["candidate"].outstanding == 0
    assert gw.backends.breakers["candidate"].consecutive == 0  # shadows do not feed the breaker


async def test_failing_shadow_is_recorded_not_returned(start_fake, start_openai, start_gateway):  # noqa: F811
    """A shadow's 5xx is counted in metrics while the client gets the primary's answer."""
    primary = await start_fake()
    cloud, url = await start_openai()
    cloud.script("/v1/chat/completions", fo.status(500, "cloud broke"))
    gw = await start_gateway(_shadowed(primary.url, {"url": url, "model": "gpt-4o-mini"}, kind="openai"))
    async with gw.client() as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=HI)
    assert answer.choices[0].message.content == "Hello world"
    await _shadows_done(gw)
    assert cloud.bodies("/v1/chat/completions")[0]["model"] == "gpt-4o-mini"
    assert _metric(gw, 'proxy_shadow_requests_total{backend="candidate",outcome="5xx"') == 1


async def test_shadow_share_below_one_mirrors_only_part(start_fake, start_gateway):
    """A share below 1 mirrors only some requests (the roll is the gateway's rng)."""
    primary, candidate = await start_fake(), await start_fake()
    config = _shadowed(primary.url, {"url": candidate.url, "share": 0.5})
    gw = await start_gateway(config, rng=random.Random(7))
    async with gw.client() as client:
        for _ in range(20):
            await client.chat.completions.create(model="llama3.2", messages=HI)
    await _shadows_done(gw)
    assert 0 < len(candidate.fake.bodies("/api/chat")) < 20
