"""``POST /v1/embeddings`` -> Ollama ``/api/embed`` (or an OpenAI-compatible backend's ``/embeddings``)."""

from __future__ import annotations

import time

from aiohttp import web

from policies.model import Attempt
from proxy.handlers.common import begin, json_answer, json_response, read_body, response_headers
from proxy.jsonio import dumps
from proxy.keys import GATEWAY
from proxy.router import run_plan
from proxy.translate.embeddings import embedding_request_to_ollama, encoding_of, ollama_embed_to_openai
from proxy.upstream.backend import Upstream

__all__ = ["embeddings"]


async def embeddings(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    body = await read_body(request)
    ctx = begin(request, body)
    ctx.stream = False
    route = ctx.plan.route  # type: ignore[union-attr]
    encoding = encoding_of(body)

    async def call(attempt: Attempt, upstream: Upstream) -> web.StreamResponse:
        t0 = time.perf_counter()
        if upstream.kind == "openai":
            raw = await upstream.fetch("POST", "/embeddings", dumps({**body, "model": attempt.model}),
                                       model=attempt.model)
            ctx.upstream_wait += time.perf_counter() - t0
            return web.Response(body=raw, content_type="application/json", headers=response_headers(request, ctx))
        native = embedding_request_to_ollama(body, model=attempt.model, default_options=route.options,
                                             default_keep_alive=route.keep_alive)
        raw = await upstream.fetch("POST", "/api/embed", dumps(native), model=attempt.model)
        ctx.upstream_wait += time.perf_counter() - t0
        answer = json_answer(raw, upstream.name)
        out = ollama_embed_to_openai(answer, model=ctx.client_model, encoding=encoding)
        ctx.prompt_tokens = out["usage"]["prompt_tokens"]  # type: ignore[index]
        ctx.timings = {k: v for k, v in answer.items() if k != "embeddings"}
        return json_response(out, response_headers(request, ctx))

    return await run_plan(gw, ctx, call)
