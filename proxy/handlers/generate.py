"""``POST /v1/chat/completions`` and ``POST /v1/completions``: generation, streamed or not.

An Ollama backend gets the request translated to ``/api/chat`` or ``/api/generate``; an
OpenAI-compatible backend gets the client's body unchanged but for the model name, and its answer,
errors included, is passed back unchanged in shape, so a cloud fallback is transparent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from policies.model import Attempt
from proxy.errors import InvalidRequestError
from proxy.gateway import Gateway
from proxy.handlers.common import begin, created_now, json_answer, json_response, read_body, response_headers
from proxy.ids import new_id
from proxy.imagefetch import ImageFetchError
from proxy.jsonio import JSONDecodeError, dumps, loads
from proxy.keys import GATEWAY
from proxy.relay import ollama_error_line, relay_ollama_stream, relay_openai_stream
from proxy.router import RequestContext, run_plan
from proxy.background.shadow import start_shadow
from proxy.translate.chat import chat_request_to_ollama, ollama_chat_to_openai
from proxy.translate.completions import completion_request_to_ollama, ollama_generate_to_openai, prompt_of
from proxy.translate.stream import ChatStream, CompletionStream
from proxy.upstream.backend import Upstream

__all__ = ["chat_completions", "completions"]


class _Endpoint:
    """What differs between chat and legacy completions."""

    def __init__(self, *, prefix: str, ollama_path: str, openai_path: str,
                 to_ollama: Callable[..., dict[str, object]], stream_cls: type[Any],
                 from_ollama: Callable[..., dict[str, object]]) -> None:
        self.prefix = prefix
        self.ollama_path = ollama_path
        self.openai_path = openai_path
        self.to_ollama = to_ollama
        self.stream_cls = stream_cls
        self.from_ollama = from_ollama


_CHAT = _Endpoint(prefix="chatcmpl-", ollama_path="/api/chat", openai_path="/chat/completions",
                  to_ollama=chat_request_to_ollama, stream_cls=ChatStream, from_ollama=ollama_chat_to_openai)
_COMPLETION = _Endpoint(prefix="cmpl-", ollama_path="/api/generate", openai_path="/completions",
                        to_ollama=completion_request_to_ollama, stream_cls=CompletionStream,
                        from_ollama=ollama_generate_to_openai)


def _extras(endpoint: _Endpoint, body: Mapping[str, object]) -> dict[str, object]:
    """Per-kind keyword arguments for the response translators."""
    if endpoint is _CHAT:
        return {"parallel_tool_calls": body.get("parallel_tool_calls") is not False}
    echo = body.get("echo") is True
    return {"echo_prompt": prompt_of(body) if echo else None}


async def _generate(request: web.Request, endpoint: _Endpoint) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    body = await read_body(request)
    ctx = begin(request, body)
    route = ctx.plan.route  # type: ignore[union-attr]
    completion_id = new_id(endpoint.prefix)
    created = created_now()
    translated: dict[str, bytes] = {}
    keep_text = gw.config.logging.include_prompts

    async def call(attempt: Attempt, upstream: Upstream) -> web.StreamResponse:
        if upstream.kind == "openai":
            return await _call_openai(request, ctx, body, attempt, upstream, endpoint)
        payload = translated.get(attempt.model)
        if payload is None:
            native = endpoint.to_ollama(body, model=attempt.model, default_options=route.options,
                                        default_keep_alive=route.keep_alive)
            payload = translated[attempt.model] = dumps(native)
        extras = _extras(endpoint, body)
        t0 = time.perf_counter()
        if ctx.stream:
            resp = await upstream.send("POST", endpoint.ollama_path, payload, model=attempt.model)
            ctx.upstream_wait += time.perf_counter() - t0
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            translator = endpoint.stream_cls(completion_id=completion_id, created=created, model=ctx.client_model,
                                             include_usage=include_usage, **extras)
            translator.keep_text = keep_text
            return await relay_ollama_stream(request, ctx, resp, translator, response_headers(request, ctx))
        native_answer = json_answer(await upstream.fetch("POST", endpoint.ollama_path, payload, model=attempt.model),
                                     upstream.name)
        ctx.upstream_wait += time.perf_counter() - t0
        error = ollama_error_line(native_answer, upstream.name)
        if error is not None:
            raise error
        out = endpoint.from_ollama(native_answer, completion_id=completion_id, created=created,
                                   model=ctx.client_model, **extras)
        usage = out["usage"]
        ctx.prompt_tokens, ctx.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]  # type: ignore[index]
        ctx.timings = native_answer
        if keep_text:
            choice = out["choices"][0]  # type: ignore[index]
            ctx.answer_text = str(choice.get("text") or (choice.get("message") or {}).get("content") or "")
        return json_response(out, response_headers(request, ctx))

    if keep_text:
        ctx.prompt_text = dumps(body.get("messages", body.get("prompt"))).decode()
    if endpoint is _CHAT:
        await _fetch_image_urls(gw, body)
    if ctx.plan is not None and ctx.plan.shadow is not None:
        start_shadow(gw, ctx, body, endpoint="chat" if endpoint is _CHAT else "completion")
    return await run_plan(gw, ctx, call)


async def _fetch_image_urls(gw: Gateway, body: dict[str, object]) -> None:
    """With ``image_fetch.enabled``, replace http(s) image URLs of user messages by fetched data URLs.

    In place, before any translation. The fetcher refuses hosts not allowed and private addresses
    (after DNS and on every redirect); a refusal is a 400 naming the image's path in ``param``.
    """
    fetcher, messages = gw.image_fetcher, body.get("messages")
    if fetcher is None or not gw.config.image_fetch.enabled or not isinstance(messages, list):
        return
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) and message.get("role") == "user" else None
        for j, part in enumerate(content if isinstance(content, list) else ()):
            ref = part.get("image_url") if isinstance(part, dict) and part.get("type") == "image_url" else None
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                continue
            try:
                data_url = await fetcher.fetch_data_url(url)
            except ImageFetchError as exc:
                raise InvalidRequestError(f"Could not use the image URL: {exc.message}.", code=exc.code,
                                          param=f"messages[{i}].content[{j}].image_url.url") from None
            part["image_url"] = {**ref, "url": data_url} if isinstance(ref, dict) else data_url


async def _call_openai(request: web.Request, ctx: RequestContext, body: Mapping[str, object],
                       attempt: Attempt, upstream: Upstream, endpoint: _Endpoint) -> web.StreamResponse:
    payload = dumps({**body, "model": attempt.model})
    t0 = time.perf_counter()
    if ctx.stream:
        resp = await upstream.send("POST", endpoint.openai_path, payload, model=attempt.model)
        ctx.upstream_wait += time.perf_counter() - t0
        return await relay_openai_stream(request, ctx, resp, response_headers(request, ctx))
    raw = await upstream.fetch("POST", endpoint.openai_path, payload, model=attempt.model)
    ctx.upstream_wait += time.perf_counter() - t0
    _count_openai_usage(ctx, raw)
    return web.Response(body=raw, content_type="application/json", headers=response_headers(request, ctx))


def _count_openai_usage(ctx: RequestContext, raw: bytes) -> None:
    try:
        answer = loads(raw)
    except JSONDecodeError:
        return
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if isinstance(usage, dict):
        ctx.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        ctx.completion_tokens = int(usage.get("completion_tokens") or 0)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, _CHAT)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, _COMPLETION)

