"""``POST /v1/chat/completions`` and ``POST /v1/completions``: generation, streamed or not.

The body is validated once, before any backend is called: it is translated to Ollama's native shape
(which checks every field), and only then are image URLs fetched and a shadow copy started. An
Ollama backend gets that translation (with its attempt's model); an OpenAI-compatible backend gets
the client's body unchanged but for the model name, and its answer, errors included, is passed back
unchanged in shape, so a cloud fallback is transparent.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from policies.model import Attempt
from policies.outcome import Outcome
from proxy.context import RequestContext
from proxy.endpoints import CHAT, COMPLETION, Endpoint
from proxy.errors import InvalidRequestError, PassthroughError, ProxyError
from proxy.handlers.fanout import complete_prompts
from proxy.handlers.common import begin, created_now, json_answer, json_response, read_body, response_headers
from proxy.ids import new_id
from proxy.imagefetch import ImageFetcher, ImageFetchError
from proxy.jsonio import JSONDecodeError, dumps, dumps_kept, loads
from proxy.keys import ACCOUNTING, CTX, IMAGES, ROUTER, SHADOWS
from proxy.translate.completions import prompts_of
from proxy.relay import OpenAIStreamEdit, ollama_error_line, relay_ollama_stream, relay_openai_stream
from proxy.upstream.backend import Upstream
from proxy.translate.fields import token_count

__all__ = ["Call", "chat_completions", "completions", "context_length_error", "include_usage_of",
           "openai_answer_as_client", "silently_truncated", "translate_once", "with_gateway_headers"]

Call = Callable[[Attempt, Upstream], Awaitable[web.StreamResponse]]

# stands in for a remote image while the body is validated, before anything is fetched
_PLACEHOLDER_IMAGE = "data:image/png;base64,iVBORw0KGgo="


def translate_once(endpoint: Endpoint, body: Mapping[str, object], ctx: RequestContext) -> dict[str, object]:
    """The body in Ollama's shape for ``ctx``'s route: validates every field (400 naming it)."""
    route = ctx.plan.route  # type: ignore[union-attr]
    return endpoint.to_ollama(body, model=ctx.client_model, default_options=route.options,
                              default_keep_alive=route.keep_alive)


async def _generate(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    app = request.app
    ctx = request[CTX]
    config = ctx.config
    body = await read_body(request, config.server)
    begin(request, body, rng=app[ROUTER].rng, accounting=app[ACCOUNTING])
    remote = _remote_images(body) if endpoint is CHAT and config.image_fetch.enabled else []
    originals = [_part(body, at) for at in remote]
    for at, part in zip(remote, originals):  # validated with a stand-in first: nothing is fetched for a bad body
        _set_part(body, at, _with_url(part, _PLACEHOLDER_IMAGE))
    native = translate_once(endpoint, body, ctx)
    if remote:
        await _fetch_images(app[IMAGES], body, remote, originals)
        native = translate_once(endpoint, body, ctx)
    options = endpoint.options(body)
    keep_text = config.logging.include_prompts
    if keep_text:
        ctx.prompt_text = dumps(body.get("messages", body.get("prompt"))).decode()
    if ctx.plan is not None and ctx.plan.shadow is not None:
        app[SHADOWS].start(ctx, endpoint, body, native)
    completion_id = new_id(endpoint.id_prefix)
    created = created_now()
    payloads: dict[str, bytes] = {}

    prompts = prompts_of(body) if endpoint is COMPLETION else []

    def release() -> None:  # the answer committed: no other attempt will need the body or its copies
        nonlocal body, native, originals, payloads, prompts
        body, native, originals, payloads, prompts = {}, {}, [], {}, []

    ctx.release = release

    async def call(attempt: Attempt, upstream: Upstream) -> web.StreamResponse:
        if upstream.kind == "openai":
            return await _call_openai(request, ctx, body, attempt, upstream, endpoint)
        if len(prompts) > 1:
            return await complete_prompts(request, ctx, native, prompts, attempt, upstream,
                                          completion_id=completion_id, created=created,
                                          include_usage=include_usage_of(body), echo=body.get("echo") is True,
                                          keep_text=keep_text, check=silently_truncated)
        payload = payloads.get(attempt.model)
        if payload is None:
            # truncate: false makes Ollama refuse a prompt longer than its context instead of dropping
            # its start silently (Ollama versions without it ignore the field)
            payload = payloads[attempt.model] = dumps_kept({**native, "model": attempt.model, "truncate": False})
        t0 = time.perf_counter()
        if ctx.stream:
            resp = await upstream.send("POST", endpoint.ollama_path, payload, model=attempt.model)
            del payload  # sent; a retry takes it from `payloads` (which the commit empties)
            ctx.upstream_wait += time.perf_counter() - t0
            include_usage = include_usage_of(body)
            translator = endpoint.stream(completion_id=completion_id, created=created,  # type: ignore[misc]
                                         model=ctx.client_model, include_usage=include_usage, **options)
            translator.keep_text = keep_text
            return await relay_ollama_stream(request, ctx, resp, translator, response_headers(ctx))
        raw = await upstream.fetch("POST", endpoint.ollama_path, payload, model=attempt.model)
        ctx.upstream_wait += time.perf_counter() - t0
        native_answer = json_answer(raw, upstream.name)
        error = ollama_error_line(native_answer, upstream.name) or silently_truncated(native, native_answer, upstream.name)
        if error is not None:
            raise error
        out = endpoint.from_ollama(native_answer, completion_id=completion_id, created=created,
                                   model=ctx.client_model, **options)
        usage: Any = out["usage"]
        ctx.prompt_tokens, ctx.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
        ctx.timings = native_answer
        if keep_text:
            choice: Any = out["choices"][0]  # type: ignore[index]
            ctx.answer_text = str(choice.get("text") or (choice.get("message") or {}).get("content") or "")
        return json_response(out, response_headers(ctx))

    return await app[ROUTER].run(ctx, with_gateway_headers(ctx, call))


def with_gateway_headers(ctx: RequestContext, call: Call) -> Call:
    """``call`` whose failures carry the ``x-gateway-*`` headers of the attempt that failed.

    A prompt too long for the context it would run with becomes OpenAI's 400
    ``context_length_exceeded`` with the ``context_length`` outcome (a route may fall back on it).
    """

    async def attempt_call(attempt: Attempt, upstream: Upstream) -> web.StreamResponse:
        try:
            return await call(attempt, upstream)
        except ProxyError as exc:
            exc = context_length_error(exc) or exc
            exc.headers = {**response_headers(ctx), **exc.headers}
            raise exc from None

    return attempt_call


_OLLAMA_TOO_LONG = "exceeds the context length"  # Ollama's 400 with truncate: false


def context_length_error(exc: ProxyError) -> ProxyError | None:
    """OpenAI's ``context_length_exceeded`` for a backend's "prompt too long" answer, else None.

    Ollama answers 400 "the input length exceeds the context length" when asked not to truncate; an
    OpenAI-compatible backend's own 400 with that code is relayed as is, only its outcome is set.
    """
    if exc.outcome is not Outcome.BAD_REQUEST:
        return None
    if isinstance(exc, PassthroughError):
        if b"context_length_exceeded" in exc.raw_body:
            exc.outcome = Outcome.CONTEXT_LENGTH
        return None
    if _OLLAMA_TOO_LONG not in exc.message:
        return None
    return InvalidRequestError(
        "This model's maximum context length was exceeded by the prompt (Ollama: the input length exceeds "
        "the context length). Shorten the prompt, or raise num_ctx "
        "(extra_body={\"options\": {\"num_ctx\": ...}}).",
        param="messages", code="context_length_exceeded", outcome=Outcome.CONTEXT_LENGTH, backend=exc.backend)


def silently_truncated(native: Mapping[str, object], answer: Mapping[str, object],
                       backend: str) -> ProxyError | None:
    """An older Ollama ignores ``truncate: false``: a whole answer that evaluated a full context.

    Only when the request's context size is known (``num_ctx`` from the request or the route): a
    prompt that filled it exactly was cut (Ollama keeps ``num_ctx`` tokens of a longer one).
    """
    options = native.get("options")
    num_ctx = options.get("num_ctx") if isinstance(options, Mapping) else None
    evaluated = answer.get("prompt_eval_count")
    if not isinstance(num_ctx, int) or not isinstance(evaluated, int) or evaluated < num_ctx:
        return None
    return InvalidRequestError(
        f"This model's context length is {num_ctx} tokens (num_ctx), and the prompt filled it: Ollama dropped "
        "the start of the prompt. Shorten the prompt, or raise num_ctx.",
        param="messages", code="context_length_exceeded", outcome=Outcome.CONTEXT_LENGTH,
        backend=backend)


def _remote_images(body: Mapping[str, object]) -> list[tuple[int, int]]:
    """Where the user messages' http(s) image URLs are: (message index, part index)."""
    messages = body.get("messages")
    found = []
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) and message.get("role") == "user" else None
        for j, part in enumerate(content if isinstance(content, list) else ()):
            ref = part.get("image_url") if isinstance(part, dict) and part.get("type") == "image_url" else None
            url = ref.get("url") if isinstance(ref, dict) else ref
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                found.append((i, j))
    return found


