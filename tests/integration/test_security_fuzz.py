"""Property-based fuzz of the running gateway: hypothesis-generated bodies (JSON-ish and raw bytes)
posted to every model endpoint get a 200 or a 4xx in OpenAI's error shape, never a 5xx.

Hypothesis drives a plain blocking HTTP client from a worker thread while the gateway and the fake
Ollama serve on the test's event loop.
"""

from __future__ import annotations

import asyncio
import http.client
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_fuzz_translate import chat_bodies, completion_bodies, embedding_bodies, json_values

MODELS = st.sampled_from(["llama3.2", "llama3.2:latest", "nomic-embed-text", "missing-model"])
ENDPOINTS = {
    "/v1/chat/completions": chat_bodies,
    "/v1/completions": completion_bodies,
    "/v1/embeddings": embedding_bodies,
}
# requests a client could really send: valid shapes with well-typed optional fields (mostly 200s)
plausible_chat = st.fixed_dictionaries(
    {"model": MODELS, "messages": st.lists(st.fixed_dictionaries({
        "role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=30)}), min_size=1, max_size=3)},
    optional={"temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "max_tokens": st.integers(1, 512),
              "stream": st.booleans(), "seed": st.integers(0, 2**31), "stop": st.lists(st.text(max_size=5), max_size=4),
              "user": st.text(max_size=10), "options": st.fixed_dictionaries({"num_ctx": st.integers(256, 8192)})},
).map(lambda b: ("/v1/chat/completions", orjson.dumps(b)))
# plausible bodies, bodies built field by field from anything JSON, any JSON at all, raw bytes
bodies = st.one_of(
    plausible_chat,
    *(st.tuples(st.just(path), strategy.flatmap(lambda b: MODELS.map(lambda m, b=b: orjson.dumps({**b, "model": m}))))
      for path, strategy in ENDPOINTS.items()),
    st.tuples(st.sampled_from(list(ENDPOINTS)), json_values.map(orjson.dumps)),
    st.tuples(st.sampled_from(list(ENDPOINTS)), st.binary(max_size=200)),
)


def post(port: int, path: str, raw: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def check_answer(status: int, raw: bytes) -> None:
    assert status == 200 or 400 <= status < 500, (status, raw[:500])
    if status >= 400:
        error = orjson.loads(raw)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"]


async def test_fuzzed_bodies_never_get_a_server_error(gateway):
    """200 fuzzed bodies across chat, completions and embeddings: only 200s and OpenAI-shaped 4xx."""
    port = int(gateway.url.rsplit(":", 1)[1])
    seen: dict[int, int] = {}

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=bodies)
    def fuzz(case: tuple[str, bytes]) -> None:
        path, raw = case
        status, answer = post(port, path, raw)
        seen[status] = seen.get(status, 0) + 1
        check_answer(status, answer)

    await asyncio.to_thread(fuzz)
    assert seen.get(200, 0) > 0 and sum(n for s, n in seen.items() if s >= 400) > 0, seen  # both kinds occurred
    status, _ = await asyncio.to_thread(post, port, "/v1/chat/completions",
                                        orjson.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}))
    assert status == 200


async def test_fuzzed_streaming_requests_end_cleanly(gateway):
    """Streamed requests with fuzzed options either stream to [DONE] or are refused with a 4xx."""
    port = int(gateway.url.rsplit(":", 1)[1])

    @settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(extra=st.dictionaries(st.sampled_from(["stream_options", "max_tokens", "stop", "options", "keep_alive",
                                                  "logprobs", "top_logprobs", "tools", "tool_choice"]),
                                 json_values, max_size=3))
    def fuzz(extra: dict[str, Any]) -> None:
        body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], **extra, "stream": True}
        status, answer = post(port, "/v1/chat/completions", orjson.dumps(body))
        check_answer(status, answer)
        if status == 200:
            assert answer.endswith(b"data: [DONE]\n\n"), answer[-200:]

    await asyncio.to_thread(fuzz)
