"""FakeOllama: a real aiohttp server speaking Ollama's native API, with scriptable behaviours.

Each behaviour is a coroutine ``(fake, request, body) -> StreamResponse``. Script an endpoint with
``fake.script("/api/chat", ok("Hello"), status(500, "boom"))``: behaviours are used in order and the
last one repeats. ``fake.requests`` records every ``(method, path, json body, headers)``; ``fake.disconnects``
counts requests whose client went away while the fake was still answering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.scripted import ScriptedFake

Behaviour = Callable[["FakeOllama", web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]

NOW = "2026-11-24T10:00:00.123456789Z"


def _final(model: str, *, done_reason: str = "stop", prompt_eval_count: int = 7, eval_count: int = 3,
           load_ns: int = 1_500_000) -> dict[str, Any]:
    return {"model": model, "created_at": NOW, "done": True, "done_reason": done_reason,
            "total_duration": 250_000_000, "load_duration": load_ns, "prompt_eval_count": prompt_eval_count,
            "prompt_eval_duration": 20_000_000, "eval_count": eval_count, "eval_duration": 200_000_000}


def _piece(path: str, model: str, text: str = "", **message: Any) -> dict[str, Any]:
    if path == "/api/generate":
        return {"model": model, "created_at": NOW, "response": text, "done": False}
    return {"model": model, "created_at": NOW, "message": {"role": "assistant", "content": text, **message},
            "done": False}


async def _write_lines(request: web.Request, fake: FakeOllama, lines: Sequence[dict[str, Any]],
                       delay: float = 0.0) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    try:
        for line in lines:
            if delay:
                await asyncio.sleep(delay)
            await resp.write(orjson.dumps(line) + b"\n")
        await resp.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        fake.disconnects += 1
        raise
    return resp


def ok(text: str = "Hello world", *, tool_calls: list[dict[str, Any]] | None = None,
       thinking: str | None = None, done_reason: str = "stop", delay: float = 0.0,
       logprobs: list[dict[str, Any]] | None = None, load_ns: int = 1_500_000) -> Behaviour:
    """Answer normally: streamed word by word (``delay`` between lines) or as one object."""

    async def behave(fake: FakeOllama, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = body.get("model", "")
        words = [w + " " for w in text.split(" ")]
        if words:
            words[-1] = words[-1][:-1]
        final = _final(model, done_reason=done_reason, eval_count=max(1, len(words)), load_ns=load_ns)
        path = request.path
        if body.get("stream", True) is False:
            if path == "/api/generate":
                answer = {**final, "response": text}
            else:
                message: dict[str, Any] = {"role": "assistant", "content": text}
                if thinking:
                    message["thinking"] = thinking
                if tool_calls:
                    message["tool_calls"] = tool_calls
                answer = {**final, "message": message}
            if logprobs:
                answer["logprobs"] = logprobs
            await asyncio.sleep(delay)
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        lines = []
        if thinking:
            lines.append(_piece(path, model, "", thinking=thinking))
        lines.extend(_piece(path, model, w) for w in words if w)
        if tool_calls:
            lines.append(_piece(path, model, "", tool_calls=tool_calls))
        done = {**final, "message": {"role": "assistant", "content": ""}} if path == "/api/chat" else \
            {**final, "response": ""}
        lines.append(done)
        return await _write_lines(request, fake, lines, delay)

    return behave


def status(code: int, error: str = "boom", headers: dict[str, str] | None = None) -> Behaviour:
    """Answer ``code`` with Ollama's error body ``{"error": error}`` before any stream starts."""

    async def behave(fake: FakeOllama, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=code, body=orjson.dumps({"error": error}), content_type="application/json",
                            headers=headers)

    return behave


