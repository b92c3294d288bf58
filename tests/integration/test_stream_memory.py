"""What a stream holds while it runs: once the answer has committed no other attempt can follow, so
the request body, its translation and the payload sent to Ollama are let go. An agent's chat history
is tens or hundreds of KiB; held four or five times over per stream, ten thousand streams would not
fit in memory.

Measured with tracemalloc over the allocations made by the gateway's own code (a frame in
``proxy/``), while the stream is open, against before the request: the fake Ollama keeps its own
copy of every request, which is not the gateway's.
"""

from __future__ import annotations

import io
import tracemalloc

import aiohttp
import orjson

from tests.fakes.ollama import stream_forever

PROMPT_MIB = 2


def _gateway_bytes(snapshot: tracemalloc.Snapshot) -> int:
    return sum(trace.size for trace in snapshot.traces
               if any("/proxy/" in frame.filename for frame in trace.traceback))


async def test_a_stream_holds_no_copy_of_its_body_once_committed(gateway, fake_ollama) -> None:
    fake_ollama.fake.script("/api/chat", stream_forever(delay=0.05))
    prompt = "word " * (PROMPT_MIB * (1 << 20) // 5)
    body = {"model": "llama3.2", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    async with aiohttp.ClientSession() as session:
        tracemalloc.start(40)
        try:
            before = _gateway_bytes(tracemalloc.take_snapshot())
            async with session.post(gateway.url + "/v1/chat/completions", data=io.BytesIO(orjson.dumps(body)),
                                    headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 200
                seen = b""
                while seen.count(b"data: ") < 3:  # tokens flow: the answer committed
                    seen += await resp.content.readany()
                during = _gateway_bytes(tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
    held = during - before
    # before the release: the raw body, the parsed body and the payload, each ~2 MiB
    assert held < (1 << 20) // 4, f"the open stream holds {held:,} bytes allocated by the gateway"
