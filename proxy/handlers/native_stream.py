"""Ollama's NDJSON streams passed through to native clients, line by line.

The relay *commits* (status and headers) with the first line. Before that, an Ollama
``{"error": ...}`` line, a line that is not JSON, a truncated body or a timeout raises a
``ProxyError`` with an outcome, so the router may fall back and the client gets a plain error
status. After it, the status cannot change: the stream ends with an Ollama error line
``{"error": "..."}`` (the ``ollama`` clients raise ``ResponseError`` on it). Each line's ``model``
is the name the client asked for, as Ollama echoes it. A client that goes away makes a write fail
or the handler be cancelled; either way the upstream answer is closed at once, so Ollama stops.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from aiohttp import web

from policies.outcome import Outcome
from proxy.context import RequestContext
from proxy.errors import ProxyError, UpstreamBrokenStreamError
from proxy.jsonio import dumps
from proxy.relay import ollama_line
from proxy.translate.native import final_timings
from proxy.upstream.backend import UpstreamResponse

__all__ = ["NDJSON_HEADERS", "ndjson_error_line", "relay_ndjson"]

NDJSON_HEADERS = {"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class _LineStream(web.StreamResponse):
    """Status and headers leave in one write with the first line, not in a packet of their own."""

    _send_headers_immediately = False


def ndjson_error_line(exc: BaseException) -> bytes:
    """The line that ends a native stream after a failure, in Ollama's own shape."""
    message = exc.message if isinstance(exc, ProxyError) else "The gateway had an internal error."
    return dumps({"error": message}) + b"\n"


def _text_of(obj: Mapping[str, object]) -> str:
    message = obj.get("message")
    text = message.get("content") if isinstance(message, Mapping) else obj.get("response")
    return text if isinstance(text, str) else ""


async def _fail(response: web.StreamResponse, ctx: RequestContext, exc: ProxyError) -> None:
    ctx.outcome = exc.outcome.value if exc.outcome else "error"
    try:
        await response.write(ndjson_error_line(exc))
        await response.write_eof()
    except ConnectionError:
        ctx.outcome = Outcome.CLIENT_DISCONNECT.value


async def relay_ndjson(request: web.Request, ctx: RequestContext, upstream: UpstreamResponse,
                       headers: Mapping[str, str], *, rename: str | None = None, until_done: bool = True,
                       keep_text: bool = False) -> web.StreamResponse:
    """Pass ``upstream``'s NDJSON lines to the client, committing on the first one.

    ``rename`` replaces each line's ``model``. With ``until_done`` (generation streams) the stream
    must end with Ollama's ``"done": true`` line, whose timings and counts go to ``ctx`` for metrics;
    otherwise (progress streams: pull, push, create) it ends where the backend's answer ends.
    """
    backend = ctx.backend or "?"
    response: web.StreamResponse | None = None
    final: Mapping[str, object] | None = None
    parts: list[str] = []
    clock = time.perf_counter
    waited_from = clock()
    try:
        async for line in upstream.lines():
            ctx.upstream_wait += clock() - waited_from
            obj = ollama_line(line, backend)
            if rename is not None and "model" in obj and obj["model"] != rename:
                obj["model"] = rename
                line = dumps(obj)
            if keep_text:
                parts.append(_text_of(obj))
            if response is None:
                response = _LineStream(status=200, headers={**NDJSON_HEADERS, **headers})
                await response.prepare(request)
                ctx.commit()
                ctx.ttft = clock() - ctx.started
            await response.write(line + b"\n")
            if until_done and obj.get("done") is True:
                final = obj
                break
            waited_from = clock()
        if response is None or (until_done and final is None):
            raise UpstreamBrokenStreamError(f"backend {backend} ended the stream before it was done",
                                            outcome=Outcome.BROKEN_STREAM, backend=backend)
    except ProxyError as exc:
        upstream.close()
        if response is None:
            raise
        await _fail(response, ctx, exc)
        return response
    except ConnectionError:  # the client went away while we were writing
        upstream.close()
        ctx.outcome = Outcome.CLIENT_DISCONNECT.value
        return response or web.StreamResponse()
    except BaseException:
        upstream.close()
        raise
    upstream.close()
    if final is not None:
        ctx.timings, ctx.prompt_tokens, ctx.completion_tokens = final_timings(final)
    if keep_text:
        ctx.answer_text = "".join(parts)
    try:
        await response.write_eof()
    except ConnectionError:
        ctx.outcome = Outcome.CLIENT_DISCONNECT.value
    return response