def hang(seconds: float = 3600.0) -> Behaviour:
    """Never answer (until ``seconds``); counts a disconnect when the client goes away meanwhile."""

    async def behave(fake: FakeOllama, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                transport = request.transport
                if transport is None or transport.is_closing():
                    raise asyncio.CancelledError
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:  # the test server cancels handlers of vanished clients
            fake.disconnects += 1
            raise
        return web.Response(status=500)

    return behave


def slow(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Wait ``seconds`` before behaving like ``then`` (default ``ok()``)."""
    after = then or ok()

    async def behave(fake: FakeOllama, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await after(fake, request, body)

    return behave


def truncate_after(n: int, delay: float = 0.0) -> Behaviour:
    """Stream ``n`` content lines, then drop the connection without the final line."""

    async def behave(fake: FakeOllama, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for i in range(n):
            await resp.write(orjson.dumps(_piece(request.path, body.get("model", ""), f"t{i} ")) + b"\n")
            await asyncio.sleep(delay)
        await asyncio.sleep(0.01)
        assert request.transport is not None
        request.transport.close()
        return resp

    return behave


def error_line_after(n: int, error: str = "model runner crashed", delay: float = 0.0) -> Behaviour:
    """Stream ``n`` content lines, then Ollama's mid-stream ``{"error": ...}`` line, then end."""

    async def behave(fake: FakeOllama, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = body.get("model", "")
        lines: list[dict[str, Any]] = [_piece(request.path, model, f"t{i} ") for i in range(n)]
        lines.append({"error": error})
        return await _write_lines(request, fake, lines, delay)

    return behave


def stream_forever(delay: float = 0.05) -> Behaviour:
    """Stream tokens every ``delay`` seconds until the client goes away (counted in ``disconnects``)."""

    async def behave(fake: FakeOllama, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        def lines() -> Any:
            while True:
                yield _piece(request.path, body.get("model", ""), "tok ")

        return await _write_lines(request, fake, lines(), delay)  # type: ignore[arg-type]

    return behave


def echo(*, delay: float = 0.0) -> Behaviour:
    """Answer ``re: <prompt>`` (``/api/generate``) or ``re: <last message>`` (``/api/chat``), as ``ok`` does."""

    async def behave(fake: FakeOllama, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            messages = body.get("messages") or [{}]
            prompt = str(messages[-1].get("content", ""))
        return await ok(f"re: {prompt}", delay=delay)(fake, request, body)

    return behave


def context_limit(num_ctx: int = 2048, then: Behaviour | None = None, *, honours_truncate: bool = True) -> Behaviour:
    """A model with a context of ``num_ctx`` tokens (the request's ``options.num_ctx`` wins), a token
    being a word of the prompt or messages: with ``truncate: false`` a longer input is Ollama's 400
    "the input length exceeds the context length"; without it the start is dropped silently (the
    answer's ``prompt_eval_count`` is the context size). Inputs that fit get ``then`` (``ok()``).
    ``honours_truncate=False`` is an older Ollama that ignores ``truncate``.
    """

    async def behave(fake: FakeOllama, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        options = body.get("options") or {}
        limit = int(options.get("num_ctx") or num_ctx)
        text = body.get("prompt") if isinstance(body.get("prompt"), str) else " ".join(
            str(m.get("content", "")) for m in body.get("messages") or [])
        tokens = len(str(text).split())
        if tokens <= limit:
            return await (then or ok())(fake, request, body)
        if body.get("truncate") is False and honours_truncate:
            return await status(400, "the input length exceeds the context length")(fake, request, body)
        final = _final(str(body.get("model", "")), prompt_eval_count=limit)
        answer = {**final, "response": "truncated"} if request.path == "/api/generate" else \
            {**final, "message": {"role": "assistant", "content": "truncated"}}
        if body.get("stream", True) is False:
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        return await _write_lines(request, fake, [answer])

    return behave


class FakeOllama(ScriptedFake):
    """The fake server's state: scripts per path, installed/running models, and a request log."""

    def __init__(self, *, models: Sequence[str] = ("llama3.2:latest", "nomic-embed-text:latest"),
                 running: Sequence[str] = (), version: str = "0.33.0", dims: int = 768) -> None:
        super().__init__()
        self.disconnects = 0
        self.models = list(models)
        self.running = list(running)
        self.version = version
        self.dims = dims
        self.down = False  # every request fails with 500 while set
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post("/api/chat", self._generate)
        self.app.router.add_post("/api/generate", self._generate)
        self.app.router.add_post("/api/embed", self._embed)
        self.app.router.add_get("/api/tags", self._tags)
        self.app.router.add_get("/api/ps", self._ps)
        self.app.router.add_get("/api/version", self._version)
        self.app.router.add_post("/api/show", self._show)
        self.app.router.add_post("/api/pull", self._pull)
        self.app.router.add_delete("/api/delete", self._delete)
        self.app.router.add_post("/api/embeddings", self._embeddings)
        self.app.router.add_post("/api/copy", self._copy)
        self.app.router.add_post("/api/create", self._create)
        self.app.router.add_post("/api/push", self._push)
        self.pull_behaviour: Behaviour | None = None

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if self.down:
            return await status(500, "fake is down")(self, request, body)
        behaviour = self._next(request.path)
        if behaviour is None:
            model = body.get("model")
            if model not in self.models and f"{model}:latest" not in self.models:
                return await status(404, f"model '{model}' not found")(self, request, body)
            behaviour = ok()
        return await behaviour(self, request, body)

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        behaviour = self._next("/api/embed")
        if behaviour is not None:
            return await behaviour(self, request, body)
        inputs = body.get("input")
        items = [inputs] if isinstance(inputs, str) else list(inputs or [])
        vectors = [[round((i + 1) * 0.001 * (j % 7 + 1), 6) for j in range(self.dims)] for i in range(len(items))]
        return web.json_response({"model": body.get("model"), "embeddings": vectors, "total_duration": 1000,
                                  "load_duration": 10, "prompt_eval_count": 4 * len(items)})

    async def _tags(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        if self.down:
            return await status(500, "fake is down")(self, request, {})
        return web.json_response({"models": [
            {"name": m, "model": m, "modified_at": NOW, "size": 1000, "digest": "sha256:" + "0" * 64,
             "details": {"family": "llama", "parameter_size": "3B", "quantization_level": "Q4_K_M"}}
            for m in self.models]})

    async def _ps(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        if self.down:
            return await status(500, "fake is down")(self, request, {})
        return web.json_response({"models": [
            {"name": m, "model": m, "size": 1000, "expires_at": "2026-11-24T10:05:00Z", "size_vram": 1000,
             "context_length": 4096} for m in self.running]})

    async def _version(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        if self.down:
            return await status(500, "fake is down")(self, request, {})
        return web.json_response({"version": self.version})

    async def _show(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        name = body.get("model") or body.get("name")
        if name not in self.models and f"{name}:latest" not in self.models:
            return await status(404, f"model '{name}' not found")(self, request, body)
        return web.json_response({"details": {"family": "llama"}, "modified_at": NOW, "capabilities": ["completion"],
                                  "model_info": {"general.architecture": "llama"}})

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if self.pull_behaviour is not None:
            return await self.pull_behaviour(self, request, body)
        name = str(body.get("model") or body.get("name"))
        lines = [{"status": "pulling manifest"},
                 {"status": "pulling abc", "digest": "sha256:" + "a" * 64, "total": 100, "completed": 50},
                 {"status": "pulling abc", "digest": "sha256:" + "a" * 64, "total": 100, "completed": 100},
                 {"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
        if body.get("stream") is False:  # as Ollama: one object once the pull is done
            resp: web.StreamResponse = web.json_response(lines[-1])
        else:
            resp = await _write_lines(request, self, lines, 0.01)
        if name not in self.models:
            self.models.append(name)
        return resp

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        name = body.get("model") or body.get("name")
        if name not in self.models:
            return await status(404, f"model '{name}' not found")(self, request, body)
        self.models.remove(name)
        return web.Response()

    def _has(self, name: object) -> bool:
        return name in self.models or f"{name}:latest" in self.models

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """The legacy endpoint: one ``prompt`` in, one ``embedding`` out (no counts, as Ollama answers)."""
        body = await self._record(request)
        behaviour = self._next("/api/embeddings")
        if behaviour is not None:
            return await behaviour(self, request, body)
        if not self._has(body.get("model")):
            return await status(404, f"model '{body.get('model')}' not found")(self, request, body)
        return web.json_response({"embedding": [round(0.001 * (j % 7 + 1), 6) for j in range(self.dims)]})

    async def _copy(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if not self._has(body.get("source")):
            return await status(404, f"model '{body.get('source')}' not found")(self, request, body)
        self.models.append(str(body.get("destination")))
        return web.Response()

    async def _progress(self, request: web.Request, body: dict[str, Any],
                        lines: list[dict[str, Any]]) -> web.StreamResponse:
        if body.get("stream", True) is False:
            return web.json_response(lines[-1])
        return await _write_lines(request, self, lines, 0.01)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        source = body.get("from")
        if source is not None and not self._has(source):
            return await status(404, f"model '{source}' not found")(self, request, body)
        self.models.append(str(body.get("model")))
        return await self._progress(request, body, [{"status": "reading model metadata"},
                                                    {"status": "creating system layer"},
                                                    {"status": "writing manifest"}, {"status": "success"}])

    async def _push(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if not self._has(body.get("model")):
            return await status(404, f"model '{body.get('model')}' not found")(self, request, body)
        return await self._progress(request, body, [
            {"status": "retrieving manifest"},
            {"status": "pushing abc", "digest": "sha256:" + "b" * 64, "total": 100, "completed": 100},
            {"status": "pushing manifest"}, {"status": "success"}])
