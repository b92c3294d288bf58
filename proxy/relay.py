"""Streaming answers to the client: Ollama NDJSON -> OpenAI SSE, and OpenAI SSE passed through
(renamed to the client's model, its usage counted).

The relay *commits* (sends status and headers) only when the first real output is ready. Before
that, an Ollama ``{"error": ...}`` line, a truncated body or a timeout raises a ``ProxyError``
with an outcome, so the router may fall back. After it, the status cannot change: the stream ends
with an SSE ``data: {"error": {...}}`` event and no ``[DONE]`` (openai-python raises ``APIError``
on it). A client that disconnects makes the write fail or the handler be cancelled; either way the
upstream response is closed at once, so Ollama stops generating.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from aiohttp import web

from policies.outcome import Outcome
from proxy.errors import ProxyError, UpstreamBrokenStreamError, UpstreamStreamError, sse_error_event
from proxy.jsonio import JSONDecodeError, dumps, loads
from proxy.context import RequestContext
from proxy.upstream.backend import UpstreamResponse
from proxy.translate.fields import token_count

__all__ = ["SSE_HEADERS", "FanOutTranslator", "OpenAIStreamEdit", "StreamTranslator", "ollama_error_line", "ollama_line",
           "relay_fanout_stream", "relay_ollama_stream", "relay_openai_stream"]

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def ollama_error_line(obj: object, backend: str) -> UpstreamStreamError | None:
    """Ollama's in-stream error line has an ``error`` key and no ``done`` key: check it first."""
    if isinstance(obj, dict) and "error" in obj:
        message = obj["error"]
        return UpstreamStreamError(f"backend {backend} failed: {message}", outcome=Outcome.STREAM_ERROR,
                                   backend=backend)
    return None


class _EventStream(web.StreamResponse):
    """Status and headers leave in one write with the first event, not in a packet of their own.

    The relay commits only when it has output to send, so nothing waits: the client gets headers
    and first content together (one syscall less per stream, and clients that wake once per
    packet see the first token a wake-up sooner). aiohttp's plain ``Response`` buffers the same way.
    """

    _send_headers_immediately = False


async def _commit(request: web.Request, ctx: RequestContext, headers: Mapping[str, str]) -> web.StreamResponse:
    # aiohttp's idle-connection timer, armed when the connection opened, does nothing while a request
    # runs: cancelled here, it is not held for the whole stream (aiohttp arms it again after the answer)
    request.protocol.keep_alive(True)
    response = _EventStream(status=200, headers={**SSE_HEADERS, **headers})
    await response.prepare(request)
    ctx.commit()
    return response


def ollama_line(line: bytes, backend: str) -> dict[str, object]:
    """One NDJSON line of an Ollama stream as an object; not JSON, not an object, or Ollama's own
    ``{"error": ...}`` line (checked before ``done``) raise the ProxyError for it."""
    try:
        obj = loads(line)
    except JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        raise UpstreamBrokenStreamError(f"backend {backend} sent a line that is not a JSON object",
                                        outcome=Outcome.BROKEN_STREAM, backend=backend)
    error = ollama_error_line(obj, backend)
    if error is not None:
        raise error
    return obj


class StreamTranslator(Protocol):
    """What the relay drives: a chat, completion, Responses or Messages stream translator.

    ``feed`` takes one parsed Ollama line and returns the bytes to send; ``has_output`` turns true
    at the first real output (the commit point); ``final`` is Ollama's last line once it came. A
    translator may have ``fail(exc) -> bytes``: the events that end its stream after a failure
    (the OpenAI ``data: {"error": ...}`` event otherwise).
    """

    has_output: bool
    final: Mapping[str, object] | None
    keep_text: bool
    text_parts: list[str]

    @property
    def usage(self) -> Mapping[str, int]: ...

    def feed(self, obj: Mapping[str, object]) -> bytes: ...


async def _fail_after_commit(response: web.StreamResponse, ctx: RequestContext, exc: ProxyError,
                             event: Callable[[BaseException], bytes] = sse_error_event) -> None:
    ctx.outcome = exc.outcome.value if exc.outcome else "error"
    try:
        await response.write(event(exc))
        await response.write_eof()
    except ConnectionError:
        ctx.outcome = Outcome.CLIENT_DISCONNECT.value


