"""What every model endpoint does before and after talking to a backend.

Reading the body (size and time limits, JSON, an object), planning the route for the client's
model (404 for a model no route serves, 403 for a model the caller may not use), and the response
headers that name the request and, unless configured off, the backend and model that served it.
"""

from __future__ import annotations

import asyncio
import re
import random
import time
from collections.abc import Mapping, Sequence

from aiohttp import web

from policies.outcome import Outcome
from policies.plan import plan, resolve_route, sticky_key
from proxy.accounting import Accounting
from proxy.auth import model_allowed
from proxy.config import ServerConfig
from proxy.context import RequestContext
from proxy.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    UpstreamBrokenStreamError,
)
from proxy.jsonio import JSONDecodeError, dumps, loads
from proxy.keys import CREDENTIAL, CTX
from proxy.translate.fields import require_str

IGNORED_TOOLS_HEADER = "x-gateway-ignored-tools"  # names the hosted/server tools left out of what Ollama saw
_HEADER_UNSAFE = re.compile(r"[^A-Za-z0-9_.:() -]")

__all__ = ["IGNORED_TOOLS_HEADER", "ignored_tools", "read_body", "checked_model", "begin", "response_headers", "json_response",
           "json_answer", "created_now"]


def created_now() -> int:
    return int(time.time())


# Content-Encoding values aiohttp decodes before the handler reads (zstd: backports.zstd before Python 3.14;
# br: only with Brotli installed, else aiohttp refuses the request itself)
_DECODED = frozenset({"gzip", "deflate", "br", "zstd"})
_COMPRESSED_CHUNK = 1 << 20  # a compressed body is decoded and counted this much at a time


async def _read_capped(request: web.Request, limit: int, *, decoded: bool) -> bytes:
    """The body, read a chunk at a time and refused as soon as it passes ``limit``.

    Not ``request.read()``, which keeps the bytes on the request for as long as it lives (a stream's
    whole duration) after they were parsed. ``decoded``: a compressed body, decoded as it is read,
    so a compression bomb costs about ``limit`` bytes, not its decoded size."""
    content = request.content
    if decoded:
        content.set_read_chunk_size(_COMPRESSED_CHUNK)
    body = bytearray()
    while chunk := await content.readany():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"Request body is larger than the limit of {limit} bytes"
                                       + (" once decompressed." if decoded else "."))
    return bytes(body)


async def read_body(request: web.Request, server: ServerConfig) -> dict[str, object]:
    """The request's JSON object, within ``server``'s body size and time limits; 400/413/408 otherwise.

    A body sent with ``Content-Encoding: gzip``, ``deflate`` or ``zstd`` (the Codex CLI sends zstd)
    is decoded, and the size limit applies to the decoded bytes too; another encoding is a 415.
    """
    limit = server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(f"Request body is larger than the limit of {limit} bytes.")
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity") and encoding not in _DECODED:
        raise InvalidRequestError(f"Unsupported Content-Encoding {encoding!r}: send gzip, deflate, zstd or none.",
                                  code="unsupported_content_encoding", status=415)
    decoded = encoding not in ("", "identity")
    try:
        if request.content.is_eof():  # the whole body already arrived with the headers: no timer needed
            raw = await _read_capped(request, limit, decoded=decoded)
        else:
            async with asyncio.timeout(server.body_timeout):
                raw = await _read_capped(request, limit, decoded=decoded)
    except web.RequestPayloadError:  # e.g. Content-Encoding: gzip over bytes that are not gzip
        raise InvalidRequestError("The request body could not be decoded.", code="invalid_body") from None
    except TimeoutError:
        raise InvalidRequestError("The request body was not received in time.", code="request_timeout",
                                  status=408) from None
    try:
        body = loads(raw)
    except JSONDecodeError:
        raise InvalidRequestError(
            "We could not parse the JSON body of your request. The body must be valid UTF-8 JSON.",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_json")
    return body


def checked_model(request: web.Request, body: Mapping[str, object]) -> str:
    """The body's ``model``: a non-empty string the caller may use (400/403 otherwise); kept on the context."""
    model = require_str(body, "model")
    if not model:
        raise InvalidRequestError("Invalid 'model': empty string.", param="model")
    request[CTX].client_model = model
    credential = request.get(CREDENTIAL)
    if credential is not None and not model_allowed(credential, model):
        raise PermissionDeniedError(f"The credential '{credential.name}' may not use the model '{model}'.",
                                    param="model")
    return model


def begin(request: web.Request, body: Mapping[str, object], *, rng: random.Random,
          accounting: Accounting, user: str | None = None) -> RequestContext:
    """Plan the request: the route for the client's model, its arm and attempts (404/403 otherwise).

    ``user`` is the sticky key a door reads elsewhere than OpenAI's ``user`` field (Anthropic's
    ``metadata.user_id``).
    """
    ctx = request[CTX]
    model = checked_model(request, body)
    policy = ctx.config.policy
    if user is None:
        user = body.get("user") if isinstance(body.get("user"), str) else None  # type: ignore[assignment]
    route_plan = None
    route = resolve_route(policy, model)
    if route is not None:
        key = sticky_key(route, api_key=ctx.credential, user=user, headers=request.headers)
        route_plan = plan(policy, model, key=key, roll=rng.random(), shadow_roll=rng.random(), route=route)
    if route_plan is None:
        raise ModelNotFoundError(model)
    ctx.plan = route_plan
    accounting.started(ctx)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("Invalid type for 'stream': expected a boolean.", param="stream",
                                  code="invalid_type")
    ctx.stream = bool(stream)
    return ctx


def ignored_tools(ctx: RequestContext, names: Sequence[str]) -> dict[str, str]:
    """Record the tools left out of what Ollama saw (for the request log) and return the response
    header naming them (empty when none). Tool names are client input: only header-safe characters stay."""
    ctx.ignored_tools = tuple(clean for name in names if (clean := _HEADER_UNSAFE.sub("", name)[:200]))
    return {IGNORED_TOOLS_HEADER: ",".join(ctx.ignored_tools)} if ctx.ignored_tools else {}


def response_headers(ctx: RequestContext) -> dict[str, str]:
    """The request id, and (unless ``server.backend_headers`` is off) the backend, model and route."""
    headers = {"X-Request-ID": ctx.request_id}
    if ctx.config.server.backend_headers and ctx.backend:
        headers["x-gateway-backend"] = ctx.backend
        headers["x-gateway-model"] = ctx.model or ""
        headers["x-gateway-route"] = ctx.route
    return headers


def json_response(payload: object, headers: Mapping[str, str] | None = None, status: int = 200) -> web.Response:
    return web.Response(body=dumps(payload), status=status, content_type="application/json", headers=headers)


def json_answer(raw: bytes, backend: str) -> dict[str, object]:
    """A backend's whole JSON answer; anything else is a broken answer (a fallback may follow)."""
    try:
        answer = loads(raw)
    except JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        raise UpstreamBrokenStreamError(f"backend {backend} sent an answer that is not a JSON object",
                                        outcome=Outcome.BROKEN_STREAM, backend=backend)
    return answer
