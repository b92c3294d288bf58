"""A backend's answer as the caller of the HTTP/1.1 client (``proxy.upstream.http1``) reads it.

``Response`` holds the status and headers once they are in; the body is read whole or by chunks,
once, straight from its connection's buffer (``proxy.upstream.http1_connection``). Releasing it
gives the connection back to its pool (``proxy.upstream.http1_pool``), for reuse only when the
answer was read to the end and the backend allowed keep-alive; closing it drops the connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.upstream.http1_connection import _Connection

__all__ = ["Response"]


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
