"""One connection of the backend HTTP/1.1 client (``proxy.upstream.http1``) and the answer read on it.

``_Connection`` is the asyncio protocol of one TCP (or TLS) connection: httptools (llhttp, in C)
parses the answer as bytes arrive, skipping interim (``1xx``) answers and undoing chunked framing;
reading pauses past ``_HIGH_WATER`` buffered bytes; the connection's one timer fails the request in
flight past its deadline. ``ConnectionClosed`` and ``InvalidAnswer`` are how it fails. The pool that
opens and reuses connections is ``proxy.upstream.http1_pool``; the caller's view of an answer is
``proxy.upstream.http1_response``.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import httptools

__all__ = ["ConnectionClosed", "InvalidAnswer"]

_HIGH_WATER = 256 * 1024


class ConnectionClosed(ConnectionError):
    """The connection closed after the request was written, before the answer was complete.

    The backend may have read the request and acted on it, even when no byte of the answer came.
    """

    def __init__(self, *, started: bool) -> None:
        super().__init__("backend closed the connection" + (" mid-answer" if started else ""))
        self.started = started  # some bytes of the answer had arrived


class InvalidAnswer(Exception):
    """The backend's bytes are not a valid HTTP/1.1 answer."""


class _Owner(Protocol):
    """The pool a connection belongs to (``http1_pool.Pool``), as its connections and answers use it."""

    loop: asyncio.AbstractEventLoop

    def _forget(self, conn: _Connection) -> None: ...

    def _release(self, conn: _Connection, reusable: bool) -> None: ...


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the state of the answer being read on it."""

    __slots__ = ("pool", "transport", "parser", "status", "headers", "body", "buffered", "complete",
                 "framed", "error", "waiter", "started", "closed", "paused", "idle_since", "busy", "keep_alive",
                 "deadline", "timer", "timer_at")

    def __init__(self, pool: _Owner) -> None:
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
