"""FakeAnthropic: a real aiohttp server speaking Anthropic's Messages API (a cloud stand-in).

Serves ``POST /v1/messages`` (a ``message`` object, or Anthropic's SSE event sequence when
``stream`` is true) and ``GET /v1/models``. Script it with ``fake.script("/v1/messages",
status(529, "Overloaded", type="overloaded_error"), ok("Hi"))``: behaviours are used in order and the
last one repeats. ``fake.requests`` records every ``(method, path, json body, headers)`` (the path
without its query; ``fake.queries`` has the query strings), so tests can check the model name and
the credentials the gateway sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.scripted import ScriptedFake

Behaviour = Callable[["FakeAnthropic", web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def ok(text: str = "Hello from the cloud", *, delay: float = 0.0, fail_after: int | None = None) -> Behaviour:
    """Answer normally: one message, or the event sequence word by word (``delay`` between events).

    With ``fail_after``, a stream sends that many words and then an ``overloaded_error`` event.
    """

    async def behave(fake: FakeAnthropic, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = str(body.get("model", ""))
        words = text.split(" ")
        if not body.get("stream"):
            await asyncio.sleep(delay)
            return web.json_response({
                "id": "msg_cloud", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": _usage(11, len(words))})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events = [_event("message_start", {"type": "message_start", "message": {
            "id": "msg_cloud", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": _usage(11, 1)}}),
            _event("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})]
        for i, word in enumerate(words):
            if fail_after is not None and i == fail_after:
                events.append(_event("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                         "message": "Overloaded"}}))
                break
            events.append(_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                "type": "text_delta", "text": word if i == 0 else " " + word}}))
        else:
            events += [_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
                       _event("message_delta", {"type": "message_delta",
                                                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                                "usage": {"output_tokens": len(words)}}),
                       _event("message_stop", {"type": "message_stop"})]
        for event in events:
            await asyncio.sleep(delay)
            await resp.write(event)
        await resp.write_eof()
        return resp

    return behave


def cut_after_start() -> Behaviour:
    """Start a stream (``message_start`` and one text delta), then drop the connection."""

    async def behave(fake: FakeAnthropic, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_event("message_start", {"type": "message_start", "message": {
            "id": "msg_cloud", "type": "message", "role": "assistant", "model": str(body.get("model")),
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": _usage(11, 1)}}))
        await resp.write(_event("content_block_start", {"type": "content_block_start", "index": 0,
                                                        "content_block": {"type": "text", "text": ""}}))
        await asyncio.sleep(0.01)
        assert request.transport is not None
        request.transport.close()
        return resp

    return behave


def status(code: int, message: str = "boom", *, type: str = "api_error",
           headers: dict[str, str] | None = None) -> Behaviour:
    """Answer ``code`` with Anthropic's error shape ``{"type": "error", "error": {type, message}}``."""

    async def behave(fake: FakeAnthropic, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        payload = {"type": "error", "error": {"type": type, "message": message}}
        return web.json_response(payload, status=code, headers=headers)

    return behave


class FakeAnthropic(ScriptedFake):
    """The fake server's state: scripts per path, the model list, and a request log."""

    def __init__(self, *, models: tuple[str, ...] = ("claude-sonnet-4-5", "claude-haiku-4-5")) -> None:
        super().__init__()
        self.models = list(models)
        self.queries: list[str] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/messages", self._messages)
        self.app.router.add_get("/v1/models", self._models)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        self.queries.append(request.query_string)
        behaviour = self._next(request.path)
        if behaviour is None:
            if request.headers.get("x-api-key") is None:
                behaviour = status(401, "invalid x-api-key", type="authentication_error")
            elif body.get("model") not in self.models:
                behaviour = status(404, f"model: {body.get('model')}", type="not_found_error")
            else:
                behaviour = ok()
        return await behaviour(self, request, body)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        return web.json_response({"data": [{"type": "model", "id": m, "display_name": m} for m in self.models],
                                  "has_more": False, "first_id": None, "last_id": None})
