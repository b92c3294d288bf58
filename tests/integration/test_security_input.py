"""Hostile and malformed request bodies through the running gateway: each is a 400 (or 413) in
OpenAI's error shape naming the field, nothing reaches Ollama, and the gateway keeps serving."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import orjson
import pytest

MSG = [{"role": "user", "content": "hi"}]
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")


def image(url: str) -> bytes:
    return orjson.dumps({"model": "llama3.2", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "?"}, {"type": "image_url", "image_url": {"url": url}}]}]})


CASES: list[tuple[str, str, bytes, str | None, str | None]] = [
    # (id, path, raw body, expected param, expected code)
    ("truncated-json", "/v1/chat/completions", b'{"model": "llama3.2", "messages": [', None, "invalid_json"),
    ("not-json", "/v1/chat/completions", b"model=llama3.2", None, "invalid_json"),
    ("empty-body", "/v1/chat/completions", b"", None, "invalid_json"),
    ("json-array", "/v1/chat/completions", b"[1, 2, 3]", None, "invalid_json"),
    ("json-string", "/v1/chat/completions", b'"hello"', None, "invalid_json"),
    ("invalid-utf8", "/v1/chat/completions", b'{"model": "llama3.2", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
     None, "invalid_json"),
    ("lone-surrogate-escape", "/v1/chat/completions", b'{"model": "llama3.2", "messages": [{"role": "user", "content": "\\ud800"}]}',
     None, "invalid_json"),
    ("nan-literal", "/v1/chat/completions", b'{"model": "llama3.2", "messages": [], "temperature": NaN}', None, "invalid_json"),
    ("deep-nesting", "/v1/chat/completions", b'{"model": "llama3.2", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     None, "invalid_json"),
    ("huge-integer", "/v1/chat/completions", b'{"model": "llama3.2", "messages": [], "seed": 1' + b"0" * 400 + b"}",
     None, "invalid_json"),
    ("model-missing", "/v1/chat/completions", orjson.dumps({"messages": MSG}), "model", "missing_field"),
    ("model-number", "/v1/chat/completions", orjson.dumps({"model": 42, "messages": MSG}), "model", "invalid_type"),
    ("model-empty", "/v1/chat/completions", orjson.dumps({"model": "", "messages": MSG}), "model", None),
    ("messages-string", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": "hi"}), "messages", "invalid_type"),
    ("messages-empty", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": []}), "messages", None),
    ("10000-messages", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": MSG * 10_000}), "messages", None),
    ("role-bogus", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": [{"role": "root", "content": "x"}]}),
     "messages[0].role", None),
    ("content-number", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": 5}]}),
     "messages[0].content", "invalid_type"),
    ("negative-max-tokens", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": MSG, "max_tokens": -1}),
     "max_tokens", None),
    ("huge-max-tokens", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": MSG, "max_tokens": 10**15}),
     "max_tokens", None),
    ("max-tokens-string", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": MSG, "max_tokens": "9"}),
     "max_tokens", "invalid_type"),
    ("temperature-99", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": MSG, "temperature": 99}),
     "temperature", None),
    ("stream-string", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": MSG, "stream": "yes"}),
     "stream", "invalid_type"),
    ("n-5", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": MSG, "n": 5}), "n", None),
    ("stop-17", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": MSG, "stop": ["x"] * 17}), "stop", None),
    ("bad-base64", "/v1/chat/completions", image("data:image/png;base64,@@@not base64@@@"),
     "messages[0].content[1].image_url.url", "invalid_image_format"),
    ("svg-image", "/v1/chat/completions", image("data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode()),
     "messages[0].content[1].image_url.url", "invalid_image_format"),
    ("png-claims-jpeg", "/v1/chat/completions", image("data:image/jpeg;base64," + PNG_B64),
     "messages[0].content[1].image_url.url", "invalid_image_format"),
    ("not-a-data-url", "/v1/chat/completions", image("javascript:alert(1)"), "messages[0].content[1].image_url.url", None),
    ("image-url-in-assistant", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": [
        {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG_B64}}]}]}),
     "messages[0].content[0]", None),
    ("tool-args-not-json", "/v1/chat/completions", orjson.dumps({"model": "llama3.2", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}),
     "messages[0].tool_calls[0].function.arguments", None),
    ("prompt-number", "/v1/completions", orjson.dumps({"model": "llama3.2", "prompt": 5}), "prompt", "invalid_type"),
    ("prompt-tokens", "/v1/completions", orjson.dumps({"model": "llama3.2", "prompt": [1, 2, 3]}), "prompt", None),
    ("embed-input-missing", "/v1/embeddings", orjson.dumps({"model": "nomic-embed-text"}), "input", "missing_field"),
    ("embed-input-dict", "/v1/embeddings", orjson.dumps({"model": "nomic-embed-text", "input": {"a": 1}}), "input", "invalid_type"),
    ("embed-3000-inputs", "/v1/embeddings", orjson.dumps({"model": "nomic-embed-text", "input": ["a"] * 3000}), "input", None),
    ("embed-encoding", "/v1/embeddings", orjson.dumps({"model": "nomic-embed-text", "input": "a", "encoding_format": "hex"}),
     "encoding_format", None),
]


async def send(url: str, path: str, raw: bytes, content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + path, data=raw, headers={"Content-Type": content_type}) as resp:
            body = await resp.read()
            return resp.status, orjson.loads(body)


@pytest.mark.parametrize("path, raw, param, code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_malformed_body_is_a_400_naming_the_field(gateway, fake_ollama, path, raw, param, code):
    """Malformed JSON, wrong types, invalid UTF-8, bad base64, unsupported images and absurd values
    are 400s in OpenAI's shape naming the field; Ollama never sees them."""
    status, body = await send(gateway.url, path, raw)
    assert status == 400, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert error["message"]
    assert fake_ollama.fake.bodies("/api/chat") == [] and fake_ollama.fake.bodies("/api/embed") == []


async def test_wrong_content_type_is_still_parsed_as_json_or_refused_cleanly(gateway):
    """A JSON body sent as text/plain is read as JSON; form data is a 400, never a 500."""
    ok = orjson.dumps({"model": "llama3.2", "messages": MSG})
    assert (await send(gateway.url, "/v1/chat/completions", ok, "text/plain"))[0] == 200
    status, body = await send(gateway.url, "/v1/chat/completions", b"a=1&b=2", "application/x-www-form-urlencoded")
    assert status == 400 and body["error"]["code"] == "invalid_json"


async def test_hostile_requests_in_parallel_do_not_disturb_a_good_one(gateway):
    """Every hostile body at once, plus one normal request: the normal one succeeds."""
    good = orjson.dumps({"model": "llama3.2", "messages": MSG})
    results = await asyncio.gather(*(send(gateway.url, c[1], c[2]) for c in CASES),
                                   send(gateway.url, "/v1/chat/completions", good))
    assert [r[0] for r in results] == [400] * len(CASES) + [200]


async def test_wrong_methods_and_unknown_paths_are_openai_shaped(gateway):
    """GET on a POST endpoint is a 405 and an unknown path a 404, both in OpenAI's error shape."""
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/v1/chat/completions") as resp:
            assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
        async with session.post(gateway.url + "/v1/../../etc/passwd", data=b"{}") as resp:
            assert resp.status == 404 and (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_a_body_that_cannot_be_decoded_is_a_400(gateway):
    """``Content-Encoding: gzip`` over bytes that are not gzip is a 400 naming the problem, not a 500."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(gateway.url + "/v1/chat/completions", data=b"not gzip at all",
                                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "invalid_body"
