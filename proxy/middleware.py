"""The one middleware: request id, Host check, authentication and admission, error rendering, and
the request's accounting (``Accounting.finish``) whatever its fate.

It is the only place that turns exceptions into responses, in the shape each door's clients parse:
Anthropic's for ``/v1/messages``, Ollama's for ``/api/*``, OpenAI's (``errors.render_error``)
elsewhere. Unknown paths and wrong methods become 404/405, an oversized body 413, anything
unexpected a generic 500 whose details go only to the log, keyed by the request id.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.errors import (
    AuthenticationError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProxyError,
    render_error,
    render_ollama_error,
)
from proxy.admission import Admission
from proxy.context import RequestContext
from proxy.ids import new_id
from proxy.keys import ACCOUNTING, ADMISSION, CONFIG, CREDENTIAL, CTX
from proxy.telemetry.tracing import Tracer
from proxy.translate.anthropic_errors import render_anthropic_error

__all__ = ["Handler", "gateway_middleware", "traced_gateway_middleware"]

log = logging.getLogger("proxy.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_PUBLIC = frozenset({"/healthz", "/livez", "/readyz"})
_UNTRACED = _PUBLIC | {"/metrics"}  # probes and scrapes: no span every few seconds
_ADMIN_PREFIXES = ("/metrics", "/admin", "/dashboard", "/status")
_ADMIN_NATIVE = frozenset({"/api/pull", "/api/delete", "/api/create", "/api/copy", "/api/push"})
_DRAIN_SECONDS = 2.0  # an early answer: how long the rest of the body is read and dropped, at most
_DRAIN_BYTES = 16 * 1024 * 1024  # ... and how much of it

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _http_error(exc: web.HTTPException, request: web.Request) -> ProxyError:
    if exc.status == 404:
        return NotFoundError(f"Unknown path: {request.method} {request.path}")
    if exc.status == 405:
        return MethodNotAllowedError(f"Method {request.method} is not allowed on {request.path}",
                                     headers={"Allow": exc.headers.get("Allow", "")})
    if exc.status == 413:
        return PayloadTooLargeError("Request body is too large.")
    return ProxyError(exc.reason or "error", status=exc.status, code=None)


def _check_host(request: web.Request) -> None:
    """RFC 9112 3.2: an HTTP/1.1 request has exactly one Host header (HTTP/1.0: at most one)."""
    hosts = len(request.headers.getall("Host", ()))
    if hosts > 1 or (hosts == 0 and request.version >= (1, 1)):
        raise InvalidRequestError("A request must carry exactly one Host header.", code="bad_host_header")


async def _authenticate(request: web.Request, admission: Admission) -> None:
    auth = admission.authenticator
    path = request.path
    if path in _PUBLIC or request.method == "OPTIONS":
        return
    headers = request.headers
    if path.startswith(_ADMIN_PREFIXES):
        if auth.admin_enabled:
            if await admission.authenticate(headers.get("Authorization"), headers.get("x-api-key"), admin=True) is None:
                admission.failed("admin")
                raise AuthenticationError("Admin credentials are required.",
                                          headers={"WWW-Authenticate": admission.www_authenticate})
        elif auth.enabled:
            raise PermissionDeniedError("Admin endpoints are disabled: configure auth.admin.", code="no_admin")
        return
    if path in _ADMIN_NATIVE and (auth.enabled or auth.admin_enabled):
        # Ollama's model-changing calls: the admin credential only; a client credential gets 403
        if auth.admin_enabled and await admission.authenticate(
                headers.get("Authorization"), headers.get("x-api-key"), admin=True) is not None:
            return
        if auth.enabled and await admission.authenticate(headers.get("Authorization"), headers.get("x-api-key")):
            raise PermissionDeniedError(f"{path} needs the admin credential.", code="admin_required")
        admission.failed("admin")
        raise AuthenticationError("Admin credentials are required.",
                                  headers={"WWW-Authenticate": admission.www_authenticate})
    if not auth.enabled:
        return
    credential = await admission.authenticate(headers.get("Authorization"), headers.get("x-api-key"))
    if credential is None:
        admission.failed("missing" if "Authorization" not in headers and "x-api-key" not in headers else "invalid")
        hint = ("Send 'Authorization: Basic ...' (user and password) or 'Authorization: Bearer <key>'."
                if path.startswith("/api/") or path == "/" else "Send 'Authorization: Bearer <key>'.")
        raise AuthenticationError(f"Incorrect or missing API key. {hint}",
                                  headers={"WWW-Authenticate": admission.www_authenticate})
    request[CREDENTIAL] = credential
    request[CTX].credential = credential.name


async def _serve(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, Host check, authentication, admission, the handler, errors rendered, the request recorded."""
    app = request.app
    incoming = request.headers.get("X-Request-ID")
    rid = incoming if incoming and _REQUEST_ID.match(incoming) else new_id("req_")
    ctx = RequestContext(request_id=rid, endpoint=request.path, config=app[CONFIG].current)
    request[CTX] = ctx
    admission, accounting = app[ADMISSION], app[ACCOUNTING]
    try:
        _check_host(request)
        await _authenticate(request, admission)
        limits = await admission.admit(request.get(CREDENTIAL))
        try:
            response = await handler(request)
        finally:
            if limits is not None:
                released = admission.release(limits, ctx.prompt_tokens + ctx.completion_tokens)
                if released is not None:  # in Redis: the caller's next request must find its slot free
                    await asyncio.shield(released)
    except ProxyError as exc:
        response = _error_response(ctx, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error_response(ctx, _http_error(exc, request))
    except asyncio.CancelledError:
        ctx.outcome, ctx.status = "client_disconnect", 499
        accounting.finish(ctx)
        raise
    except Exception as exc:
        log.exception("request %s failed unexpectedly", rid)
        response = _error_response(ctx, exc)
    else:
        ctx.status = response.status
    if not response.prepared:
        response.headers["X-Request-ID"] = rid
    accounting.finish(ctx)
    return response


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await _serve(request, handler)
    if response.status == 408:  # the body did not arrive within server.body_timeout
        await _send_and_hang_up(request, response)
    elif response.status >= 400 and not response.prepared and not request.content.is_eof():
        # answered before the body was read (413, 401, ...): do not read gigabytes nobody will use
        await _send_and_hang_up(request, response, drain=_DRAIN_SECONDS)
    return response


def traced_gateway_middleware(tracer: Tracer) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """``gateway_middleware`` inside one server span per request (tracing on; off, the app uses the plain one)."""

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _UNTRACED:
            return await gateway_middleware(request, handler)
        span, token = tracer.start_request(request.method, request.path, request.headers)
        try:
            return await gateway_middleware(request, handler)
        finally:  # the context is complete: accounting has finished it, whatever happened
            resource = request.match_info.route.resource
            tracer.end_request(span, token, request.get(CTX), method=request.method,
                               route=resource.canonical if resource is not None else None)

    return traced


_Renderer = Callable[[BaseException, str], tuple[int, bytes, dict[str, str]]]
# each door's clients parse their own error shape: (path prefix, renderer); OpenAI's otherwise
_DIALECTS: tuple[tuple[str, _Renderer], ...] = (
    ("/v1/messages", lambda exc, rid: render_anthropic_error(exc, request_id=rid)),
    ("/api/", lambda exc, rid: render_ollama_error(exc)),
)


def _render(exc: BaseException, path: str, request_id: str) -> tuple[int, bytes, dict[str, str]]:
    if path == "/":  # Ollama's own root ("Ollama is running"): its clients probe it
        return render_ollama_error(exc)
    for prefix, renderer in _DIALECTS:
        if path.startswith(prefix):
            return renderer(exc, request_id)
    return render_error(exc)


def _error_response(ctx: RequestContext, exc: BaseException) -> web.Response:
    status, body, headers = _render(exc, ctx.endpoint, ctx.request_id)
    ctx.status = status
    if ctx.outcome == "ok":
        outcome = getattr(exc, "outcome", None)
        ctx.outcome = outcome.value if outcome is not None else ("rejected" if status < 500 else "error")
    headers["X-Request-ID"] = ctx.request_id
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


async def _send_and_hang_up(request: web.Request, response: web.StreamResponse, *, drain: float = 0.0) -> None:
    """Send ``response`` now and close the connection: aiohttp would otherwise keep reading (and
    discarding) the unread body for up to its 10 s lingering time, however large it is.

    With ``drain``, the body still arriving is read and dropped for at most that many seconds and
    ``_DRAIN_BYTES``, so a client still uploading reads the answer instead of a connection reset.
    """
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    transport = request.transport
    if transport is None:
        return
    if drain:
        dropped = 0
        try:
            async with asyncio.timeout(drain):
                while dropped < _DRAIN_BYTES and (chunk := await request.content.readany()):
                    dropped += len(chunk)
        except Exception:  # timed out, or the body failed: either way nothing is left to drain
            pass
    transport.close()  # after the buffered response has been written