async def relay_ollama_stream(
    request: web.Request,
    ctx: RequestContext,
    upstream: UpstreamResponse,
    translator: StreamTranslator,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    """Pump NDJSON lines through ``translator`` to the client, committing on the first output.

    Lines that arrived together (one read from the backend) leave together, in one write: nothing
    waits for a later line, and a burst of tokens costs one send, not one per token.
    """
    backend = ctx.backend or "?"
    response: web.StreamResponse | None = None
    pending = b""
    clock = time.perf_counter
    waited_from = clock()
    feed = translator.feed
    try:
        async for lines in upstream.line_batches():
            ctx.upstream_wait += clock() - waited_from
            failure: ProxyError | None = None
            if len(lines) == 1:
                out = feed(ollama_line(lines[0], backend))
            else:
                parts = []
                for line in lines:
                    try:
                        parts.append(feed(ollama_line(line, backend)))
                    except ProxyError as exc:  # what came before it in the same read still goes out
                        failure = exc
                        break
                    if translator.final is not None:
                        break
                out = b"".join(parts)
            if response is None:
                pending += out
                if translator.has_output:
                    response = await _commit(request, ctx, headers)
                    ctx.ttft = clock() - ctx.started
                    await response.write(pending)
            elif out:
                await response.write(out)
            if failure is not None:
                raise failure
            if translator.final is not None:
                break
            waited_from = clock()
        if translator.final is None:
            raise UpstreamBrokenStreamError(f"backend {backend} ended the stream before it was done",
                                            outcome=Outcome.BROKEN_STREAM, backend=backend)
    except ProxyError as exc:
        upstream.close()
        if response is None:
            raise
        await _fail_after_commit(response, ctx, exc, getattr(translator, "fail", sse_error_event))
        return response
    except ConnectionError:
        # the client went away while we were writing
        upstream.close()
        ctx.outcome = Outcome.CLIENT_DISCONNECT.value
        return response or web.StreamResponse()
    except BaseException:
        upstream.close()
        raise
    upstream.close()
    usage = translator.usage
    ctx.prompt_tokens, ctx.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
    ctx.timings = dict(translator.final) if translator.final else None
    if translator.keep_text:
        ctx.answer_text = "".join(translator.text_parts)
    assert response is not None
    try:
        await response.write_eof()
    except ConnectionError:
        ctx.outcome = Outcome.CLIENT_DISCONNECT.value
    return response


class FanOutTranslator(Protocol):
    """What ``relay_fanout_stream`` drives (``proxy.translate.completions.CompletionFanOut``)."""

    has_output: bool
    done: bool
    keep_text: bool
    text_parts: list[str]

    @property
    def usage(self) -> Mapping[str, int]: ...

    def feed(self, k: int, obj: Mapping[str, object]) -> bytes: ...

    def end(self) -> bytes: ...


async def _pump(k: int, upstream: UpstreamResponse, queue: asyncio.Queue[tuple[int, bytes | BaseException | None]],
                ) -> None:
    try:
        async for line in upstream.lines():
            await queue.put((k, line))
    except BaseException as exc:  # handed to the consumer, which decides
        await queue.put((k, exc))
        if isinstance(exc, asyncio.CancelledError):
            raise
        return
    await queue.put((k, None))


async def relay_fanout_stream(
    request: web.Request,
    ctx: RequestContext,
    upstreams: Sequence[UpstreamResponse],
    translator: FanOutTranslator,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    """Several NDJSON streams at once (one per prompt) through ``translator`` as one SSE stream.

    Lines are relayed in the order they arrive, whichever stream they come from; the stream
    commits on the first output of any of them, and a failure of any one before that raises (the
    router may fall back for the whole request), after it ends the stream with an error event.
    """
    backend = ctx.backend or "?"
    queue: asyncio.Queue[tuple[int, bytes | BaseException | None]] = asyncio.Queue()
    tasks = [asyncio.create_task(_pump(k, upstream, queue)) for k, upstream in enumerate(upstreams)]
    response: web.StreamResponse | None = None
    pending = b""
    clock = time.perf_counter
    ended = 0
    try:
        while ended < len(upstreams):
            k, item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                ended += 1
                continue
            obj = ollama_line(item, backend)
            out = translator.feed(k, obj)
            if response is None:
                pending += out
                if translator.has_output:
                    response = await _commit(request, ctx, headers)
                    ctx.ttft = clock() - ctx.started
                    await response.write(pending)
            elif out:
                await response.write(out)
        if not translator.done:
            raise UpstreamBrokenStreamError(f"backend {backend} ended a stream before it was done",
                                            outcome=Outcome.BROKEN_STREAM, backend=backend)
        assert response is not None
        await response.write(translator.end())
    except ProxyError as exc:
        if response is None:
            raise
        await _fail_after_commit(response, ctx, exc)
        return response
    except ConnectionError:
        ctx.outcome = Outcome.CLIENT_DISCONNECT.value
        return response or web.StreamResponse()
    finally:
        for task in tasks:
            task.cancel()
        for upstream in upstreams:
            upstream.close()
        usage = translator.usage
        ctx.prompt_tokens, ctx.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
    if translator.keep_text:
        ctx.answer_text = "".join(translator.text_parts)
    try:
        await response.write_eof()
    except ConnectionError:
        ctx.outcome = Outcome.CLIENT_DISCONNECT.value
    return response


class OpenAIStreamEdit:
    """Edits an OpenAI-compatible backend's SSE stream line by line, as it passes through.

    Every chunk's ``model`` becomes the name the client asked for (the backend's name stays in
    ``x-gateway-model``); the usage the gateway asked for (``stream_options.include_usage``) is
    counted, and when the client did not ask for it the usage-only chunk is dropped and any
    ``usage`` member removed, so the client sees what it would have seen without the gateway.
    Lines that are not JSON ``data:`` lines pass through untouched.
    """

    def __init__(self, *, model: str, client_wants_usage: bool) -> None:
        self.model = model
        self.keep_usage = client_wants_usage
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._rest = b""
        self._dropping = False  # the blank line that ends a dropped event goes too

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send for ``chunk``: whole lines only (a partial line waits for the next chunk)."""
        *complete, self._rest = (self._rest + chunk).split(b"\n")
        out = []
        for line in complete:
            edited = self._line(line)
            if edited is not None:
                out.append(edited + b"\n")
        return b"".join(out)

    def close(self) -> bytes:
        """Whatever is left of an unterminated last line."""
        rest, self._rest = self._rest, b""
        edited = self._line(rest) if rest else None
        return edited or b""

    def _line(self, line: bytes) -> bytes | None:
        if self._dropping:
            self._dropping = False
            if not line.strip(b"\r"):
                return None
        if not line.startswith(b"data:"):
            return line
        data = line[5:].strip()
        if not data.startswith(b"{"):
            return line  # [DONE]
        try:
            obj = loads(data)
        except JSONDecodeError:
            return line
        if not isinstance(obj, dict):
            return line
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = token_count(usage.get("prompt_tokens"))
            self.completion_tokens = token_count(usage.get("completion_tokens"))
        if not self.keep_usage and "usage" in obj:
            if usage is not None and not obj.get("choices"):
                self._dropping = True
                return None
            del obj["usage"]
        if "model" in obj:
            obj["model"] = self.model
        return b"data: " + dumps(obj)


async def relay_openai_stream(
    request: web.Request,
    ctx: RequestContext,
    upstream: UpstreamResponse,
    headers: Mapping[str, str],
    edit: OpenAIStreamEdit | None = None,
) -> web.StreamResponse:
    """Pass an OpenAI-compatible backend's SSE stream through, committing on its first bytes.

    With ``edit``, each line is edited as ``OpenAIStreamEdit`` says and its usage is counted.
    """
    response: web.StreamResponse | None = None
    clock = time.perf_counter
    waited_from = clock()
    try:
        async for chunk in upstream.chunks():
            ctx.upstream_wait += clock() - waited_from
            if edit is not None:
                chunk = edit.feed(chunk)
            if chunk:
                if response is None:
                    response = await _commit(request, ctx, headers)
                    ctx.ttft = clock() - ctx.started
                await response.write(chunk)
            waited_from = clock()
        if edit is not None and (rest := edit.close()):
            if response is None:
                response = await _commit(request, ctx, headers)
            await response.write(rest)
    except ProxyError as exc:
        if response is None:
            raise
        # an edit that knows its dialect ends the stream in it (Anthropic's error event, say)
        await _fail_after_commit(response, ctx, exc, getattr(edit, "fail", sse_error_event))
        return response
    except ConnectionError:
        upstream.close()
        ctx.outcome = Outcome.CLIENT_DISCONNECT.value
        return response or web.StreamResponse()
    except BaseException:
        upstream.close()
        raise
    if response is None:
        raise UpstreamBrokenStreamError(f"backend {ctx.backend} sent an empty stream",
                                        outcome=Outcome.BROKEN_STREAM, backend=ctx.backend)
    if edit is not None:
        ctx.prompt_tokens, ctx.completion_tokens = edit.prompt_tokens, edit.completion_tokens
    try:
        await response.write_eof()
    except ConnectionError:
        ctx.outcome = Outcome.CLIENT_DISCONNECT.value
    return response
