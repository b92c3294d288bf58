"""Ollama's model-changing calls in front, for the admin credential only (the middleware checks it).

    POST   /api/pull     through the gateway's ``Puller``: one pull per (backend, model) in flight,
                         shared with auto-pull and warm-up; progress streamed as Ollama's NDJSON
    POST   /api/push, /api/create   passed through; progress streamed (Ollama's default) or one object
    POST   /api/copy     passed through (200, empty body)
    DELETE /api/delete   passed through (200, empty body; 404 when the model is not there)

Names are passed unchanged (these calls manage what a backend holds, not routes). The backend is
the one named by the ``X-Gateway-Backend`` request header, else the only Ollama backend, else the
only Ollama backend the model's route reaches; otherwise a 400 lists the candidates. After a
change the model list (``/v1/models``) is rebuilt and the backend checked again. Each call is one
audit line on ``proxy.audit`` (``proxy.handlers.admin.audited``), whatever its outcome.
"""

from __future__ import annotations

import contextlib

from aiohttp import web

from proxy.background.health import check_backend
from proxy.handlers.admin import audited
from proxy.errors import InvalidRequestError, NotFoundError, UpstreamStreamError
from proxy.handlers.common import json_response, read_body, response_headers
from proxy.handlers.native_stream import NDJSON_HEADERS, ndjson_error_line, relay_ndjson
from proxy.jsonio import dumps
from proxy.keys import BACKENDS, CATALOG, CTX, PULLER
from proxy.translate.fields import require_str
from proxy.translate.native import NATIVE_KIND, native_backends, with_model_field
from proxy.upstream.backend import Upstream

__all__ = ["BACKEND_HEADER", "add_admin_routes", "native_pull", "native_push", "native_create", "native_copy",
           "native_delete"]

BACKEND_HEADER = "X-Gateway-Backend"


def _name(body: dict[str, object], key: str) -> str:
    value = require_str(body, key)
    if not value.strip():
        raise InvalidRequestError(f"Invalid '{key}': empty string.", param=key)
    return value


def _streams(body: dict[str, object]) -> bool:
    """Progress calls stream unless told not to, as Ollama does."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("Invalid type for 'stream': expected a boolean.", param="stream",
                                  code="invalid_type")
    return stream is not False


def _backend_for(request: web.Request, model: str) -> Upstream:
    """The Ollama backend an admin call goes to (see the module docstring)."""
    backends = request.app[BACKENDS]
    named = request.headers.get(BACKEND_HEADER)
    if named:
        upstream = backends.upstreams.get(named)
        if upstream is None:
            raise NotFoundError(f"Unknown backend '{named}' in the {BACKEND_HEADER} header.")
        if upstream.kind != NATIVE_KIND:
            raise InvalidRequestError(f"Backend '{named}' is not an Ollama backend; its models are managed elsewhere.")
        return upstream
    ollamas = [u.name for u in backends.of_kind(NATIVE_KIND)]
    if len(ollamas) == 1:
        return backends.upstreams[ollamas[0]]
    if not ollamas:
        raise InvalidRequestError("No Ollama backend is configured.", code="no_backend")
    candidates = native_backends(request[CTX].config.policy, model)
    if len(candidates) == 1:
        return backends.upstreams[candidates[0]]
    raise InvalidRequestError(f"Several Ollama backends could hold '{model}' ({', '.join(candidates or ollamas)}): "
                              f"name one in the {BACKEND_HEADER} header.", code="backend_required")


async def _admin_call(request: web.Request, model_key: str = "model") -> tuple[dict[str, object], str, Upstream]:
    ctx = request[CTX]
    body = with_model_field(await read_body(request, ctx.config.server))
    model = _name(body, model_key)
    upstream = _backend_for(request, model)
    ctx.client_model, ctx.backend, ctx.model = model, upstream.name, model
    return body, model, upstream


async def _refresh(app: web.Application, upstream: Upstream) -> None:
    """After a change on ``upstream``: forget the cached model list and check the backend again."""
    app[CATALOG].invalidate()
    app[BACKENDS].set_health(upstream.name, await check_backend(upstream))


async def _pass(request: web.Request, upstream: Upstream, method: str, body: dict[str, object], model: str, *,
                streams: bool, changes: bool) -> web.StreamResponse:
    ctx = request[CTX]
    payload = dumps(body)
    response: web.StreamResponse
    if streams:
        resp = await upstream.send(method, request.path, payload, model=model)
        response = await relay_ndjson(request, ctx, resp, response_headers(ctx), until_done=False)
    else:
        raw = await upstream.fetch(method, request.path, payload, model=model)
        response = web.Response(status=200, headers=response_headers(ctx)) if not raw.strip() else \
            web.Response(body=raw, content_type="application/json", headers=response_headers(ctx))
    if changes:
        await _refresh(request.app, upstream)
    return response


def _progress_line(event: dict[str, object]) -> dict[str, object] | None:
    """A ``Puller`` progress event as Ollama's own pull line (None: nothing to tell yet)."""
    if event.get("state") == "done":
        return {"status": "success"}
    status = event.get("status")
    if not isinstance(status, str) or status == "starting":
        return None
    line: dict[str, object] = {"status": status}
    total = event.get("total")
    if isinstance(total, int) and total > 0:
        line["total"], line["completed"] = total, event.get("completed")
    return line


