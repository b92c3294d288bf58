"""The HTTP/1.1 client the gateway talks to backends with: pooled keep-alive connections, httptools.

Why not ``aiohttp.ClientSession``: on a fast backend its per-request machinery (request and
response objects, tracing hooks, cookie jar, multidict headers, a task per connection) cost about
as much CPU as everything else the gateway does. A backend call here is one prebuilt header block
and one ``transport.write``; the answer is parsed by httptools (llhttp, in C), which also undoes
chunked framing. Everything else stays with the caller (``proxy.upstream.backend``): which deadline
applies when, the translation of failures into the ``ProxyError`` tree, what a status means.

Semantics worth knowing:
- A connection is reused only after its answer was read to the end and the backend allowed
  keep-alive; ``Response.close()`` drops it, which is how a backend learns the client went away.
- ``limit`` connections at most per pool; beyond it callers wait in order for a free one.
- An idle connection older than ``keepalive`` seconds, or seen closed by the backend, is not
  reused; nothing was written to it, so the request just takes another connection.
- A request once written is sent again only when that is harmless (RFC 9110 9.2.2). If its
  connection closes before any byte of the answer, the backend may have read and run it, or may
  have closed the idle connection just as it went out: the two cannot be told apart. An idempotent
  method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) on a reused connection is then sent once more on
  a new connection; any other (a POST generation) fails with ``ConnectionClosed``.
- Interim answers (``1xx``, e.g. ``103 Early Hints``) are skipped: the answer is the final one.
  ``101 Switching Protocols`` is an ``InvalidAnswer``, the gateway never asks for an upgrade.
- Reading is paused while more than ``_HIGH_WATER`` bytes of an answer wait for a slow consumer.
- ``request(..., deadline=)`` bounds a call by a loop-clock deadline that ``Response.watch`` can move:
  past it the answer fails with ``TimeoutError`` and the connection is dropped. The timer belongs to
  the connection and is re-armed only when it fires early, not set and cancelled per request (a
  timer costs about as much as parsing the answer). Waiting for a free connection or connecting
  (also bounded by ``connect_timeout``) is bounded by the same deadline.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import urlsplit

import httptools

__all__ = ["ConnectionClosed", "InvalidAnswer", "Pool", "Response"]

_HIGH_WATER = 256 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 9.2.2


class ConnectionClosed(ConnectionError):
    """The connection closed after the request was written, before the answer was complete.

    The backend may have read the request and acted on it, even when no byte of the answer came.
    """

    def __init__(self, *, started: bool) -> None:
        super().__init__("backend closed the connection" + (" mid-answer" if started else ""))
        self.started = started  # some bytes of the answer had arrived


class InvalidAnswer(Exception):
    """The backend's bytes are not a valid HTTP/1.1 answer."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the state of the answer being read on it."""

    __slots__ = ("pool", "transport", "parser", "status", "headers", "body", "buffered", "complete",
                 "framed", "error", "waiter", "started", "closed", "paused", "idle_since", "busy", "keep_alive",
                 "deadline", "timer", "timer_at")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.busy = False
        self.deadline = 0.0  # the request in flight fails past this loop time (0: no deadline)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []  # chunks not read yet, taken all at once (an empty deque is 760 B)
        self.buffered = 0
        self.complete = False
        self.framed = False  # Content-Length or chunked: the end is known without EOF
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.started = False
        self.paused = False
        self.keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes on an idle connection: no answer is expected, do not reuse it
            self.close()
            return
        self.started = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:  # the upgrade: a 101
            self.error = InvalidAnswer(type(exc).__name__)
            self.close()
            self._wake()

    def eof_received(self) -> None:
        self.closed = True  # not reusable; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.busy and not self.complete and self.error is None:
            if self.status and not self.framed:
                self.complete = True  # an answer delimited by the end of the connection
            else:
                self.error = ConnectionClosed(started=self.started)
        self.pool._forget(self)
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key in ("content-length", "transfer-encoding"):
            self.framed = True
        self.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100, 103): forget it, the final answer follows
            self.headers = {}
            self.framed = False
            return
        self.status = status
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.status:
            return  # the end of an interim answer
        self.keep_alive = self.parser.should_keep_alive()  # only valid before the parser moves on
        self.complete = True
        self._wake()

    # the caller's side
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def watch(self, deadline: float) -> None:
        """Fail the request in flight at ``deadline`` (the connection's one timer, armed lazily)."""
        self.deadline = deadline
        if self.timer is None or deadline < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = deadline
            self.timer = self.pool.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self.timer = None
        if not self.busy or not self.deadline or self.complete:
            return  # nothing in flight: the next request arms it again
        if self.pool.loop.time() < self.deadline:
            self.timer_at = self.deadline
            self.timer = self.pool.loop.call_at(self.deadline, self._expire)
            return
        if self.error is None:
            self.error = TimeoutError("the backend's answer did not arrive in time")
        self.close()
        self._wake()

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        self.waiter = self.pool.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """A backend's answer: status and headers are in; read the body whole or by chunks, once."""

    __slots__ = ("_conn", "status", "headers", "_released")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers  # lower-case names
        self._released = False

    @property
    def complete(self) -> bool:
        """The whole answer has arrived (``read`` will not wait)."""
        return self._conn.complete

    def watch(self, deadline: float) -> None:
        """Move the deadline of this call (set by ``Pool.request``) to ``deadline``, earlier or later.

        Nothing to watch once the answer is complete (the connection may serve another call).
        """
        if not self._released and not self._conn.complete:
            self._conn.watch(deadline)

    async def chunk(self) -> bytes:
        """The body bytes that have arrived (waiting for some), or ``b""`` at the end of the answer."""
        conn = self._conn
        while True:
            body = conn.body
            if body:
                data = body[0] if len(body) == 1 else b"".join(body)
                body.clear()
                conn.buffered = 0
                if conn.paused:
                    conn.paused = False
                    if conn.transport is not None:
                        conn.transport.resume_reading()
                return data
            if conn.complete:
                self.release()
                return b""
            await conn._wait()

    async def read(self) -> bytes:
        """The whole body, taken as it arrives (so reading paused at the high-water mark resumes)."""
        parts = []
        while chunk := await self.chunk():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        """Give the connection back: to the pool if the answer was read whole and keep-alive allowed."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        reusable = conn.complete and not conn.closed and conn.error is None and conn.keep_alive
        conn.pool._release(conn, reusable)

    def close(self) -> None:
        """Drop the connection (the backend sees the client leave) unless the answer was read whole."""
        if self._released:
            return
        if not self._conn.complete:
            self._conn.close()
        self.release()


class Pool:
    """Keep-alive connections to one backend's host, at most ``limit`` in use or idle at once."""

    def __init__(self, url: str, *, headers: bytes, tls: ssl.SSLContext | None, limit: int,
                 connect_timeout: float, keepalive: float = 30.0) -> None:
        """``tls``: the context for an https:// ``url`` (the caller decides verification), else None."""
        parts = urlsplit(url)
        default_port = 443 if parts.scheme == "https" else 80
        self.host = parts.hostname or ""
        self.port = parts.port or default_port
        self.base_path = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.ssl = tls
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # the running loop, on first use
        self._idle: list[_Connection] = []
        self._count = 0  # connections open or opening, idle ones included
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._headers = headers  # prebuilt "Name: value\r\n" lines sent with every request
        self._heads: dict[tuple[str, str], bytes] = {}

    def _head(self, method: str, path: str) -> bytes:
        """A request's start line and headers, cached for the few paths a gateway calls."""
        head = self._heads.get((method, path))
        if head is None:
            head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%s" % (method.encode(), (self.base_path + path).encode(),
                                                         self.host_header.encode(), self._headers)
            if len(self._heads) < 64:
                self._heads[(method, path)] = head
        return head

    async def request(self, method: str, path: str, body: bytes | None, *,
                      deadline: float | None = None, extra_headers: bytes | None = None) -> Response:
        """Send a request; return once the final answer's status and headers are in (1xx skipped).

        ``extra_headers`` are prebuilt ``Name: value\\r\\n`` lines added to this request only.
        With ``deadline`` (loop time), the call fails with ``TimeoutError`` past it, until the
        answer is read or ``Response.watch`` moves it. On any failure or cancellation the
        connection is dropped, never returned to the pool.
        """
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        head = self._head(method, path)
        if extra_headers:  # "Name: value\r\n" lines for this request only (traceparent)
            head += extra_headers
        if body is None:
            payload = head + b"\r\n"
        else:
            payload = head + b"Content-Length: %d\r\n\r\n" % len(body)
        for attempt in (0, 1):
            conn = self._take_idle()  # the usual case: no waiting, so nothing for a deadline to bound
            reused = conn is not None
            if conn is None:
                async with asyncio.timeout_at(deadline):  # None: no deadline
                    conn, reused = await self._acquire()
            conn._reset()
            conn.busy = True
            if deadline is not None:
                conn.watch(deadline)
            try:
                transport = conn.transport
                assert transport is not None
                if body is not None and len(body) > 65536:
                    transport.writelines((payload, body))
                else:
                    transport.write(payload + body if body else payload)
                while not conn.status:
                    await conn._wait()
            except ConnectionClosed as exc:
                self._release(conn, False)
                if reused and not exc.started and attempt == 0 and method in _IDEMPOTENT:
                    continue  # closed while idle, or the request ran and is harmless to repeat
                raise
            except BaseException:
                conn.close()
                self._release(conn, False)
                raise
            return Response(conn)
        raise AssertionError("unreachable")

    def _take_idle(self) -> _Connection | None:
        """The most recently used idle connection still fit for reuse, if any."""
        idle = self._idle
        if self._closed:
            return None
        now = self.loop.time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive and not conn.transport.is_closing():
                return conn
            conn.close()
            self._count -= 1
        return None

    async def _acquire(self) -> tuple[_Connection, bool]:
        while True:
            if self._closed:
                raise ConnectionError("the connection pool is closed")  # nothing was sent
            conn = self._take_idle()
            if conn is not None:
                return conn, True
            if not self.limit or self._count < self.limit:
                break
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass on a wake-up this caller will not use
                raise
        self._count += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None)
        except BaseException:
            self._count -= 1
            self._wake_one()
            raise
        return conn, False

    def _release(self, conn: _Connection, reusable: bool) -> None:
        if not conn.busy:
            return
        conn.busy = False
        conn.deadline = 0.0
        if reusable and not self._closed and not conn.closed:
            conn.idle_since = self.loop.time()
            self._idle.append(conn)
        else:
            conn.close()
            self._count -= 1
        self._wake_one()

    def _forget(self, conn: _Connection) -> None:
        """The backend closed ``conn``; if it was idle, it no longer counts."""
        if not conn.busy and conn in self._idle:
            self._idle.remove(conn)
            self._count -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_use(self) -> int:
        return self._count - len(self._idle)

    async def close(self) -> None:
        """Close idle connections now; connections in use are closed when released."""
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._count -= len(self._idle)
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
