"""Hostile and wrong input on Anthropic's door: every refusal in Anthropic's shape with its status, nothing sent
to Ollama; a client leaving mid-stream stops the generation."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.fakes import ollama as o
from tests.integration.test_messages import HI, claude_config
from tests.integration.test_observability import eventually

OK = {"model": "claude-x", "max_tokens": 10, "messages": HI}
ENV = {"NARROW_KEY": "sk-narrow-0001"}


async def post(url: str, path: str, *, data: bytes | None = None, json: object = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url + path, data=data, json=json, headers=headers or {}) as resp:
            body = await resp.json(content_type=None)
            if isinstance(body, dict):
                body.pop("request_id", None)
            return resp.status, body


def refusal(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


@pytest.fixture
async def claude(start_fake, start_gateway):
    local = await start_fake()
    return local.fake, await start_gateway(claude_config(local.url))


@pytest.mark.parametrize(("path", "payload", "message"), [
    ("/v1/messages", b"{not json", "We could not parse the JSON body of your request. The body must be valid UTF-8 JSON."),
    ("/v1/messages", b"[1, 2]", "The request body must be a JSON object."),
    ("/v1/messages", {"max_tokens": 10, "messages": HI}, "Missing required parameter: 'model'."),
    ("/v1/messages", {**OK, "model": 5}, "Invalid type for 'model': expected a string, but got number."),
    ("/v1/messages", {**OK, "max_tokens": None}, "Missing required parameter: 'max_tokens'."),
    ("/v1/messages", {**OK, "stream": "yes"}, "Invalid type for 'stream': expected a boolean."),
    ("/v1/messages", {**OK, "metadata": "me"}, "Invalid type for 'metadata': expected an object, but got string."),
    ("/v1/messages", {**OK, "messages": "hi"}, "Invalid type for 'messages': expected an array, but got string."),
    ("/v1/messages", {**OK, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "http://169.254.169.254/latest"}}]}]},
     "Image URLs are not fetched by this gateway; send the image as a base64 source "
     '({"type": "base64", "media_type": "image/png", "data": ...}).'),
    ("/v1/messages/count_tokens", b"{", "We could not parse the JSON body of your request. The body must be valid UTF-8 JSON."),
    ("/v1/messages/count_tokens", {"model": "claude-x"}, "Missing required parameter: 'messages'."),
])
async def test_bad_bodies_are_400s_in_anthropic_shape_and_reach_no_backend(claude, path, payload, message):
    """Each malformed body is an invalid_request_error naming what is wrong; Ollama hears nothing."""
    fake, gw = claude
    kwargs: dict[str, Any] = {"data": payload, "headers": {"Content-Type": "application/json"}} \
        if isinstance(payload, bytes) else {"json": payload}
    status, body = await post(gw.url, path, **kwargs)
    assert (status, body) == (400, refusal("invalid_request_error", message))
    assert fake.requests == []


async def test_wrong_method_and_unknown_model_are_anthropic_405_and_404(claude):
    """GET on /v1/messages is a 405; a model no route serves is a 404 not_found_error on both paths."""
    fake, gw = claude
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/v1/messages") as resp:
            assert resp.status == 405
            assert (await resp.json())["error"]["type"] == "invalid_request_error"
    missing = "The model 'gpt-4o' does not exist or you do not have access to it."
    assert await post(gw.url, "/v1/messages", json={**OK, "model": "gpt-4o"}) == (
        404, refusal("not_found_error", missing))
    assert await post(gw.url, "/v1/messages/count_tokens", json={"model": "gpt-4o", "messages": HI}) == (
        404, refusal("not_found_error", missing))
    assert fake.requests == []


async def test_credentials_and_allow_lists_apply_to_both_paths(start_fake, start_gateway):
    """No key is a 401, a model outside the credential's allow-list a 403 permission_error, count_tokens too."""
    local = await start_fake()
    auth = {"credentials": [{"name": "narrow", "api_key": "${NARROW_KEY}", "models": ["llama*"]}]}
    gw = await start_gateway(claude_config(local.url, auth=auth), environ=ENV)
    key = {"x-api-key": ENV["NARROW_KEY"]}
    for path, payload in (("/v1/messages", OK), ("/v1/messages/count_tokens", {"model": "claude-x", "messages": HI})):
        status, body = await post(gw.url, path, json=payload)
        assert (status, body["error"]["type"]) == (401, "authentication_error")
        assert await post(gw.url, path, json=payload, headers=key) == (403, refusal(
            "permission_error", "The credential 'narrow' may not use the model 'claude-x'."))
    assert local.fake.requests == []


async def test_a_client_leaving_mid_stream_stops_the_generation(claude):
    """Closing the connection after the first event closes the Ollama stream (the fake sees the disconnect)."""
    fake, gw = claude
    fake.script("/api/chat", o.stream_forever(delay=0.02))
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/messages", json={**OK, "stream": True}) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
            first = await resp.content.readline()
            assert first == b"event: message_start\n"
    await eventually(lambda: fake.disconnects == 1)
    await asyncio.sleep(0)
