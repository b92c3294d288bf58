"""``POST /v1/embeddings`` -> Ollama ``/api/embed`` (or an OpenAI-compatible backend's ``/embeddings``).

Validated once (translated) before any backend is called, like generation.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from policies.model import Attempt
from proxy.endpoints import EMBEDDING
from proxy.handlers.common import begin, json_answer, json_response, read_body, response_headers
from proxy.handlers.generate import openai_answer_as_client, translate_once, with_gateway_headers
from proxy.jsonio import dumps
from proxy.keys import ACCOUNTING, CTX, ROUTER
from proxy.tokens import decoder
from proxy.translate.embeddings import token_inputs
from proxy.upstream.backend import Upstream

__all__ = ["embeddings"]


async def _with_text_input(body: dict[str, object]) -> dict[str, object]:
    """``body`` for Ollama: token arrays decoded to text (cl100k_base); other bodies unchanged.

    An OpenAI-compatible backend still gets the client's token arrays. Without a local encoding the
    body is left as is, and its translation is the 400 naming the fix.
    """
    arrays = token_inputs(body)
    if arrays is None:
        return body
    decode = await asyncio.to_thread(decoder)  # the first call loads the encoding (~0.4 s)
    if decode is None:
        return body
    return {**body, "input": [decode(ids) for ids in arrays]}


async def embeddings(request: web.Request) -> web.StreamResponse:
    app = request.app
    ctx = request[CTX]
    body = await read_body(request, ctx.config.server)
    begin(request, body, rng=app[ROUTER].rng, accounting=app[ACCOUNTING])
    ctx.stream = False
    native = translate_once(EMBEDDING, await _with_text_input(body), ctx)
    options = EMBEDDING.options(body)

    async def call(attempt: Attempt, upstream: Upstream) -> web.StreamResponse:
        t0 = time.perf_counter()
        if upstream.kind == "openai":
            raw = await upstream.fetch("POST", EMBEDDING.openai_path, dumps({**body, "model": attempt.model}),
                                       model=attempt.model)
            ctx.upstream_wait += time.perf_counter() - t0
            return web.Response(body=openai_answer_as_client(ctx, raw), content_type="application/json",
                                headers=response_headers(ctx))
        raw = await upstream.fetch("POST", EMBEDDING.ollama_path, dumps({**native, "model": attempt.model}),
                                   model=attempt.model)
        ctx.upstream_wait += time.perf_counter() - t0
        answer = json_answer(raw, upstream.name)
        out: Any = EMBEDDING.from_ollama(answer, model=ctx.client_model, **options)
        ctx.prompt_tokens = out["usage"]["prompt_tokens"]
        ctx.timings = {k: v for k, v in answer.items() if k != "embeddings"}
        return json_response(out, response_headers(ctx))

    return await app[ROUTER].run(ctx, with_gateway_headers(ctx, call))
