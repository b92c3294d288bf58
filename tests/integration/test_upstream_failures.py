"""Backend failures that must not make the gateway run a generation twice, through the real gateway.

A backend that read a request and hung up may have run it: no resend, no retry on the same target.
A client that leaves while a backend's error answer is still arriving ends the request there: no
fallback runs a generation for nobody.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.integration.test_http1 import raw_server  # noqa: F401  (the raw TCP server fixture)
from tests.integration.test_observability_logs import log_lines
from tests.integration.test_routing import backend, primary_then, routed

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = orjson.dumps({"model": "llama3.2", "created_at": "2026-11-24T10:00:00Z", "done": True,
                       "done_reason": "stop", "message": {"role": "assistant", "content": "hi there"},
                       "prompt_eval_count": 2, "eval_count": 2})


async def post(url: str, body: object) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions", json=body) as resp:
            return resp.status, await resp.read()


async def test_a_chat_the_backend_read_before_hanging_up_runs_once_and_is_a_502(raw_server, start_gateway):  # noqa: F811
    """The second chat goes out on the kept-alive connection; the backend reads it whole and closes
    without answering. Even with retries configured it is not sent again: 502 broken stream."""
    chats: list[bytes] = []

    def answer(number: int, raw: bytes) -> tuple[bytes, bool]:
        chats.append(raw.split(b"\r\n\r\n", 1)[1])
        if number > 1:
            return b"", True
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            len(ANSWER), ANSWER), False

    url, connections = await raw_server(answer)
    gw = await start_gateway(routed([backend("raw", url)], {"targets": [{"backend": "raw"}],
                                                            "retry": {"attempts": 2, "base_delay": 0.01}}))
    code, body = await post(gw.url, CHAT)
    assert code == 200 and orjson.loads(body)["choices"][0]["message"]["content"] == "hi there"
    code, body = await post(gw.url, {**CHAT, "messages": [{"role": "user", "content": "again"}]})
    assert code == 502
    assert orjson.loads(body)["error"] == {"message": "backend raw closed the connection without answering",
                                           "type": "api_error", "param": None, "code": "upstream_broken_stream"}
    assert [orjson.loads(c)["messages"][0]["content"] for c in chats] == ["hi", "again"]
    assert connections[0] == 1


@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "streamed"])
async def test_a_client_gone_while_an_error_body_arrives_gets_no_fallback(start_fake, start_gateway, tmp_path,
                                                                          stream):
    """The primary answers 500 and sends its error body slowly; the client leaves meanwhile. The
    fallback backend sees no request and the request log says client_disconnect."""
    primary, fallback = await start_fake(), await start_fake()
    error_started = asyncio.Event()

    async def slow_error_body(fake: Any, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(status=500, headers={"Content-Type": "application/json", "Content-Length": "24"})
        await resp.prepare(request)
        await resp.write(b'{"error": "CUDA')
        error_started.set()
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                if request.transport is None or request.transport.is_closing():
                    raise asyncio.CancelledError
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            fake.disconnects += 1
            raise
        await resp.write(b' error"}\n')
        return resp

    primary.fake.script("/api/chat", slow_error_body)
    raw = routed([backend("primary", primary.url), backend("fallback", fallback.url)],
                 primary_then("primary", "fallback"))
    raw["logging"] = {"requests": True, "file": str(tmp_path / "requests.log")}
    gw = await start_gateway(raw)
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(session.post(gw.url + "/v1/chat/completions", json={**CHAT, "stream": stream}))
        await asyncio.wait_for(error_started.wait(), 5)
        await asyncio.sleep(0.1)  # the gateway is now reading the error body
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    record = orjson.loads((await log_lines(tmp_path / "requests.log", 1))[0])
    assert {k: record[k] for k in ("outcome", "status", "backend", "fallback_path")} == {
        "outcome": "client_disconnect", "status": 499, "backend": "primary", "fallback_path": ["primary:llama3.2"]}
    assert fallback.fake.bodies("/api/chat") == []
    for _ in range(100):
        if primary.fake.disconnects:
            break
        await asyncio.sleep(0.02)
    assert primary.fake.disconnects == 1


async def test_the_log_says_falling_back_only_when_an_attempt_follows(start_gateway, caplog) -> None:
    """A route whose only target is unreachable: the 502 is logged as "no fallback left", not as a
    fallback that never happens."""
    dead = "http://127.0.0.1:9"  # discard port: nothing listens on loopback
    gw = await start_gateway(routed([backend("dead", dead)], {"targets": [{"backend": "dead"}]}))
    with caplog.at_level("INFO", logger="proxy.router"):
        code, _ = await post(gw.url, CHAT)
    assert code == 502
    messages = [r.getMessage() for r in caplog.records if r.name == "proxy.router"]
    assert len(messages) == 1 and messages[0].endswith("backend dead failed (connect), no fallback left")
