"""CORS for browser clients: off unless ``server.cors_origins`` lists origins (or ``"*"``).

The decisions are pure functions (`allowed_origin`, `preflight_headers`); `install_cors` wires them
into an app: a middleware answers preflight ``OPTIONS`` requests from allowed origins with 204, and
an ``on_response_prepare`` hook adds ``Access-Control-Allow-Origin`` to every other response for
them, streams and error responses included (a middleware alone would miss streamed responses,
whose headers are sent before the handler returns). Requests from other origins get no CORS
headers at all, so browsers refuse to hand them the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

__all__ = ["ALLOWED_HEADERS", "EXPOSED_HEADERS", "Handler", "allowed_origin", "install_cors", "preflight_headers"]

# What the OpenAI SDKs send (openai-node in a browser with dangerouslyAllowBrowser): auth, JSON,
# the x-stainless-* telemetry family (matched by prefix), and the optional OpenAI-* headers.
ALLOWED_HEADERS = frozenset({
    "authorization", "content-type", "accept", "x-api-key", "x-request-id", "x-session-id",
    "openai-beta", "openai-organization", "openai-project", "idempotency-key",
})  # fmt: skip
_ALLOWED_PREFIXES = ("x-stainless-",)
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After", "x-gateway-backend", "x-gateway-model", "x-gateway-route")
_METHODS = "GET, POST, DELETE, OPTIONS"
_MAX_AGE = "600"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def allowed_origin(origin: str | None, origins: Sequence[str]) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for ``origin``, or None when it is not allowed."""
    if not origin or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin.rstrip("/") in {o.rstrip("/") for o in origins} else None


def _header_allowed(name: str) -> bool:
    return name in ALLOWED_HEADERS or name.startswith(_ALLOWED_PREFIXES)


def preflight_headers(origin: str | None, method: str | None, requested: str | None,
                      origins: Sequence[str]) -> dict[str, str] | None:
    """Headers answering a preflight, or None when the origin is not allowed.

    Only the requested headers the gateway accepts are echoed back; a browser then refuses a
    request that needs any other one, which is what should happen.
    """
    allow = allowed_origin(origin, origins)
    if allow is None or not method:
        return None
    names = [h.strip().lower() for h in (requested or "").split(",") if h.strip()]
    headers = {
        "Access-Control-Allow-Origin": allow,
        "Access-Control-Allow-Methods": _METHODS,
        "Access-Control-Max-Age": _MAX_AGE,
        "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    }
    kept = [h for h in names if _header_allowed(h)]
    if kept:
        headers["Access-Control-Allow-Headers"] = ", ".join(kept)
    return headers


def install_cors(app: web.Application, origins: Callable[[], Sequence[str]]) -> None:
    """Answer preflights and add CORS headers for the origins ``origins()`` returns (none: CORS off).

    ``origins`` is read per request, so a config reload takes effect. Call before the app is
    frozen, after the gateway middleware: a preflight is then counted and logged like any request,
    and needs no credential (browsers send none with it).
    """

    @web.middleware
    async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            h = request.headers
            headers = preflight_headers(h.get("Origin"), h.get("Access-Control-Request-Method"),
                                        h.get("Access-Control-Request-Headers"), origins())
            if headers is not None:
                return web.Response(status=204, headers=headers)
        return await handler(request)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        allow = allowed_origin(request.headers.get("Origin"), origins())
        if allow is None or "Access-Control-Allow-Origin" in response.headers:
            return
        response.headers["Access-Control-Allow-Origin"] = allow
        response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
        response.headers.add("Vary", "Origin")

    app.middlewares.append(cors_middleware)
    app.on_response_prepare.append(add_headers)