def _part(body: Mapping[str, object], at: tuple[int, int]) -> dict[str, Any]:
    return body["messages"][at[0]]["content"][at[1]]  # type: ignore[index,no-any-return]


def _set_part(body: Mapping[str, object], at: tuple[int, int], part: dict[str, Any]) -> None:
    body["messages"][at[0]]["content"][at[1]] = part  # type: ignore[index]


def _with_url(part: dict[str, Any], url: str) -> dict[str, Any]:
    ref = part["image_url"]
    return {**part, "image_url": {**ref, "url": url} if isinstance(ref, dict) else url}


async def _fetch_images(fetcher: ImageFetcher, body: dict[str, object], remote: list[tuple[int, int]],
                        originals: list[dict[str, Any]]) -> None:
    """Put the fetched images, as data URLs, where the stand-ins were (before the real translation).

    The fetcher refuses hosts not allowed and private addresses (after DNS and on every redirect);
    a refusal is a 400 naming the image's path in ``param``.
    """
    for (i, j), part in zip(remote, originals):
        ref = part["image_url"]
        url = ref.get("url") if isinstance(ref, dict) else ref
        try:
            data_url = await fetcher.fetch_data_url(str(url))
        except ImageFetchError as exc:
            raise InvalidRequestError(f"Could not use the image URL: {exc.message}.", code=exc.code,
                                      param=f"messages[{i}].content[{j}].image_url.url") from None
        _set_part(body, (i, j), _with_url(part, data_url))


