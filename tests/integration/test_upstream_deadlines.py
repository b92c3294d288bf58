"""Backend deadlines (``timeouts`` of a backend): ``first_byte``, ``idle`` and ``read``, kept by the connection.

Through the real gateway for what a client sees; through ``Upstream`` itself for the calls the
gateway makes on its own behalf (warm-up, model changes) with ``send`` and ``read``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from policies.outcome import Outcome
from proxy.config import parse_config
from proxy.errors import UpstreamTimeoutError
from proxy.upstream.backend import Upstream
from tests.conftest import one_backend_config
from tests.fakes.ollama import hang

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
LINE = orjson.dumps({"model": "llama3.2", "created_at": "2026-11-24T10:00:00Z", "done": False,
                     "message": {"role": "assistant", "content": "t "}}) + b"\n"


def lines_then_silence(count: int, *, status: int = 200, length: str | None = None,
                       first: bytes = LINE) -> Any:
    """A behaviour that sends its headers, ``count`` times ``first``, then nothing for 10 s
    (counting a disconnect when the gateway gives up on it)."""

    async def behave(fake: Any, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        headers = {"Content-Type": "application/x-ndjson" if status == 200 else "application/json"}
        if length is not None:
            headers["Content-Length"] = length
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        for _ in range(count):
            await resp.write(first)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                if request.transport is None or request.transport.is_closing():
                    raise asyncio.CancelledError
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            fake.disconnects += 1
            raise
        return resp

    return behave


async def post(url: str, body: object) -> tuple[int, bytes, float]:
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions", json=body) as resp:
            return resp.status, await resp.read(), time.monotonic() - started


def sse_events(raw: bytes) -> list[Any]:
    return ["[DONE]" if frame == b"data: [DONE]" else orjson.loads(frame[6:])
            for frame in raw.split(b"\n\n") if frame.startswith(b"data: ")]


async def disconnected(fake: Any) -> int:
    for _ in range(100):
        if fake.disconnects:
            break
        await asyncio.sleep(0.02)
    return int(fake.disconnects)


async def start(start_gateway: Any, url: str, **timeouts: float) -> Any:
    raw = one_backend_config(url)
    raw["backends"][0]["timeouts"] = timeouts
    return await start_gateway(raw)


async def test_a_stream_silent_longer_than_idle_after_its_first_lines_ends_with_a_timeout_event(
        fake_ollama, start_gateway):
    """Two lines, then silence beyond ``idle``: the committed stream ends with an upstream_timeout
    event and no [DONE], and the backend connection is dropped."""
    fake_ollama.fake.script("/api/chat", lines_then_silence(2))
    gw = await start(start_gateway, fake_ollama.url, idle=0.3, first_byte=20, read=20)
    code, body, elapsed = await post(gw.url, {**CHAT, "stream": True})
    events = sse_events(body)
    assert code == 200
    assert [e["choices"][0]["delta"].get("content") for e in events[:-1]] == ["t ", "t "]
    assert events[-1] == {"error": {"message": "backend local stopped sending", "type": "api_error",
                                    "param": None, "code": "upstream_timeout"}}
    assert elapsed < 5
    assert await disconnected(fake_ollama.fake) == 1


async def test_a_stream_with_headers_but_no_line_by_first_byte_is_504(fake_ollama, start_gateway):
    """Headers at once, then nothing: ``first_byte`` (not the longer ``idle``) bounds the wait for
    the first line, and nothing was committed."""
    fake_ollama.fake.script("/api/chat", lines_then_silence(0))
    gw = await start(start_gateway, fake_ollama.url, first_byte=0.3, idle=20, read=20)
    code, body, elapsed = await post(gw.url, {**CHAT, "stream": True})
    assert code == 504
    assert orjson.loads(body)["error"]["code"] == "upstream_timeout"
    assert elapsed < 5
    assert await disconnected(fake_ollama.fake) == 1


async def test_a_streamed_request_unanswered_by_first_byte_is_504(fake_ollama, start_gateway):
    """No headers within ``first_byte`` for a streamed request: 504 and the backend is disconnected."""
    fake_ollama.fake.script("/api/chat", hang(10))
    gw = await start(start_gateway, fake_ollama.url, first_byte=0.3, idle=20, read=20)
    code, body, elapsed = await post(gw.url, {**CHAT, "stream": True})
    assert code == 504
    assert orjson.loads(body)["error"] == {"message": "backend local did not answer in time", "type": "api_error",
                                           "param": None, "code": "upstream_timeout"}
    assert elapsed < 5
    assert await disconnected(fake_ollama.fake) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "streamed"])
async def test_an_error_body_that_stalls_is_cut_after_idle(fake_ollama, start_gateway, stream):
    """A 500 whose body never completes is read for ``idle`` at most; what arrived is the message."""
    fake_ollama.fake.script("/api/chat", lines_then_silence(1, status=500, length="100",
                                                            first=b'{"error":"CUDA error"}'))
    gw = await start(start_gateway, fake_ollama.url, idle=0.3, first_byte=20, read=20)
    code, body, elapsed = await post(gw.url, {**CHAT, "stream": stream})
    assert code == 502
    assert orjson.loads(body)["error"] == {"message": "backend local failed: CUDA error", "type": "api_error",
                                           "param": None, "code": "upstream_error"}
    assert elapsed < 5
    assert await disconnected(fake_ollama.fake) == 1


def _upstream(url: str, **timeouts: float) -> Upstream:
    raw = one_backend_config(url)
    raw["backends"][0]["timeouts"] = timeouts
    return Upstream(parse_config(raw, {}).backends[0])


async def test_read_after_send_is_bounded_by_read_not_first_byte(aiohttp_server):
    """``send`` then ``read``: once the answer started, ``read`` bounds the body, so a body slower
    than ``first_byte`` still arrives, and one slower than ``read`` is a timeout."""
    app = web.Application()

    async def slow_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "4"})
        await resp.prepare(request)
        await resp.write(b"ab")
        await asyncio.sleep(float(request.query["pause"]))
        await resp.write(b"cd")
        return resp

    app.router.add_post("/api/generate", slow_body)
    url = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    upstream = _upstream(url, first_byte=0.2, read=1.0)
    resp = await upstream.send("POST", "/api/generate?pause=0.4", b"{}")
    assert await resp.read() == b"abcd"
    resp = await upstream.send("POST", "/api/generate?pause=5", b"{}")
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError) as caught:
        await resp.read()
    assert time.monotonic() - started < 3
    assert (caught.value.outcome, caught.value.message) == (Outcome.TIMEOUT, "backend local stopped sending")
    assert upstream.pool.in_use == 0
    await upstream.pool.close()


async def test_a_consumer_holding_a_chunk_past_idle_loses_the_backend_connection(aiohttp_server):
    """The idle deadline runs while the consumer holds a chunk: at ``idle`` the backend is
    disconnected (it stops generating), the consumer's own awaits are not cancelled, and its next
    read is a timeout."""
    app = web.Application()
    gone = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            while True:
                await resp.write(LINE)
                await asyncio.sleep(0.02)
        except (ConnectionError, asyncio.CancelledError):
            gone.set()
            raise

    app.router.add_post("/api/chat", endless)
    url = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    upstream = _upstream(url, idle=0.3, first_byte=20)
    resp = await upstream.send("POST", "/api/chat", b"{}")
    chunks = resp.chunks()
    assert (await anext(chunks)).startswith(LINE)  # the first, by first_byte (20 s)
    assert (await anext(chunks)).startswith(LINE)  # the next, within idle of asking for it
    await asyncio.wait_for(gone.wait(), 5)  # the consumer holds it; the backend is let go at idle
    with pytest.raises(UpstreamTimeoutError) as caught:
        async for _ in chunks:  # what arrived before the deadline, then the timeout
            pass
    assert (caught.value.outcome, caught.value.message) == (Outcome.TIMEOUT, "backend local stopped sending")
    assert upstream.pool.in_use == 0
    await upstream.pool.close()
