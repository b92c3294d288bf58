"""Property-based fuzz of Ollama's native door: hypothesis-generated bodies (JSON-ish and raw bytes)
posted to the native model endpoints get a 200 or a 4xx in Ollama's error shape, never a 5xx, and a
stream always ends with its ``done`` line."""

from __future__ import annotations

import asyncio
import http.client
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_fuzz_translate import json_values

MODELS = st.sampled_from(["llama3.2", "llama3.2:latest", "missing-model"])
PATHS = st.sampled_from(["/api/chat", "/api/generate", "/api/show"])
FIELDS = st.sampled_from(["messages", "prompt", "stream", "options", "keep_alive", "format", "think", "tools",
                          "raw", "images", "system", "template", "context", "suffix", "verbose"])
bodies = st.one_of(
    st.tuples(PATHS, st.tuples(MODELS, st.dictionaries(FIELDS, json_values, max_size=4)).map(
        lambda mb: orjson.dumps({**mb[1], "model": mb[0]}))),
    st.tuples(PATHS, json_values.map(orjson.dumps)),
    st.tuples(PATHS, st.binary(max_size=200)),
)


def post(port: int, path: str, raw: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def check_answer(path: str, status: int, raw: bytes) -> None:
    assert status == 200 or 400 <= status < 500, (status, raw[:500])
    if status >= 400:
        body = orjson.loads(raw)
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    elif path != "/api/show":
        last: Any = orjson.loads(raw.splitlines()[-1])
        assert last["done"] is True, last


async def test_fuzzed_native_bodies_never_get_a_server_error(gateway):
    """200 fuzzed bodies across chat, generate and show: only 200s and Ollama-shaped 4xx."""
    port = int(gateway.url.rsplit(":", 1)[1])
    seen: dict[int, int] = {}

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=bodies)
    def fuzz(case: tuple[str, bytes]) -> None:
        path, raw = case
        status, answer = post(port, path, raw)
        seen[status] = seen.get(status, 0) + 1
        check_answer(path, status, answer)

    await asyncio.to_thread(fuzz)
    assert seen.get(200, 0) > 0 and sum(n for s, n in seen.items() if s >= 400) > 0, seen
