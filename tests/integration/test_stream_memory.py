"""What a stream holds while it runs: once the answer has committed no other attempt can follow, so
the request body, its translation and the payload sent to Ollama are let go, on every door that
streams (Chat Completions, legacy completions, Responses, Anthropic Messages, Ollama's native
``/api/chat`` and ``/api/generate``). An agent's chat history is tens or hundreds of KiB; held four
or five times over per stream, ten thousand streams would not fit in memory.

Measured with tracemalloc over the allocations made by the gateway's own code (a frame in
``proxy/``), while the stream is open, against before the request: the fake Ollama keeps its own
copy of every request, which is not the gateway's. Each body is what a real client sends (the
OpenAI SDK, the Codex CLI, Claude Code, the ``ollama`` Python client), with a 2 MiB prompt. The
doors that relay a cloud backend's stream (Responses to an OpenAI-compatible one, Messages to an
Anthropic-compatible one) let go of the same.
"""

from __future__ import annotations

import asyncio
import io
import tracemalloc
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.fakes.ollama import stream_forever
from tests.integration.test_routing import backend, closed_port, routed

PROMPT_MIB = 2
HELD_AT_MOST = (1 << 20) // 4  # before the release: the parsed body, its translation and the payload, each ~2 MiB
PROMPT = "word " * (PROMPT_MIB * (1 << 20) // 5)

_SHELL = {"type": "function", "name": "shell", "description": "Runs a shell command and returns its output.",
          "strict": False, "parameters": {"type": "object", "properties": {
              "command": {"type": "array", "items": {"type": "string"}},
              "workdir": {"type": "string"}, "timeout_ms": {"type": "number"}},
              "required": ["command"], "additionalProperties": False}}
_BASH = {"name": "Bash", "description": "Executes a bash command.", "input_schema": {
    "type": "object", "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
    "required": ["command"], "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"}}


def _codex(prompt: str) -> dict[str, Any]:
    """The Codex CLI's Responses request: instructions, typed input items, function tools, store false."""
    return {"model": "llama3.2", "instructions": "You are a coding agent running in the Codex CLI.",
            "input": [{"type": "message", "role": "user", "content": [
                          {"type": "input_text", "text": "<environment_context>\n  <cwd>/repo</cwd>\n"
                                                         "</environment_context>"}]},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]}],
            "tools": [_SHELL], "tool_choice": "auto", "parallel_tool_calls": False,
            "reasoning": {"effort": "medium", "summary": "auto"}, "store": False, "stream": True,
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "0199a213-81c0-7800-8aa1-bbab2a035a53"}


def _claude_code(prompt: str) -> dict[str, Any]:
    """Claude Code's Messages request: system blocks, cached content blocks, tools, metadata, thinking."""
    return {"model": "llama3.2", "max_tokens": 32000, "stream": True,
            "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                        "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt,
                                                       "cache_control": {"type": "ephemeral"}}]}],
            "tools": [_BASH], "metadata": {"user_id": "user_abc_account_def_session_1"},
            "thinking": {"type": "enabled", "budget_tokens": 31999}, "temperature": 1}


_CLAUDE_HEADERS = {"anthropic-version": "2023-06-01", "x-app": "cli",
                   "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"}

# door -> (path, Ollama's path behind it, body, extra headers, bytes the open stream may keep for later)
DOORS: dict[str, tuple[str, str, dict[str, Any], dict[str, str], int]] = {
    # the OpenAI SDK: client.chat.completions.create(..., stream=True) / client.completions.create(...)
    "chat": ("/v1/chat/completions", "/api/chat",
             {"model": "llama3.2", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}, {}, 0),
    "completions": ("/v1/completions", "/api/generate", {"model": "llama3.2", "stream": True, "prompt": PROMPT}, {}, 0),
    "responses-codex": ("/v1/responses", "/api/chat", _codex(PROMPT), {}, 0),
    # the OpenAI SDK's client.responses.create(input=..., stream=True): store defaults to true, and
    # storing the response at the end needs the input it was generated from (one copy, nothing more)
    "responses-stored": ("/v1/responses", "/api/chat", {"model": "llama3.2", "input": PROMPT, "stream": True}, {},
                         len(PROMPT)),
    "messages-claude-code": ("/v1/messages?beta=true", "/api/chat", _claude_code(PROMPT), _CLAUDE_HEADERS, 0),
    # the ollama Python client: ChatRequest / GenerateRequest .model_dump(exclude_none=True)
    "native-chat": ("/api/chat", "/api/chat", {"model": "llama3.2", "stream": True,
                                               "messages": [{"role": "user", "content": PROMPT}], "tools": []}, {}, 0),
    "native-generate": ("/api/generate", "/api/generate", {"model": "llama3.2", "stream": True, "prompt": PROMPT}, {}, 0),
}


