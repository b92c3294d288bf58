"""``/v1/responses``: the OpenAI Responses API over Ollama's native ``/api/chat`` (issue 13).

``POST /v1/responses`` runs like chat completions: the body is read and planned (routes, splits,
fallback, auth, limits, metrics and the request log are the same), translated once before any
backend is called (every field checked, 400 naming it), image URLs fetched only after a stand-in
passed validation, then the router's attempts. An Ollama backend gets ``/api/chat`` and its answer
comes back as a ``response`` object, or streamed as the typed event sequence
(``proxy.translate.responses_stream.ResponsesStream``). An OpenAI-compatible backend gets the client's body
unchanged but for the model name (``POST {base}/responses``) and its answer is passed back as is.

State: with ``store`` (default true) the response and the items it was generated from are kept
(``proxy.responses_store``) under the caller's name, so ``previous_response_id`` continues the
conversation and the ``GET``/``DELETE`` routes (``proxy.handlers.responses_stored``) find it.
Answers of OpenAI-compatible backends are not stored here: such a backend keeps its own. An id this
gateway did not store is a 404, unless the route can reach an OpenAI-compatible backend, which then
gets the id as sent (its own). Hosted tools (``web_search``, ...) are left out of what Ollama sees;
the ``x-gateway-ignored-tools`` response header names them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from policies.model import Attempt
from proxy.context import RequestContext
from proxy.endpoints import Endpoint
from proxy.errors import InvalidRequestError
from proxy.handlers.common import (
    IGNORED_TOOLS_HEADER,
    begin,
    created_now,
    json_answer,
    json_response,
    read_body,
    response_headers,
    ignored_tools,
)
from proxy.handlers.responses_stored import (
    RESPONSES,
    delete_response,
    list_input_items,
    not_found,
    owner_of,
    retrieve_response,
    stored_input_items,
)
from proxy.ids import new_id
from proxy.imagefetch import ImageFetcher, ImageFetchError
from proxy.jsonio import JSONDecodeError, dumps, dumps_kept, loads
from proxy.keys import ACCOUNTING, CTX, IMAGES, ROUTER, SHADOWS
from proxy.relay import ollama_error_line, relay_ollama_stream, relay_openai_stream
from proxy.responses_store import MemoryResponseStore, ResponseStore, StoredResponse
from proxy.translate.responses_answer import ollama_chat_to_response
from proxy.translate.responses_request import ResponsesRequest, responses_request_to_ollama
from proxy.translate.responses_stream import ResponsesStream
from proxy.upstream.backend import Upstream

__all__ = ["RESPONSES", "RESPONSES_ENDPOINT", "IGNORED_TOOLS_HEADER", "add_routes", "create_response"]

# stands in for a remote image while the body is validated, before anything is fetched
_PLACEHOLDER_IMAGE = "data:image/png;base64,iVBORw0KGgo="


def _to_ollama(body: Mapping[str, object], *, model: str, default_options: Mapping[str, object] = {},
               default_keep_alive: str | int | float | None = None) -> dict[str, object]:
    return responses_request_to_ollama(body, model=model, default_options=default_options,
                                       default_keep_alive=default_keep_alive).native


# for shadow traffic, which reads the paths of an endpoint (the handler below calls the translators itself)
RESPONSES_ENDPOINT = Endpoint(name="responses", path="/v1/responses", ollama_path="/api/chat",
                              openai_path="/responses", id_prefix="resp_", to_ollama=_to_ollama,
                              from_ollama=ollama_chat_to_response, stream=ResponsesStream, options=lambda body: {})


def add_routes(app: web.Application) -> None:
    """Register this door's routes on ``app`` and give it a response store (in memory) unless it has one."""
    if RESPONSES not in app:
        app[RESPONSES] = MemoryResponseStore()
    r = app.router
    r.add_post("/v1/responses", create_response)
    r.add_get("/v1/responses/{response_id}", retrieve_response)
    r.add_delete("/v1/responses/{response_id}", delete_response)
    r.add_get("/v1/responses/{response_id}/input_items", list_input_items)


def _translate(body: Mapping[str, object], ctx: RequestContext,
               prior: list[dict[str, object]]) -> ResponsesRequest:
    route = ctx.plan.route  # type: ignore[union-attr]
    return responses_request_to_ollama(body, model=ctx.client_model, default_options=route.options,
                                       default_keep_alive=route.keep_alive, prior_items=prior,
                                       hosted_tools="refuse" if route.hosted_tools == "refuse" else "ignore")


