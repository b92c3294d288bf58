"""``/v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API over Ollama's ``/api/chat``.

Served like chat completions (same routes, splits, fallback, auth, limits, metrics and request
log): the body is translated once (``proxy.translate.anthropic_request``, every field checked) before any
backend is called. An Ollama backend gets the translation with its attempt's model and its answer
is translated back, streamed as Anthropic's SSE events; an ``anthropic`` backend (an
Anthropic-compatible cloud) gets the client's body with the model renamed and its answer, stream
and errors are relayed unchanged. An ``openai`` backend cannot serve this door (no translation
exists): the attempt fails with an error naming the backend type.

``?beta=true`` (Claude Code) and the ``anthropic-version`` / ``anthropic-beta`` headers are accepted
and ignored. A model that cannot think answers Ollama's 400 "does not support thinking" to a
request with thinking on (Claude Code asks for it with any model): the attempt is sent once more
without ``think``, as Ollama's own Anthropic layer drops it. Anthropic's server tools (web search,
bash, ...) cannot run on Ollama: they are left out and named in the ``x-gateway-ignored-tools`` header.

``count_tokens`` answers an *estimate* (``count_tokens_estimate``) without calling a backend, for a
model some route serves and the caller may use (404 / 403 otherwise, as Anthropic answers an
unknown model).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from policies.model import Attempt
from policies.plan import resolve_route
from proxy.context import RequestContext
from proxy.errors import InvalidRequestError, ModelNotFoundError, UpstreamStatusError
from proxy.handlers.common import (
    IGNORED_TOOLS_HEADER,
    begin,
    checked_model,
    json_answer,
    json_response,
    read_body,
    response_headers,
    ignored_tools,
)
from proxy.handlers.generate import with_gateway_headers
from proxy.ids import new_id
from proxy.jsonio import JSONDecodeError, dumps, dumps_kept, loads
from proxy.keys import ACCOUNTING, CTX, ROUTER
from proxy.relay import ollama_error_line, relay_ollama_stream, relay_openai_stream
from proxy.translate.anthropic_answer import ollama_chat_to_anthropic
from proxy.translate.anthropic_request import messages_request_to_ollama, user_of
from proxy.translate.anthropic_stream import AnthropicStreamTally, MessagesStream
from proxy.translate.anthropic_token_count import count_tokens_estimate
from proxy.upstream.backend import Upstream
from proxy.translate.fields import token_count

__all__ = ["IGNORED_TOOLS_HEADER", "add_routes", "messages", "count_tokens"]

log = logging.getLogger("proxy.handlers.messages")
_OLLAMA_PATH = "/api/chat"
_ANTHROPIC_PATH = "/v1/messages"
_OLLAMA_EXTENSIONS = frozenset({"options", "keep_alive"})
_NO_THINKING = "does not support thinking"  # Ollama's 400 for think on a model without the capability


def _cloud_path(request: web.Request) -> str:
    # only the one query Claude-style clients add is passed on, never arbitrary client input
    return _ANTHROPIC_PATH + ("?beta=true" if request.query.get("beta") == "true" else "")


def _count_usage(ctx: RequestContext, raw: bytes) -> None:
    """An Anthropic answer's usage, for metrics, limits and the request log."""
    try:
        answer = loads(raw)
    except JSONDecodeError:
        return
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if isinstance(usage, dict):
        ctx.prompt_tokens = token_count(usage.get("input_tokens"))
        ctx.completion_tokens = token_count(usage.get("output_tokens"))


