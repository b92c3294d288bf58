"""Ollama's own native API in front (``/api/*``, ``/``), authenticated and routed.

    POST /api/chat, /api/generate      routed by ``model``; NDJSON streamed (Ollama's default) or one object
    POST /api/embed, /api/embeddings   routed by ``model``; one object
    POST /api/show                     routed by ``model``; the serving backend's answer
    GET  /api/tags, /api/ps            the models the caller may use, merged across Ollama backends
    GET  /api/version                  the lowest version among the Ollama backends
    GET  /  (and HEAD /)               ``Ollama is running``
    POST /api/pull, /api/create, /api/copy, /api/push, DELETE /api/delete   admin only (native_admin)

A model call is routed like any other (aliases, splits, sticky keys, fallback, retries, breakers,
pools preferring the host with the model loaded) over the plan's Ollama attempts only: no
translation of a native call to OpenAI's dialect exists, so OpenAI-type targets are left out (a
route with none left is a 400 naming why). The body is passed through with ``model`` replaced by
the attempt's model and the route's default ``options``/``keep_alive`` filled in; the answer comes
back with ``model`` set to the client's name. Errors are rendered in Ollama's shape by the middleware.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

from aiohttp import web

from policies.model import Attempt
from proxy.context import RequestContext
from proxy.errors import InvalidRequestError
from proxy.handlers.common import begin, json_answer, json_response, read_body, response_headers
from proxy.handlers.native_admin import add_admin_routes
from proxy.handlers.native_lists import add_list_routes
from proxy.handlers.native_stream import relay_ndjson
from proxy.jsonio import dumps, dumps_kept
from proxy.keys import ACCOUNTING, CTX, ROUTER
from proxy.relay import ollama_error_line
from proxy.translate.native import NATIVE_KIND, final_timings, native_attempts, native_body, with_model_field
from proxy.upstream.backend import Upstream

__all__ = ["add_routes", "native_chat", "native_generate", "native_embed", "native_embeddings", "native_show"]

_GENERATION = frozenset({"/api/chat", "/api/generate"})  # stream when ``stream`` is left out; answers carry text


def _plan_native(ctx: RequestContext) -> None:
    """Keep only the plan's attempts an Ollama backend can take (400 when none is left)."""
    plan = ctx.plan
    assert plan is not None
    attempts = native_attempts(plan, ctx.config.policy.backends, ctx.client_model)
    if not attempts:
        backends = sorted({name for a in plan.attempts for name in a.target.backends})
        raise InvalidRequestError(
            f"The model '{ctx.client_model}' is served only by OpenAI-compatible backends ({', '.join(backends)}); "
            f"Ollama's native API cannot reach them. Use /v1/chat/completions or /v1/embeddings for this model.",
            param="model", code="native_unsupported")
    if attempts != plan.attempts:
        ctx.plan = dataclasses.replace(plan, attempts=attempts)


async def _native_call(request: web.Request) -> web.StreamResponse:
    """Route one model call and pass it through natively to the attempt's Ollama backend."""
    app = request.app
    ctx = request[CTX]
    config = ctx.config
    path = request.path
    raw = await read_body(request, config.server)
    if path == "/api/show":
        raw = with_model_field(raw)
    begin(request, raw, rng=app[ROUTER].rng, accounting=app[ACCOUNTING])
    if path in _GENERATION:
        ctx.stream = raw.get("stream") is not False  # Ollama streams unless told not to
    else:
        ctx.stream = False  # embed, embeddings and show answer one object whatever ``stream`` says
    _plan_native(ctx)
    route = ctx.plan.route  # type: ignore[union-attr]
    body = native_body(raw, default_options=route.options, default_keep_alive=route.keep_alive) \
        if path != "/api/show" else raw
    keep_text = config.logging.include_prompts and path in _GENERATION
    if keep_text:
        ctx.prompt_text = dumps(raw.get("messages", raw.get("prompt"))).decode()
    client_model = ctx.client_model
    payloads: dict[str, bytes] = {}

    def release() -> None:  # the stream committed: no other attempt will need the body or its payloads
        nonlocal raw, body, payloads
        raw, body, payloads = {}, {}, {}

    ctx.release = release

    async def call(attempt: Attempt, upstream: Upstream) -> web.StreamResponse:
        if upstream.kind != NATIVE_KIND:  # only after a reload changed the backend's type mid-request
            raise InvalidRequestError(f"Backend {upstream.name} is not an Ollama backend.", code="native_unsupported")
        payload = payloads.get(attempt.model)
        if payload is None:
            payload = payloads[attempt.model] = dumps_kept({**body, "model": attempt.model})
        t0 = time.perf_counter()
        if ctx.stream:
            resp = await upstream.send("POST", path, payload, model=attempt.model)
            del payload  # sent; a retry takes it from `payloads` (which the commit empties)
            ctx.upstream_wait += time.perf_counter() - t0
            return await relay_ndjson(request, ctx, resp, response_headers(ctx), rename=client_model,
                                      keep_text=keep_text)
        answer_raw = await upstream.fetch("POST", path, payload, model=attempt.model)
        ctx.upstream_wait += time.perf_counter() - t0
        answer = json_answer(answer_raw, upstream.name)
        error = ollama_error_line(answer, upstream.name)
        if error is not None:
            raise error
        renamed = "model" in answer and answer["model"] != client_model
        if renamed:
            answer["model"] = client_model
        if path != "/api/show":
            ctx.timings, ctx.prompt_tokens, ctx.completion_tokens = final_timings(answer)
        if keep_text:
            message = answer.get("message")
            text = message.get("content") if isinstance(message, Mapping) else answer.get("response")
            ctx.answer_text = text if isinstance(text, str) else ""
        if not renamed:  # the backend's bytes as they came (an embedding answer can be large)
            return web.Response(body=answer_raw, content_type="application/json", headers=response_headers(ctx))
        return json_response(answer, response_headers(ctx))

    return await app[ROUTER].run(ctx, call)


async def native_chat(request: web.Request) -> web.StreamResponse:
    return await _native_call(request)


async def native_generate(request: web.Request) -> web.StreamResponse:
    return await _native_call(request)


async def native_embed(request: web.Request) -> web.StreamResponse:
    return await _native_call(request)


async def native_embeddings(request: web.Request) -> web.StreamResponse:
    """The legacy ``/api/embeddings`` (``prompt`` -> ``embedding``), passed through as Ollama still serves it."""
    return await _native_call(request)


async def native_show(request: web.Request) -> web.StreamResponse:
    return await _native_call(request)


def add_routes(router: web.UrlDispatcher) -> None:
    """Register this door's routes on ``router``."""
    router.add_post("/api/chat", native_chat)
    router.add_post("/api/generate", native_generate)
    router.add_post("/api/embed", native_embed)
    router.add_post("/api/embeddings", native_embeddings)
    router.add_post("/api/show", native_show)
    add_list_routes(router)
    add_admin_routes(router)