def _gateway_traces(snapshot: tracemalloc.Snapshot) -> list[tracemalloc.Trace]:
    return [trace for trace in snapshot.traces if any("/proxy/" in frame.filename for frame in trace.traceback)]


async def _held_by_open_stream(url: str, body: dict[str, Any], headers: dict[str, str], token: bytes) -> tuple[int, str]:
    """The bytes the gateway allocated and still holds while the stream is open, three tokens in, and
    where the largest of them was allocated (the gateway's innermost frame), for the failure message."""
    async with aiohttp.ClientSession() as session:
        tracemalloc.start(40)
        try:
            before = sum(trace.size for trace in _gateway_traces(tracemalloc.take_snapshot()))
            async with session.post(url, data=io.BytesIO(orjson.dumps(body)),
                                    headers={"Content-Type": "application/json", **headers}) as resp:
                assert resp.status == 200
                seen = b""
                while seen.count(token) < 3:  # tokens flow: the answer committed
                    seen += await resp.content.readany()
                during = _gateway_traces(tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
    largest = max(during, key=lambda trace: trace.size)
    frame = [frame for frame in largest.traceback if "/proxy/" in frame.filename][-1]
    where = f"{largest.size:,} bytes from {frame.filename.rpartition('/proxy/')[2]}:{frame.lineno}"
    return sum(trace.size for trace in during) - before, where


@pytest.mark.parametrize("door", list(DOORS))
async def test_a_stream_holds_no_copy_of_its_body_once_committed(gateway, fake_ollama, door) -> None:
    path, ollama_path, body, headers, kept = DOORS[door]
    fake_ollama.fake.script(ollama_path, stream_forever(delay=0.05))
    held, largest = await _held_by_open_stream(gateway.url + path, body, headers, b"tok ")
    assert held - kept < HELD_AT_MOST, f"the open stream holds {held:,} bytes allocated by the gateway ({largest})"


async def _cloud_stream(request: web.Request) -> web.StreamResponse:
    """A cloud backend's SSE stream (Anthropic's, OpenAI's Responses events or chat chunks), a token every 50 ms."""
    await request.read()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    anthropic = request.path == "/v1/messages"
    kind = "content_block_delta" if anthropic else "response.output_text.delta"
    delta = {"type": kind, "index": 0, "delta": {"type": "text_delta", "text": "zebra "}} if anthropic \
        else {"type": kind, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "zebra "}
    event = b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(delta) + b"\n\n"
    if request.path == "/v1/chat/completions":  # OpenAI's chunks carry no event line
        event = b"data: " + orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                                          "model": "big-model", "choices": [{"index": 0, "delta": {
                                              "content": "zebra "}, "finish_reason": None}]}) + b"\n\n"
    try:
        while True:
            await resp.write(event)
            await asyncio.sleep(0.05)
    except ConnectionError:
        return resp


# door -> (path, cloud backend type, body, extra headers)
CLOUD_DOORS: dict[str, tuple[str, str, dict[str, Any], dict[str, str]]] = {
    "chat-openai": ("/v1/chat/completions", "openai",
                    {"model": "llama3.2", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}, {}),
    "responses-openai": ("/v1/responses", "openai", _codex(PROMPT), {}),
    "messages-anthropic": ("/v1/messages?beta=true", "anthropic", _claude_code(PROMPT), _CLAUDE_HEADERS),
}


@pytest.mark.parametrize("after_dead_ollama", [False, True], ids=["cloud", "fallback"])
@pytest.mark.parametrize("door", list(CLOUD_DOORS))
async def test_a_cloud_stream_holds_no_copy_of_its_body_once_committed(aiohttp_server, start_gateway,
                                                                      door, after_dead_ollama) -> None:
    """Also as the fallback of an Ollama that refused the connection: the failed attempt's error,
    kept by the router until the request ends, holds none of that attempt's payload."""
    path, kind, body, headers = CLOUD_DOORS[door]
    app = web.Application(client_max_size=(4 * PROMPT_MIB) << 20)
    app.router.add_post("/v1/chat/completions", _cloud_stream)
    app.router.add_post("/v1/responses", _cloud_stream)
    app.router.add_post("/v1/messages", _cloud_stream)
    cloud = await aiohttp_server(app)
    url = str(cloud.make_url("/v1" if kind == "openai" else "")).rstrip("/")
    cloud_target = {"backend": "cloud", "model": "big-model"}
    route = ({"targets": [{"backend": "dead"}], "fallback": [cloud_target]} if after_dead_ollama
             else {"targets": [cloud_target]})
    gw = await start_gateway(routed([backend("dead", f"http://127.0.0.1:{closed_port()}"),
                                     backend("cloud", url, kind, api_key="${CLOUD_KEY}")], route),
                             environ={"CLOUD_KEY": "sk-cloud-0001"})
    held, largest = await _held_by_open_stream(gw.url + path, body, headers, b"zebra")
    assert held < HELD_AT_MOST, f"the open stream holds {held:,} bytes allocated by the gateway ({largest})"