async def _call_openai(request: web.Request, ctx: RequestContext, body: Mapping[str, object],
                       attempt: Attempt, upstream: Upstream, endpoint: Endpoint) -> web.StreamResponse:
    """The client's body for ``attempt``'s model; the answer carries the client's model name.

    A stream asks the backend for its usage (``stream_options.include_usage``) so the request is
    metered with real tokens; the usage chunk is dropped again when the client did not ask for it.
    """
    sent: dict[str, object] = {**body, "model": attempt.model}
    client_wants_usage = include_usage_of(body)
    if ctx.stream:
        options = body.get("stream_options")
        sent["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    payload = dumps_kept(sent)
    del sent
    t0 = time.perf_counter()
    if ctx.stream:
        del body  # this frame lives as long as the stream: it keeps no copy of the request (nor does the commit)
        resp = await upstream.send("POST", endpoint.openai_path, payload, model=attempt.model)
        del payload
        ctx.upstream_wait += time.perf_counter() - t0
        edit = OpenAIStreamEdit(model=ctx.client_model, client_wants_usage=client_wants_usage)
        return await relay_openai_stream(request, ctx, resp, response_headers(ctx), edit)
    raw = await upstream.fetch("POST", endpoint.openai_path, payload, model=attempt.model)
    ctx.upstream_wait += time.perf_counter() - t0
    return web.Response(body=openai_answer_as_client(ctx, raw), content_type="application/json",
                        headers=response_headers(ctx))


def include_usage_of(body: Mapping[str, object]) -> bool:
    """Whether the client asked for a stream's usage chunk (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def openai_answer_as_client(ctx: RequestContext, raw: bytes) -> bytes:
    """An OpenAI-compatible backend's whole answer under the client's model name, its usage counted.

    A body that is not a JSON object passes unchanged (the client's SDK reports it as it would).
    """
    try:
        answer = loads(raw)
    except JSONDecodeError:
        return raw
    if not isinstance(answer, dict):
        return raw
    usage = answer.get("usage")
    if isinstance(usage, dict):
        ctx.prompt_tokens = token_count(usage.get("prompt_tokens"))
        ctx.completion_tokens = token_count(usage.get("completion_tokens"))
    if "model" not in answer:
        return raw
    answer["model"] = ctx.client_model
    return dumps(answer)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, CHAT)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, COMPLETION)