def _reaches_openai(ctx: RequestContext) -> bool:
    """Whether any attempt of the plan may go to an OpenAI-compatible backend."""
    kinds = ctx.config.policy.backends
    return any(kinds.get(name) == "openai" for attempt in ctx.plan.attempts  # type: ignore[union-attr]
               for name in attempt.target.backends)


async def create_response(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``: generate, streamed or not; store it unless ``store`` is false."""
    app = request.app
    ctx = request[CTX]
    config = ctx.config
    store: ResponseStore = app[RESPONSES]
    owner = owner_of(request)
    body = await read_body(request, config.server)
    begin(request, body, rng=app[ROUTER].rng, accounting=app[ACCOUNTING])
    previous_id = body.get("previous_response_id")
    previous = None
    if isinstance(previous_id, str):  # another type: the translator's 400
        previous = await store.get(owner, previous_id)
        if previous is None and not _reaches_openai(ctx):
            raise not_found(previous_id, "previous_response_id")
    prior = previous.conversation() if previous is not None else []
    remote = _remote_images(body) if config.image_fetch.enabled else []
    originals = [_part(body, at) for at in remote]
    for at, part in zip(remote, originals):  # validated with a stand-in first: nothing is fetched for a bad body
        _set_part(body, at, {**part, "image_url": _PLACEHOLDER_IMAGE})
    translated = _translate(body, ctx, prior)
    if remote:
        await _fetch_images(app[IMAGES], body, remote, originals)
        translated = _translate(body, ctx, prior)
    keep_text = config.logging.include_prompts
    if keep_text:
        ctx.prompt_text = dumps(body.get("input")).decode()
    ignored = ignored_tools(ctx, translated.left_out)
    openai_body = _openai_body(body, previous)
    if ctx.plan is not None and ctx.plan.shadow is not None:
        app[SHADOWS].start(ctx, RESPONSES_ENDPOINT, openai_body, translated.native)
    keep = translated.echo.get("store") is not False
    # what the model saw, for the store: kept for the whole stream only when the response is stored
    input_items = [*prior, *stored_input_items(translated.input_items)] if keep else []
    # what translating the answer needs: the request's settings, not its messages or input
    answering = dataclasses.replace(translated, native={}, input_items=(), prior_items=())
    unknown_previous = previous is None and isinstance(previous_id, str)
    response_id = new_id("resp_")
    created = created_now()
    payloads: dict[str, bytes] = {}

    def openai_payload(model: str) -> bytes:
        return dumps_kept({**openai_body, "model": model})

    def release() -> None:  # the answer committed: no other attempt will need the body or its copies
        nonlocal body, openai_body, translated, originals, payloads, previous, prior
        body, openai_body, translated, originals, payloads, previous, prior = {}, {}, answering, [], {}, None, []

    ctx.release = release

    async def remember(response: Mapping[str, Any] | None) -> None:
        if keep and response is not None and response.get("status") in ("completed", "incomplete"):
            await store.put(owner, response_id, StoredResponse(response=dict(response), input_items=input_items))

    async def call(attempt: Attempt, upstream: Upstream) -> web.StreamResponse:
        headers = response_headers(ctx)  # this attempt's backend and model
        if upstream.kind == "openai":  # it gets the hosted tools: nothing was left out
            return await _call_openai(request, ctx, openai_payload, attempt, upstream, headers)
        headers.update(ignored)
        if unknown_previous:
            raise not_found(previous_id, "previous_response_id")  # not ours, and this backend has no state
        payload = payloads.get(attempt.model)
        if payload is None:
            payload = payloads[attempt.model] = dumps_kept({**translated.native, "model": attempt.model})
        t0 = time.perf_counter()
        if ctx.stream:
            resp = await upstream.send("POST", "/api/chat", payload, model=attempt.model)
            del payload  # sent; a retry takes it from `payloads` (which the commit empties)
            ctx.upstream_wait += time.perf_counter() - t0
            translator = _StoringStream(remember, request=answering, response_id=response_id,
                                        created_at=created, model=ctx.client_model, new_id=new_id, now=created_now)
            translator.keep_text = keep_text
            try:
                return await relay_ollama_stream(request, ctx, resp, translator, headers)
            finally:
                if translator.storing is not None:
                    await translator.storing
        raw = await upstream.fetch("POST", "/api/chat", payload, model=attempt.model)
        ctx.upstream_wait += time.perf_counter() - t0
        native_answer = json_answer(raw, upstream.name)
        error = ollama_error_line(native_answer, upstream.name)
        if error is not None:
            raise error
        response = ollama_chat_to_response(native_answer, request=translated, response_id=response_id,
                                           created_at=created, model=ctx.client_model, new_id=new_id,
                                           completed_at=created_now())
        usage: Any = response["usage"]
        ctx.prompt_tokens, ctx.completion_tokens = usage["input_tokens"], usage["output_tokens"]
        ctx.timings = native_answer
        if keep_text:
            ctx.answer_text = "".join(part.get("text", "") for item in response["output"]  # type: ignore[attr-defined]
                                      if item.get("type") == "message" for part in item["content"])
        await remember(response)
        return json_response(response, headers)

    return await app[ROUTER].run(ctx, call)


class _StoringStream(ResponsesStream):
    """Starts storing the response as soon as it is complete, before its last event is written, so a
    client that continues it at once (``previous_response_id``) finds it; the handler awaits it."""

    def __init__(self, remember: Callable[[Mapping[str, Any]], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._remember = remember
        self.storing: asyncio.Future[None] | None = None

    def feed(self, obj: Mapping[str, object]) -> bytes:
        out = super().feed(obj)
        if self.response is not None and self.storing is None:
            self.storing = asyncio.ensure_future(self._remember(self.response))
        return out


def _openai_body(body: Mapping[str, object], previous: StoredResponse | None) -> dict[str, object]:
    """What an OpenAI-compatible backend gets: the client's body; a conversation this gateway stored
    is sent in full instead of its id, which that backend does not know (reasoning items left out:
    ours carry no encrypted content a cloud would accept)."""
    out = dict(body)
    if previous is not None:
        items = body.get("input")
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": items}]}]
        out["input"] = [*(item for item in previous.conversation() if item.get("type") != "reasoning"),
                        *(items if isinstance(items, list) else ())]
        del out["previous_response_id"]
    return out


def _remote_images(body: Mapping[str, object]) -> list[tuple[int, str, int]]:
    """Where the input's http(s) image URLs are: (item index, "content" or "output", part index)."""
    items = body.get("input")
    found = []
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if not isinstance(item, dict):
            continue
        key = "output" if item.get("type") == "function_call_output" else "content"
        if key == "content" and item.get("role") != "user":
            continue
        parts = item.get(key)
        for j, part in enumerate(parts if isinstance(parts, list) else ()):
            url = part.get("image_url") if isinstance(part, dict) and part.get("type") == "input_image" else None
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                found.append((i, key, j))
    return found


def _part(body: Mapping[str, object], at: tuple[int, str, int]) -> dict[str, Any]:
    return body["input"][at[0]][at[1]][at[2]]  # type: ignore[index,no-any-return]


def _set_part(body: Mapping[str, object], at: tuple[int, str, int], part: dict[str, Any]) -> None:
    body["input"][at[0]][at[1]][at[2]] = part  # type: ignore[index]


async def _fetch_images(fetcher: ImageFetcher, body: dict[str, object], remote: list[tuple[int, str, int]],
                        originals: list[dict[str, Any]]) -> None:
    """Put the fetched images, as data URLs, where the stand-ins were; a refusal is a 400 naming the image."""
    for at, part in zip(remote, originals):
        try:
            data_url = await fetcher.fetch_data_url(str(part["image_url"]))
        except ImageFetchError as exc:
            raise InvalidRequestError(f"Could not use the image URL: {exc.message}.", code=exc.code,
                                      param=f"input[{at[0]}].{at[1]}[{at[2]}].image_url") from None
        _set_part(body, at, {**part, "image_url": data_url})


async def _call_openai(request: web.Request, ctx: RequestContext, payload_for: Callable[[str], bytes],
                       attempt: Attempt, upstream: Upstream, headers: Mapping[str, str]) -> web.StreamResponse:
    """The client's body (``payload_for(model)``) to an OpenAI-compatible backend; its answer as is.

    This frame lives as long as the stream: it keeps neither the body nor, once sent, the payload."""
    payload = payload_for(attempt.model)
    t0 = time.perf_counter()
    if ctx.stream:
        resp = await upstream.send("POST", RESPONSES_ENDPOINT.openai_path, payload, model=attempt.model)
        del payload
        ctx.upstream_wait += time.perf_counter() - t0
        return await relay_openai_stream(request, ctx, resp, headers)
    raw = await upstream.fetch("POST", RESPONSES_ENDPOINT.openai_path, payload, model=attempt.model)
    ctx.upstream_wait += time.perf_counter() - t0
    try:
        answer = loads(raw)
    except JSONDecodeError:
        answer = None
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if isinstance(usage, dict):
        ctx.prompt_tokens = int(usage.get("input_tokens") or 0)
        ctx.completion_tokens = int(usage.get("output_tokens") or 0)
    return web.Response(body=raw, content_type="application/json", headers=headers)
