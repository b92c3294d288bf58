"""FakeOpenAI: a real aiohttp server speaking the OpenAI API (a cloud or llama.cpp stand-in).

Serves ``/v1/chat/completions`` (JSON or SSE ending in ``data: [DONE]``), ``/v1/completions``,
``/v1/embeddings`` and ``/v1/models``. Script a path with ``fake.script("/v1/chat/completions",
status(429, "slow down", headers={"Retry-After": "1"}), ok("Hi"))``: behaviours are used in order and
the last one repeats. ``fake.requests`` records every ``(method, path, json body, headers)``, so
tests can check the model name the gateway sent and the credentials it used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.scripted import ScriptedFake

Behaviour = Callable[["FakeOpenAI", web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]

CREATED = 1_790_000_000


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chunk(path: str, model: str, text: str, finish: str | None, first: bool) -> dict[str, Any]:
    if path.endswith("/completions") and not path.endswith("/chat/completions"):
        return {"id": "cmpl-fake", "object": "text_completion", "created": CREATED, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}
    delta: dict[str, Any] = {"content": text} if text or not finish else {}
    if first:
        delta["role"] = "assistant"
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def _answer(path: str, model: str, text: str, words: int) -> dict[str, Any]:
    if path.endswith("/chat/completions"):
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": CREATED, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": _usage(5, words)}
    return {"id": "cmpl-fake", "object": "text_completion", "created": CREATED, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(5, words)}


def ok(text: str = "Hello from the cloud", *, delay: float = 0.0) -> Behaviour:
    """Answer normally: one JSON object, or SSE chunks word by word (``delay`` between them)."""

    async def behave(fake: FakeOpenAI, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = str(body.get("model", ""))
        words = text.split(" ")
        if not body.get("stream"):
            await asyncio.sleep(delay)
            return web.json_response(_answer(request.path, model, text, len(words)))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events = [_chunk(request.path, model, w if i == 0 else " " + w, None, i == 0) for i, w in enumerate(words)]
        events.append(_chunk(request.path, model, "", "stop", False))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            events.append({**events[-1], "choices": [], "usage": _usage(5, len(words))})
        for event in events:
            await asyncio.sleep(delay)
            await resp.write(b"data: " + orjson.dumps(event) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    return behave


def status(code: int, message: str = "boom", *, type: str = "api_error", error_code: str | None = None,
           headers: dict[str, str] | None = None) -> Behaviour:
    """Answer ``code`` with OpenAI's error shape ``{"error": {message, type, param, code}}``."""

    async def behave(fake: FakeOpenAI, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        payload = {"error": {"message": message, "type": type, "param": None, "code": error_code}}
        return web.json_response(payload, status=code, headers=headers)

    return behave


def hang(seconds: float = 3600.0) -> Behaviour:
    """Say nothing for ``seconds`` (the gateway's timeout or the client gives up first)."""

    async def behave(fake: FakeOpenAI, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(status=500)

    return behave


class FakeOpenAI(ScriptedFake):
    """The fake server's state: scripts per path, the model list, and a request log."""

    def __init__(self, *, models: tuple[str, ...] = ("gpt-4o-mini", "text-embedding-3-small"), dims: int = 8) -> None:
        super().__init__()
        self.models = list(models)
        self.dims = dims
        self.app = web.Application()
        for path in ("/v1/chat/completions", "/v1/completions"):
            self.app.router.add_post(path, self._generate)
        self.app.router.add_post("/v1/embeddings", self._embeddings)
        self.app.router.add_get("/v1/models", self._models)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        behaviour = self._next(request.path)
        if behaviour is None:
            if body.get("model") not in self.models:
                behaviour = status(404, f"The model '{body.get('model')}' does not exist",
                                   type="invalid_request_error", error_code="model_not_found")
            else:
                behaviour = ok()
        return await behaviour(self, request, body)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        behaviour = self._next(request.path)
        if behaviour is not None:
            return await behaviour(self, request, body)
        inputs = body.get("input")
        items = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = [{"object": "embedding", "index": i, "embedding": [0.1 * (i + 1)] * self.dims}
                for i in range(len(items))]
        return web.json_response({"object": "list", "data": data, "model": body.get("model"),
                                  "usage": {"prompt_tokens": 3 * len(items), "total_tokens": 3 * len(items)}})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "fake"} for m in self.models]})
