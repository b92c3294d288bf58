"""Failure modes through the real app: what the client receives and what Ollama saw."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.conftest import one_backend_config
from tests.fakes.ollama import error_line_after, hang, ok, slow, status, stream_forever, truncate_after

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}


async def post(url: str, body: object, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions", json=body, **kwargs) as resp:
            return resp.status, dict(resp.headers), await resp.read()


def sse_events(raw: bytes) -> list[object]:
    events = []
    for frame in raw.split(b"\n\n"):
        if frame.startswith(b"data: "):
            payload = frame[6:]
            events.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return events


async def test_first_byte_timeout_is_504(fake_ollama, start_gateway):
    """A backend that never answers gets a 504 after the first-byte timeout, and is disconnected."""
    fake_ollama.fake.script("/api/chat", hang(10))
    raw = one_backend_config(fake_ollama.url)
    raw["backends"][0]["timeouts"] = {"first_byte": 0.3}
    gw = await start_gateway(raw)
    code, headers, body = await post(gw.url, CHAT)
    assert code == 504
    assert orjson.loads(body)["error"]["code"] == "upstream_timeout"
    await asyncio.sleep(0.1)
    assert fake_ollama.fake.disconnects == 1


async def test_a_non_streamed_answer_that_stops_mid_body_is_504_after_the_read_timeout(fake_ollama, start_gateway):
    """Headers and half the body, then silence: the read timeout (not first_byte) ends it, and the
    backend connection is dropped."""

    async def half_then_silence(fake: Any, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "400"})
        await resp.prepare(request)
        await resp.write(b'{"model": "llama3.2", ')
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            fake.disconnects += 1
            raise
        return resp

    fake_ollama.fake.script("/api/chat", half_then_silence)
    raw = one_backend_config(fake_ollama.url)
    raw["backends"][0]["timeouts"] = {"first_byte": 20, "read": 0.3}  # first_byte outlasts the silence
    gw = await start_gateway(raw)
    code, _, body = await post(gw.url, CHAT)
    assert code == 504
    error = orjson.loads(body)["error"]
    assert error["code"] == "upstream_timeout" and "stopped sending" in error["message"]
    await asyncio.sleep(0.1)
    assert fake_ollama.fake.disconnects == 1


async def test_slow_backend_within_timeout_is_fine(gateway, fake_ollama):
    """A slow answer within the first-byte timeout is delivered normally."""
    fake_ollama.fake.script("/api/chat", slow(0.2, ok("late")))
    code, _, body = await post(gateway.url, CHAT)
    assert code == 200 and orjson.loads(body)["choices"][0]["message"]["content"] == "late"


async def test_unreachable_backend_is_502_naming_backend(start_gateway, unused_tcp_port):
    """A refused connection is a 502 naming the backend, not its address or credentials."""
    raw = {"backends": [{"name": "gpu1", "type": "ollama", "url": f"http://127.0.0.1:{unused_tcp_port}",
                         "username": "u", "password": "${PW}"}], "logging": {"requests": False}}
    gw = await start_gateway(raw, environ={"PW": "hunter2-secret"})
    code, headers, body = await post(gw.url, CHAT)
    error = orjson.loads(body)["error"]
    assert code == 502 and error["code"] == "upstream_unavailable"
    assert "gpu1" in error["message"]
    assert str(unused_tcp_port) not in error["message"] and "hunter2" not in body.decode()
    assert headers["x-should-retry"] == "false"


async def test_truncated_stream_before_content_is_502(gateway, fake_ollama):
    """A stream cut before any content is a normal 502 error response (nothing was committed)."""
    fake_ollama.fake.script("/api/chat", truncate_after(0))
    code, _, body = await post(gateway.url, {**CHAT, "stream": True})
    assert code == 502 and orjson.loads(body)["error"]["code"] == "upstream_broken_stream"


async def test_truncated_stream_after_content_ends_with_error_event(gateway, fake_ollama):
    """A stream cut after content ends with an SSE error event and no [DONE]."""
    fake_ollama.fake.script("/api/chat", truncate_after(3))
    code, headers, body = await post(gateway.url, {**CHAT, "stream": True})
    events = sse_events(body)
    assert code == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "upstream_broken_stream"
    assert [e["choices"][0]["delta"].get("content") for e in events[:-1]] == ["t0 ", "t1 ", "t2 "]


async def test_error_line_before_content_is_http_error(gateway, fake_ollama):
    """Ollama's error line before any content becomes a plain 502 (a fallback could still happen)."""
    fake_ollama.fake.script("/api/chat", error_line_after(0, "model runner crashed"))
    code, _, body = await post(gateway.url, {**CHAT, "stream": True})
    assert code == 502 and "model runner crashed" in orjson.loads(body)["error"]["message"]


