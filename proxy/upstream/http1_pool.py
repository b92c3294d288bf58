"""The connection pool of the backend HTTP/1.1 client (``proxy.upstream.http1``): one per backend host.

``Pool.request`` writes one prebuilt header block on a keep-alive connection (the most recently
used idle one, else a new one, waiting in order beyond ``limit``) and returns the ``Response`` once
the final answer's status and headers are in. An idempotent request whose reused connection closed
before any byte of the answer is sent once more on a new connection. ``proxy.upstream.backend``
builds its pools from ``Pool`` (the seam ``bench/session_pool.py`` replaces).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import urlsplit

from proxy.upstream.http1_connection import ConnectionClosed, _Connection
from proxy.upstream.http1_response import Response

__all__ = ["Pool"]

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 9.2.2


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
