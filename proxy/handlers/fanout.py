"""Several prompts in one legacy completions request, on an Ollama backend: one call per prompt.

LangChain's ``OpenAI`` LLM sends its ``generate([...])`` and ``.batch()`` prompts as one request
with ``prompt`` a list. Ollama's ``/api/generate`` takes one prompt, so each attempt sends one call
per prompt, all at once, and merges the answers (``choices`` indexed as OpenAI does, usage
summed) or, streamed, relays the chunks of every prompt as they come, each with its index. The
request passes admission once (one request for rate limits and concurrency) and is metered with
the tokens of all its prompts. A failure of any prompt before the first byte fails the attempt
as a whole, so the route's fallback runs every prompt again elsewhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from aiohttp import web

from policies.model import Attempt
from proxy.context import RequestContext
from proxy.endpoints import COMPLETION
from proxy.errors import ProxyError
from proxy.handlers.common import json_answer, json_response, response_headers
from proxy.jsonio import dumps
from proxy.relay import ollama_error_line, relay_fanout_stream
from proxy.translate.completions import CompletionFanOut, merge_completions
from proxy.upstream.backend import Upstream, UpstreamResponse

__all__ = ["Check", "complete_prompts"]

_T = TypeVar("_T")
Check = Callable[[Mapping[str, object], Mapping[str, object], str], "ProxyError | None"]


async def _all_or_first_error(calls: Sequence[Awaitable[_T]]) -> list[_T]:
    """Every call's result, or the first failure (the others cancelled)."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


async def complete_prompts(request: web.Request, ctx: RequestContext, native: Mapping[str, object],
                           prompts: Sequence[str], attempt: Attempt, upstream: Upstream, *, completion_id: str,
                           created: int, include_usage: bool, echo: bool, keep_text: bool,
                           check: Check | None = None) -> web.StreamResponse:
    """One ``/api/generate`` call per prompt on ``upstream``, answered as one completions response.

    ``check(native, answer, backend)`` may refuse a whole answer (a silently truncated prompt).
    """
    payloads = [dumps({**native, "model": attempt.model, "prompt": prompt, "truncate": False}) for prompt in prompts]
    path = COMPLETION.ollama_path
    t0 = time.perf_counter()
    if ctx.stream:
        sends = [upstream.send("POST", path, payload, model=attempt.model) for payload in payloads]
        tasks = [asyncio.ensure_future(send) for send in sends]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
        started = [task.result() for task in tasks if task.done() and not task.cancelled()
                   and task.exception() is None]
        failed = next((task.exception() for task in tasks if task.done() and not task.cancelled()
                       and task.exception() is not None), None)
        if failed is not None:
            for resp in started:
                resp.close()
            raise failed
        ctx.upstream_wait += time.perf_counter() - t0
        responses: list[UpstreamResponse] = started
        translator = CompletionFanOut(completion_id=completion_id, created=created, model=ctx.client_model,
                                      prompts=len(prompts), include_usage=include_usage,
                                      echo_prompts=list(prompts) if echo else None)
        translator.keep_text = keep_text
        return await relay_fanout_stream(request, ctx, responses, translator, response_headers(ctx))
    raws = await _all_or_first_error([upstream.fetch("POST", path, payload, model=attempt.model)
                                      for payload in payloads])
    ctx.upstream_wait += time.perf_counter() - t0
    answers = []
    for prompt, raw in zip(prompts, raws):
        answer = json_answer(raw, upstream.name)
        error = ollama_error_line(answer, upstream.name) or (check(native, answer, upstream.name) if check else None)
        if error is not None:
            raise error
        answers.append(COMPLETION.from_ollama(answer, completion_id=completion_id, created=created,
                                              model=ctx.client_model, echo_prompt=prompt if echo else None))
    out: Any = merge_completions(answers)
    ctx.prompt_tokens, ctx.completion_tokens = out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"]
    if keep_text:
        ctx.answer_text = "\n".join(str(choice.get("text") or "") for choice in out["choices"])
    return json_response(out, response_headers(ctx))