async def test_error_line_mid_stream_becomes_sse_error(gateway, fake_ollama):
    """Ollama's mid-stream error line becomes data: {"error": ...} and the stream ends without [DONE]."""
    fake_ollama.fake.script("/api/chat", error_line_after(2, "out of memory"))
    code, _, body = await post(gateway.url, {**CHAT, "stream": True})
    events = sse_events(body)
    assert code == 200 and "[DONE]" not in events
    assert "out of memory" in events[-1]["error"]["message"]


async def test_status_errors_map_to_openai_statuses(gateway, fake_ollama):
    """Ollama 404/400/429/503 map to 404 model_not_found, 400, 429 with Retry-After, 503."""
    fake_ollama.fake.script("/api/chat", status(404, "model 'x' not found"), status(400, "\"x\" does not support tools"),
                            status(429, "slow down", {"Retry-After": "3"}), status(503, "server busy"))
    results = [await post(gateway.url, CHAT) for _ in range(4)]
    assert [r[0] for r in results] == [404, 400, 429, 503]
    assert orjson.loads(results[0][2])["error"]["code"] == "model_not_found"
    assert "does not support tools" in orjson.loads(results[1][2])["error"]["message"]
    assert results[2][1]["Retry-After"] == "3"


async def test_client_disconnect_mid_stream_closes_upstream(gateway, fake_ollama):
    """When the client goes away mid-stream, the fake Ollama sees its connection closed."""
    fake_ollama.fake.script("/api/chat", stream_forever(0.02))
    async with aiohttp.ClientSession() as session:
        resp = await session.post(gateway.url + "/v1/chat/completions", json={**CHAT, "stream": True})
        await resp.content.readline()
        resp.close()
    for _ in range(100):
        if fake_ollama.fake.disconnects:
            break
        await asyncio.sleep(0.02)
    assert fake_ollama.fake.disconnects == 1


async def test_client_disconnect_while_waiting_for_first_byte(gateway, fake_ollama):
    """A client that leaves during a (cold) wait for the first byte closes the upstream request too."""
    fake_ollama.fake.script("/api/chat", hang(10))
    for stream in (True, False):
        before = fake_ollama.fake.disconnects
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(session.post(gateway.url + "/v1/chat/completions",
                                                    json={**CHAT, "stream": stream}))
            await asyncio.sleep(0.2)
            task.cancel()
        for _ in range(100):
            if fake_ollama.fake.disconnects > before:
                break
            await asyncio.sleep(0.02)
        assert fake_ollama.fake.disconnects == before + 1


async def test_request_id_is_honoured_or_made(gateway, fake_ollama):
    """An incoming X-Request-ID comes back; without one the gateway makes one, on errors too."""
    _, headers, _ = await post(gateway.url, CHAT, headers={"X-Request-ID": "abc-123"})
    assert headers["X-Request-ID"] == "abc-123"
    _, headers, _ = await post(gateway.url, {"model": 1})
    assert headers["X-Request-ID"].startswith("req_")


async def test_unknown_path_and_wrong_method_are_json(gateway):
    """An unknown path is a JSON 404 and a wrong method a JSON 405."""
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/v1/nope") as resp:
            assert resp.status == 404 and (await resp.json())["error"]["type"] == "invalid_request_error"
        async with session.get(gateway.url + "/v1/chat/completions") as resp:
            assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_bad_requests_name_the_field(gateway):
    """Malformed JSON, wrong types and absurd values are 400s naming the field."""
    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.url + "/v1/chat/completions", data=b"{not json") as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
    cases = [
        ({**CHAT, "temperature": "hot"}, "temperature"),
        ({**CHAT, "max_tokens": -1}, "max_tokens"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({**CHAT, "messages": [{"role": "user", "content": "x"}] * 10_000}, "messages"),
        ({"model": "llama3.2", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]},
         "messages[0].content[0].image_url.url"),
        ({"model": "llama3.2", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}]}]},
         "messages[0].content[0].image_url.url"),
    ]
    for body, param in cases:
        code, _, raw = await post(gateway.url, body)
        assert code == 400, (param, raw)
        assert orjson.loads(raw)["error"]["param"] == param


async def test_sampling_defaults_are_not_forced(gateway, fake_ollama):
    """Only the sampling fields the client sent reach Ollama, so Modelfile defaults apply."""
    await post(gateway.url, CHAT)
    await post(gateway.url, {**CHAT, "temperature": 0.2, "max_completion_tokens": 9, "stop": "END", "seed": 4,
                             "options": {"num_ctx": 8192}, "keep_alive": "10m", "reasoning_effort": "low"})
    plain, tuned = fake_ollama.fake.bodies("/api/chat")
    assert "options" not in plain and "keep_alive" not in plain
    assert tuned["options"] == {"temperature": 0.2, "num_predict": 9, "stop": ["END"], "seed": 4, "num_ctx": 8192}
    assert tuned["keep_alive"] == "10m" and tuned["think"] == "low"