@audited("pull")
async def native_pull(request: web.Request) -> web.StreamResponse:
    """Pull through the gateway's puller (single flight); ``insecure`` pulls go straight to the backend."""
    body, model, upstream = await _admin_call(request)
    streams = _streams(body)
    if body.get("insecure") is True:  # the puller pulls only from verified registries
        return await _pass(request, upstream, "POST", body, model, streams=streams, changes=True)
    ctx = request[CTX]
    response: web.StreamResponse | None = None
    sent: dict[str, object] | None = None
    last: dict[str, object] = {}
    try:
        async with contextlib.aclosing(request.app[PULLER].watch(upstream, model, trigger="admin")) as events:
            async for event in events:
                last = event
                line = _progress_line(event) if event.get("state") != "failed" else None
                if line is None or line == sent or not streams:
                    continue
                sent = line
                if response is None:
                    response = web.StreamResponse(headers={**NDJSON_HEADERS, **response_headers(ctx)})
                    await response.prepare(request)
                    ctx.commit()
                await response.write(dumps(line) + b"\n")
    except ConnectionError:  # the client left; the pull carries on in the background
        ctx.outcome = "client_disconnect"
        return response or web.StreamResponse()
    if last.get("state") != "done":
        error = UpstreamStreamError(str(last.get("error") or f"pulling {model} failed"), backend=upstream.name)
        if response is None:
            raise error
        ctx.outcome = "stream_error"
        with contextlib.suppress(ConnectionError):
            await response.write(ndjson_error_line(error))
            await response.write_eof()
        return response
    if response is None:
        return json_response({"status": "success"}, response_headers(ctx))
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


@audited("push")
async def native_push(request: web.Request) -> web.StreamResponse:
    body, model, upstream = await _admin_call(request)
    return await _pass(request, upstream, "POST", body, model, streams=_streams(body), changes=False)


@audited("create")
async def native_create(request: web.Request) -> web.StreamResponse:
    body, model, upstream = await _admin_call(request)
    return await _pass(request, upstream, "POST", body, model, streams=_streams(body), changes=True)


@audited("copy")
async def native_copy(request: web.Request) -> web.StreamResponse:
    body, source, upstream = await _admin_call(request, "source")
    _name(body, "destination")
    return await _pass(request, upstream, "POST", body, source, streams=False, changes=True)


@audited("delete")
async def native_delete(request: web.Request) -> web.StreamResponse:
    body, model, upstream = await _admin_call(request)
    return await _pass(request, upstream, "DELETE", body, model, streams=False, changes=True)


def add_admin_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/pull", native_pull)
    router.add_post("/api/push", native_push)
    router.add_post("/api/create", native_create)
    router.add_post("/api/copy", native_copy)
    router.add_delete("/api/delete", native_delete)

