"""SIGTERM: the gateway stops accepting, finishes the stream in flight, then exits 0."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest

from tests.fakes import ollama as o
from tests.integration.test_routing import HI, backend, routed
from tests.integration.test_workers import GatewayProcess

SHUTDOWN_TIMEOUT = 10.0


async def refuses_connections(url: str, timeout: float = 3.0) -> bool:
    """True once a new connection to ``url`` is refused (polled until ``timeout``)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url + "/livez", timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    await resp.read()
            except aiohttp.ClientConnectorError:
                return True
            except aiohttp.ClientOSError:
                # reset: accepted by the kernel into the queue of a listener that was closing
                pass
            await asyncio.sleep(0.02)
    return False


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_finishes_the_stream_in_flight_and_exits_0(start_fake, tmp_path, workers):
    """A stream started before SIGTERM still ends with [DONE]; new connections are refused meanwhile."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("a b c d e f", delay=0.2))  # 7 lines, about 1.4 s
    raw = routed([backend("local", local.url)], {"targets": [{"backend": "local"}]},
                 server={"shutdown_timeout": SHUTDOWN_TIMEOUT},
                 logging={"requests": True, "file": str(tmp_path / "requests.log")})
    gateway = GatewayProcess(tmp_path, raw, workers=workers)
    try:
        gateway.start()
        await gateway.wait_serving()
        async with aiohttp.ClientSession() as http:
            body = {"model": "llama3.2", "messages": HI, "stream": True}
            async with http.post(gateway.url + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                first = await resp.content.readline()  # the stream is under way
                assert first.startswith(b"data: ")
                gateway.terminate()
                signalled = time.monotonic()
                assert await refuses_connections(gateway.url)
                # five more 0.2 s lines were still to come: the port closed while the stream was running
                assert time.monotonic() - signalled < 0.9
                rest = await asyncio.wait_for(resp.read(), timeout=SHUTDOWN_TIMEOUT)
        events = [line for line in (first + rest).decode().split("\n") if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        text = "".join(orjson.loads(e[6:])["choices"][0]["delta"].get("content") or ""
                       for e in events[:-1] if orjson.loads(e[6:]).get("choices"))
        assert text == "a b c d e f"
        assert await gateway.wait_exit(SHUTDOWN_TIMEOUT + 5) == 0
        assert time.monotonic() - signalled < SHUTDOWN_TIMEOUT
        assert "shutting down" in gateway.stderr
        records = [orjson.loads(line) for line in (tmp_path / "requests.log").read_text().splitlines()]
        (record,) = [r for r in records if r["path"] == "/v1/chat/completions"]  # written before the log closed
        assert (record["status"], record["outcome"], record["stream"]) == (200, "ok", True)
    finally:
        gateway.kill()


async def test_a_stream_outliving_the_shutdown_timeout_is_cut_and_the_process_exits(start_fake, tmp_path):
    """``server.shutdown_timeout`` bounds the wait: an endless stream is cut (no [DONE]) and the gateway exits."""
    local = await start_fake()
    local.fake.script("/api/chat", o.stream_forever(delay=0.05))
    raw = routed([backend("local", local.url)], {"targets": [{"backend": "local"}]}, server={"shutdown_timeout": 1})
    gateway = GatewayProcess(tmp_path, raw)
    try:
        gateway.start()
        await gateway.wait_serving()
        async with aiohttp.ClientSession() as http:
            body = {"model": "llama3.2", "messages": HI, "stream": True}
            async with http.post(gateway.url + "/v1/chat/completions", json=body) as resp:
                await resp.content.readline()
                gateway.terminate()
                signalled = time.monotonic()
                try:
                    received = await asyncio.wait_for(resp.read(), timeout=10)
                except aiohttp.ClientPayloadError:
                    received = b""  # cut mid-chunk: also not a complete stream
        assert b"data: [DONE]" not in received
        assert await gateway.wait_exit(10) == 0
        assert time.monotonic() - signalled < 5
        await asyncio.sleep(0.2)
        assert local.fake.disconnects == 1  # the upstream request was closed too, so Ollama stops generating
    finally:
        gateway.kill()



async def test_a_30_s_stream_does_not_make_shutdown_take_twice_the_timeout(start_fake, tmp_path):
    """shutdown_timeout 2: with a 30 s stream open, SIGTERM ends the process within 2 + 1.5 s, not 2 x 2 s."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok(" ".join(["tok"] * 60), delay=0.5))  # 61 lines, about 30 s
    raw = routed([backend("local", local.url)], {"targets": [{"backend": "local"}]}, server={"shutdown_timeout": 2})
    gateway = GatewayProcess(tmp_path, raw)
    try:
        gateway.start()
        await gateway.wait_serving()
        async with aiohttp.ClientSession() as http:
            body = {"model": "llama3.2", "messages": HI, "stream": True}
            async with http.post(gateway.url + "/v1/chat/completions", json=body) as resp:
                assert (await resp.content.readline()).startswith(b"data: ")
                gateway.terminate()
                signalled = time.monotonic()
                code = await gateway.wait_exit(10)
                took = time.monotonic() - signalled
                try:
                    rest = await asyncio.wait_for(resp.read(), 5)
                except aiohttp.ClientPayloadError:
                    rest = b""  # cut mid-chunk
        assert code == 0
        assert 2 <= took < 2 + 1.5, took  # the stream had its 2 s, then was cut
        assert b"data: [DONE]" not in rest
        await asyncio.sleep(0.2)
        assert local.fake.disconnects == 1  # the upstream request was closed as well
    finally:
        gateway.kill()
    records = [orjson.loads(line) for line in gateway.stderr.splitlines() if line.startswith("{")]
    assert [r["msg"] for r in records if r["level"] in ("ERROR", "CRITICAL")] == []
    assert "Traceback" not in gateway.stderr