def _no_translation(upstream: Upstream) -> UpstreamStatusError:
    exc = UpstreamStatusError(
        f"backend {upstream.name} is of type {upstream.kind}: no translation exists from Anthropic's "
        "Messages API to it (route Messages requests to ollama or anthropic backends)",
        code="unsupported_backend", backend=upstream.name)
    exc.final = True  # a retry cannot help (x-should-retry: false)
    return exc


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``: a Messages request, whole or streamed."""
    app = request.app
    ctx = request[CTX]
    config = ctx.config
    body = await read_body(request, config.server)
    begin(request, body, rng=app[ROUTER].rng, accounting=app[ACCOUNTING], user=user_of(body))
    route = ctx.plan.route  # type: ignore[union-attr]
    # max_tokens far above a local model's limit is capped to the route's max_output_tokens, not refused
    translated = messages_request_to_ollama(body, model=ctx.client_model, max_tokens_cap=route.max_output_tokens,
                                            default_options=route.options, default_keep_alive=route.keep_alive,
                                            thinking_capable=None,
                                            refuse_server_tools=route.hosted_tools == "refuse")
    ignored = ignored_tools(ctx, translated.dropped)
    if ignored:
        log.info("request %s: tools left out (they cannot run on Ollama): %s", ctx.request_id,
                 ignored[IGNORED_TOOLS_HEADER])
    native, plan = translated.native, translated.plan
    del translated  # the stream needs only its answer plan; the body goes to Ollama as `native`
    keep_text = config.logging.include_prompts
    if keep_text:
        ctx.prompt_text = dumps(body.get("messages")).decode()
    message_id = new_id("msg_")
    estimate = count_tokens_estimate(body)["input_tokens"] if ctx.stream else 0  # message_start's usage
    payloads: dict[tuple[str, bool], bytes] = {}

    def payload_for(model: str, think: bool) -> bytes:
        key = (model, think)
        if key not in payloads:
            sent = {**native, "model": model}
            if not think:
                sent.pop("think", None)
            payloads[key] = dumps_kept(sent)
        return payloads[key]

    def cloud_payload(model: str) -> bytes:
        # the Ollama extensions (options, keep_alive) mean nothing to Anthropic, which refuses unknown fields
        return dumps_kept({**{k: v for k, v in body.items() if k not in _OLLAMA_EXTENSIONS}, "model": model})

    def release() -> None:  # the answer committed: no other attempt will need the body or its copies
        nonlocal body, native, payloads
        body, native, payloads = {}, {}, {}

    ctx.release = release

    async def call(attempt: Attempt, upstream: Upstream) -> web.StreamResponse:
        if upstream.kind == "anthropic":
            return await _call_anthropic(request, ctx, cloud_payload, attempt, upstream)
        if upstream.kind != "ollama":
            raise _no_translation(upstream)
        think = "think" in native and native["think"] is not False
        t0 = time.perf_counter()
        try:
            if ctx.stream:
                resp = await upstream.send("POST", _OLLAMA_PATH, payload_for(attempt.model, True), model=attempt.model)
            else:
                raw = await upstream.fetch("POST", _OLLAMA_PATH, payload_for(attempt.model, True), model=attempt.model)
        except InvalidRequestError as exc:
            if not (think and _NO_THINKING in exc.message):
                raise
            # the model cannot think: ask again without thinking rather than fail the client
            if ctx.stream:
                resp = await upstream.send("POST", _OLLAMA_PATH, payload_for(attempt.model, False), model=attempt.model)
            else:
                raw = await upstream.fetch("POST", _OLLAMA_PATH, payload_for(attempt.model, False), model=attempt.model)
        ctx.upstream_wait += time.perf_counter() - t0
        if ctx.stream:
            translator = MessagesStream(message_id=message_id, model=ctx.client_model, plan=plan,
                                        input_tokens=estimate)
            translator.keep_text = keep_text
            return await relay_ollama_stream(request, ctx, resp, translator, headers())
        answer = json_answer(raw, upstream.name)
        error = ollama_error_line(answer, upstream.name)
        if error is not None:
            raise error
        out: Any = ollama_chat_to_anthropic(answer, message_id=message_id, model=ctx.client_model, plan=plan)
        ctx.prompt_tokens = out["usage"]["input_tokens"]
        ctx.completion_tokens = out["usage"]["output_tokens"]
        ctx.timings = answer
        if keep_text:
            ctx.answer_text = "".join(str(b.get("text", "")) for b in out["content"] if b.get("type") == "text")
        return json_response(out, headers())

    def headers() -> dict[str, str]:
        out = response_headers(ctx)
        out.update(ignored)
        return out

    return await app[ROUTER].run(ctx, with_gateway_headers(ctx, call))


async def _call_anthropic(request: web.Request, ctx: RequestContext, payload_for: Callable[[str], bytes],
                          attempt: Attempt, upstream: Upstream) -> web.StreamResponse:
    """The client's body with the attempt's model, to an Anthropic-compatible cloud; its answer as is.

    ``payload_for(model)`` makes the bytes: this frame lives as long as the stream, so it keeps
    neither the body nor, once sent, the payload (the commit lets the handler's copies go)."""
    payload = payload_for(attempt.model)
    path = _cloud_path(request)
    t0 = time.perf_counter()
    if ctx.stream:
        resp = await upstream.send("POST", path, payload, model=attempt.model)
        del payload
        ctx.upstream_wait += time.perf_counter() - t0
        # any SSE passes as bytes, unchanged; the tally counts its usage (the relay's edit seam)
        return await relay_openai_stream(request, ctx, resp, response_headers(ctx),
                                         AnthropicStreamTally())  # type: ignore[arg-type]
    raw = await upstream.fetch("POST", path, payload, model=attempt.model)
    ctx.upstream_wait += time.perf_counter() - t0
    _count_usage(ctx, raw)
    return web.Response(body=raw, content_type="application/json", headers=response_headers(ctx))


async def count_tokens(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, an estimate; no backend is called."""
    ctx = request[CTX]
    body = await read_body(request, ctx.config.server)
    model = checked_model(request, body)
    if resolve_route(ctx.config.policy, model) is None:
        raise ModelNotFoundError(model)
    return json_response(count_tokens_estimate(body), {"X-Request-ID": ctx.request_id})


def add_routes(router: web.UrlDispatcher) -> None:
    """Register this door's routes on ``router``."""
    router.add_post("/v1/messages", messages)
    router.add_post("/v1/messages/count_tokens", count_tokens)
