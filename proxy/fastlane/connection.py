"""The fast lane: the model endpoints served below aiohttp's ``web`` layer.

Every connection starts here. A request whose line is exactly ``POST /v1/chat/completions HTTP/1.1``
(or ``/v1/completions``, ``/v1/embeddings``), whose head is under 16 KiB with at most 128 headers and parses (httptools), and
that has a Content-Length and no Transfer-Encoding, Expect or Upgrade, is served by this module:
``proxy.middleware.serve_request`` around the same handler aiohttp would call, the answer written
straight to the transport. Anything else (other paths and methods, HTTP/1.0, a chunked body, a bad
head) hands the connection to aiohttp's own protocol, bytes received so far included, for the rest
of its life: every behaviour and limit of the ``web`` app applies to it unchanged.

Requests on one connection are served in order (pipelined ones wait, reading pauses above
256 KiB). An idle connection closes after ``server.keepalive_timeout``; a client that leaves
cancels its handler (so Ollama stops generating); an answer sent before the whole body arrived
(413, auth errors) half-closes the connection and drops what still arrives for 2 s before closing
it (a 408 closes at once). ``Lane.shutdown`` closes idle connections, lets
requests in flight finish within the shutdown timeout and cancels the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httptools
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import render_error
from proxy.fastlane.request import EventStream, FastRequest, response_bytes
from proxy.config import ServerConfig
from proxy.keys import CTX
from proxy.middleware import Handler, serve_request

__all__ = ["Lane", "FastConnection"]

log = logging.getLogger("proxy.fastlane")

_MAX_HEAD = 16384  # aiohttp's limit per line here (server.start_site); a bigger head goes to aiohttp
_MAX_HEADERS = 128  # aiohttp's default: more headers go to aiohttp, which refuses them
_MAX_PIPELINED = 256 * 1024
_LINGER = 2.0  # seconds an early answer's connection keeps reading (and dropping) before it closes


class Lane:
    """What the fast lane serves for one app, and its open connections."""

    def __init__(self, app: web.Application, factory: Callable[[], asyncio.Protocol],
                 handlers: dict[str, Handler], server: ServerConfig) -> None:
        self.app = app
        self.server = server  # as at start, like aiohttp's settings (a reload changes them after a restart)
        self.factory = factory  # aiohttp's protocol, for the connections handed over
        self.routes = {f"POST {path} HTTP/1.1".encode(): (path, handler) for path, handler in handlers.items()}
        self.connections: set[FastConnection] = set()

    def __call__(self) -> FastConnection:
        return FastConnection(self)

    async def shutdown(self, timeout: float) -> None:
        """Stop taking requests; let those in flight finish within ``timeout``, then cancel them."""
        busy = []
        for conn in list(self.connections):
            conn.closing = True
            if conn.task is None:
                conn.close()
            else:
                busy.append(conn.task)
        if busy:
            _, pending = await asyncio.wait(busy, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for conn in list(self.connections):
            conn.close()


class _Head:
    """httptools callbacks for one request head."""

    __slots__ = ("headers", "complete")

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self.complete = True


class FastConnection(asyncio.Protocol):
    """One client connection: served here until a request needs aiohttp, then aiohttp's for good."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.inner: asyncio.Protocol | None = None  # aiohttp's protocol, once handed over
        self.transport: asyncio.Transport | None = None
        self.request: FastRequest | None = None
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self._discarding = False  # after an early answer: what still arrives is dropped (see _linger)
        self._buf = b""  # received bytes not yet parsed (a partial head, pipelined requests)
        self._idle: asyncio.TimerHandle | None = None  # the keep-alive timer (or the linger's, see _linger)
        self._idle_since = 0.0
        self._reading_paused = False
        self._writing_paused = False
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.lane.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)
            return
        if self._discarding:
            return
        request = self.request
        if request is not None and request.missing:
            taken = request.feed(data)
            if taken == len(data):
                return
            data = data[taken:]
        self._buf = self._buf + data if self._buf else data
        if self.task is None:
            self._next()
        elif len(self._buf) > _MAX_PIPELINED:
            self._pause_reading()

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            return self.inner.eof_received()
        return None  # the transport closes; a request in flight is cancelled like a disconnect

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.inner.connection_lost(exc)
            return
        self.lane.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self.task is not None:
            self.task.cancel()  # handler cancellation: the backend request is closed at once
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("the client closed the connection"))

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()
        self._writing_paused = True

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()
        self._writing_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- what requests and responses call ----------------------------------------------------------
    async def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(data)
        if self._writing_paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def want_body(self) -> None:
        """A handler waits for the rest of the body: make sure it is being read."""
        self._resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- parsing and serving ---------------------------------------------------------------------
    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _next(self) -> None:
        """Start the request at the front of the buffer, wait for more of it, or hand over."""
        buf = self._buf
        if not buf:
            self._arm_idle()
            return
        if self.closing:
            return
        line_end = buf.find(b"\r\n")
        if line_end < 0:
            if len(buf) > _MAX_HEAD:
                self._hand_over()
            return
        route = self.lane.routes.get(buf[:line_end])
        if route is None:
            self._hand_over()
            return
        end = buf.find(b"\r\n\r\n", line_end)
        if end < 0 or end > _MAX_HEAD:
            if len(buf) > _MAX_HEAD:
                self._hand_over()
            return
        head = _Head()
        parser = httptools.HttpRequestParser(head)
        try:
            parser.feed_data(buf[: end + 4])
        except httptools.HttpParserError:
            self._hand_over()
            return
        if len(head.headers) > _MAX_HEADERS:
            self._hand_over()
            return
        headers = CIMultiDict(head.headers)
        lengths = headers.getall("Content-Length", ())
        if (not head.complete or len(lengths) != 1 or not lengths[0].isdigit() or "Transfer-Encoding" in headers
                or "Expect" in headers or "Upgrade" in headers):
            self._hand_over()
            return
        path, handler = route  # the idle timer stays armed: it finds the connection busy (see _idle_check)
        length = int(lengths[0])
        request = self.request = FastRequest(self, self.lane.app, path, headers, length,
                                             keep_alive=parser.should_keep_alive())
        rest = buf[end + 4:]
        if length:
            rest = rest[request.feed(rest):] if rest else rest
            if request.missing and length > self.lane.server.max_body_bytes:
                self._pause_reading()  # the answer is a 413: do not take in the body it refuses
        self._buf = rest
        self.task = asyncio.get_running_loop().create_task(self._serve(request, handler))
        self.task.add_done_callback(self._served)

    async def _serve(self, request: FastRequest, handler: Handler) -> None:
        response = await serve_request(request, handler)  # type: ignore[arg-type]
        transport = self.transport
        assert transport is not None
        if isinstance(response, EventStream):
            if not response.finished or not request.keep_alive or self.closing:
                transport.close()
            return
        if not isinstance(response, web.Response) or transport.is_closing():
            transport.close()  # the client left before an answer was committed
            return
        close = not request.keep_alive or bool(request.missing) or self.closing
        try:
            data = response_bytes(response, close=close)
        except (ValueError, TypeError) as exc:
            ctx = request.get(CTX)
            log.error("request %s: answer not sendable: %s", ctx.request_id if ctx else "-", exc)
            status, body, _ = render_error(exc)
            data = response_bytes(web.Response(status=status, body=body, content_type="application/json"),
                                  close=True)
            close = True
        transport.write(data)
        if request.missing and response.status != 408:
            self._linger()
        elif close:
            transport.close()

    def _linger(self) -> None:
        """After an answer sent before the whole body arrived (401, 413, ...): half-close, then read and
        drop what the client still sends for up to ``_LINGER`` seconds, so its unsent body does not turn
        our close into a reset that discards the answer. (A 408 closes at once: that client is slow.)"""
        self.closing = self._discarding = True
        self._buf = b""
        transport = self.transport
        assert transport is not None
        if transport.can_write_eof():
            transport.write_eof()
        self._resume_reading()
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(_LINGER, transport.close)

    def _served(self, task: asyncio.Task[None]) -> None:
        self.task = self.request = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, ConnectionError):
                log.error("fast lane request failed", exc_info=exc)
            self.close()
            return
        if self.transport is None or self.transport.is_closing():
            return
        self._resume_reading()
        self._next()

    def _arm_idle(self) -> None:
        """Idle from now on. One timer per connection, not per request: it is armed once and, when
        it fires early (the connection was busy since), re-armed for the idle time left."""
        loop = asyncio.get_running_loop()
        self._idle_since = loop.time()
        if self._idle is None:
            self._idle = loop.call_at(self._idle_since + self.lane.server.keepalive_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._idle = None
        if self.task is not None or self.inner is not None:
            return  # busy: armed again when it goes idle
        due = self._idle_since + self.lane.server.keepalive_timeout
        loop = asyncio.get_running_loop()
        if loop.time() >= due:
            self.close()
        else:
            self._idle = loop.call_at(due, self._idle_check)

    def _hand_over(self) -> None:
        """From now on aiohttp's protocol serves this connection, starting with the bytes we hold."""
        if self.closing:
            self.close()
            return
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.lane.connections.discard(self)
        inner = self.inner = self.lane.factory()
        inner.connection_made(self.transport)  # type: ignore[arg-type]
        if self._writing_paused:
            inner.pause_writing()
        self._resume_reading()
        data, self._buf = self._buf, b""
        if data:
            inner.data_received(data)
