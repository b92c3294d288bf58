"""What a stream looks like on the wire: nothing before the first content (so a failure before it
can still fall back), then the status, the headers and the first event together."""

from __future__ import annotations

import asyncio

import orjson

from tests.fakes.ollama import ok


async def test_headers_and_the_first_event_arrive_together_after_the_first_token(fake_ollama, gateway) -> None:
    fake_ollama.fake.script("/api/chat", ok("Hello world", delay=0.3))
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = orjson.dumps({"model": "llama3.2", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer sk-test\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    try:
        early = asyncio.ensure_future(reader.read(65536))
        done, _ = await asyncio.wait({early}, timeout=0.15)
        assert not done, "the gateway answered before Ollama's first token"
        first = await asyncio.wait_for(early, 5)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        head, _, rest = first.partition(b"\r\n\r\n")
        assert b"text/event-stream" in head
        assert b"data: {" in rest and b'"Hello' in rest
    finally:
        writer.close()
        await writer.wait_closed()
