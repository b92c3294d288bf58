"""Fallback between backends, through the official SDK: which failures move on, and which do not.

Also home of the small helpers the other ``test_routing_*`` modules share: a closed port, a route
builder and the fake OpenAI-compatible server fixture.
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import openai
import pytest

from tests.fakes import ollama as o

HI = [{"role": "user", "content": "hi"}]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, closed): connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def backend(name: str, url: str, kind: str = "ollama", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "url": url, **extra}


def routed(backends: list[dict[str, Any]], route: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A config with the given backends and one route (named ``chat``) for the model ``llama3.2``."""
    return {"backends": backends, "routes": [{"name": "chat", "models": ["llama3.2"], **route}],
            "logging": {"requests": False}, **extra}


def primary_then(first: str, *fallbacks: str, **route: Any) -> dict[str, Any]:
    """A route sending ``llama3.2`` to ``first``, then to each fallback backend in order."""
    return {"targets": [{"backend": first}], "fallback": [{"backend": name} for name in fallbacks], **route}


async def test_falls_back_when_primary_refuses_connections(start_fake, start_gateway):
    """A refused connection to the primary is skipped and the fallback's answer is returned."""
    backup = await start_fake()
    gw = await start_gateway(routed([backend("dead", f"http://127.0.0.1:{closed_port()}"),
                                     backend("backup", backup.url)], primary_then("dead", "backup")))
    async with gw.client() as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=HI)
    assert answer.choices[0].message.content == "Hello world"
    assert len(backup.fake.bodies("/api/chat")) == 1


async def test_falls_back_when_primary_hangs_past_first_byte_timeout(start_fake, start_gateway):
    """A primary silent beyond ``timeouts.first_byte`` is abandoned (connection closed) for the fallback."""
    slow, backup = await start_fake(), await start_fake()
    slow.fake.script("/api/chat", o.hang())
    gw = await start_gateway(routed([backend("slow", slow.url, timeouts={"first_byte": 0.3}),
                                     backend("backup", backup.url)], primary_then("slow", "backup")))
    async with gw.client() as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=HI)
    assert answer.choices[0].message.content == "Hello world"
    assert len(slow.fake.bodies("/api/chat")) == 1


@pytest.mark.parametrize("failure", [o.status(500, "CUDA error"), o.status(404, "model 'llama3.2' not found")],
                         ids=["5xx", "model-not-found"])
async def test_falls_back_on_status_errors(start_fake, start_gateway, failure):
    """A 5xx or a 404 (model not pulled there) from the primary moves on to the fallback."""
    primary, backup = await start_fake(), await start_fake()
    primary.fake.script("/api/chat", failure)
    gw = await start_gateway(routed([backend("primary", primary.url), backend("backup", backup.url)],
                                    primary_then("primary", "backup")))
    async with gw.client() as client:
        answer = await client.chat.completions.with_raw_response.create(model="llama3.2", messages=HI)
    assert answer.parse().choices[0].message.content == "Hello world"
    assert answer.headers["x-gateway-backend"] == "backup"


async def test_falls_back_on_stream_error_line_before_content(start_fake, start_gateway):
    """Ollama's ``{"error": ...}`` line before any content lets a streamed request fall back."""
    primary, backup = await start_fake(), await start_fake()
    primary.fake.script("/api/chat", o.error_line_after(0))
    gw = await start_gateway(routed([backend("primary", primary.url), backend("backup", backup.url)],
                                    primary_then("primary", "backup")))
    async with gw.client() as client:
        stream = await client.chat.completions.create(model="llama3.2", messages=HI, stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == "Hello world"
    assert len(backup.fake.bodies("/api/chat")) == 1


async def test_no_fallback_once_content_was_streamed(start_fake, start_gateway):
    """An error after content went out ends the stream with an SSE error event the SDK raises on."""
    primary, backup = await start_fake(), await start_fake()
    primary.fake.script("/api/chat", o.error_line_after(2, "model runner crashed"))
    gw = await start_gateway(routed([backend("primary", primary.url), backend("backup", backup.url)],
                                    primary_then("primary", "backup")))
    seen: list[str] = []
    async with gw.client() as client:
        stream = await client.chat.completions.create(model="llama3.2", messages=HI, stream=True)
        with pytest.raises(openai.APIError, match="model runner crashed"):
            async for chunk in stream:
                seen.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(seen) == "t0 t1 "
    assert backup.fake.bodies("/api/chat") == []


async def test_when_all_fail_the_last_error_is_final(start_fake, start_gateway):
    """With every attempt failed the client gets the last error, OpenAI-shaped, with x-should-retry: false."""
    first, second = await start_fake(), await start_fake()
    first.fake.script("/api/chat", o.status(500, "first broke"))
    second.fake.script("/api/chat", o.status(500, "second broke"))
    gw = await start_gateway(routed([backend("first", first.url), backend("second", second.url)],
                                    primary_then("first", "second")))
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", json={"model": "llama3.2", "messages": HI}) as resp:
            body = await resp.json()
            assert resp.status == 502
            assert resp.headers["x-should-retry"] == "false"
    assert body == {"error": {"message": "backend second failed: second broke", "type": "api_error",
                              "param": None, "code": "upstream_error"}}
    async with gw.client() as client:  # the SDK honours the header: no retries despite max_retries=2
        with pytest.raises(openai.InternalServerError):
            await client.with_options(max_retries=2).chat.completions.create(model="llama3.2", messages=HI)
    assert len(first.fake.bodies("/api/chat")) == len(second.fake.bodies("/api/chat")) == 2
