"""The fast lane's request and streamed response: the part of aiohttp's API the model handlers use.

A ``FastRequest`` carries what ``proxy.middleware.serve_request`` and the model handlers read from
a request (``app``, ``method``, ``path``, ``headers``, ``content_length``, ``read()``, the typed
request keys). An ``EventStream`` is what the relay writes a committed SSE answer to: chunked
HTTP/1.1, status and headers in the same write as the first event, ``drain`` when the client reads
slower than we write. A plain ``web.Response`` a handler returns is serialised by ``response_bytes``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict

if TYPE_CHECKING:
    from proxy.fastlane.connection import FastConnection

__all__ = ["FastRequest", "EventStream", "response_bytes"]

_HOP = frozenset({"content-length", "transfer-encoding", "connection"})
_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


def _head(status: int, reason: str | None, headers: Mapping[str, str], extra: str) -> bytes:
    """Status line and headers; a header with a line break in it is refused (no header injection)."""
    items = headers.items()
    if any(name in headers for name in _HOP):  # framing is ours to write: never the response object's
        items = [(name, value) for name, value in items if name.lower() not in _HOP]
    lines = [f"{name}: {value}\r\n" for name, value in items]
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):  # one CRLF per header, no more
        raise ValueError("line break in a response header")
    return (f"HTTP/1.1 {status} {reason or HTTPStatus(status).phrase}\r\n{text}"
            f"Date: {_http_date()}\r\n{extra}\r\n\r\n").encode()  # UTF-8, as aiohttp writes headers


def response_bytes(response: web.Response, *, close: bool) -> bytes:
    """A whole ``web.Response`` as HTTP/1.1 bytes with Content-Length (and Connection: close)."""
    body = response.body
    if not isinstance(body, (bytes, bytearray)):
        raise TypeError("the fast lane sends bytes bodies only")
    extra = f"Content-Length: {len(body)}" + ("\r\nConnection: close" if close else "")
    return _head(response.status, response.reason, response.headers, extra) + body


class FastRequest:
    """One request of a fast-lane connection; its body arrives through ``feed``."""

    __slots__ = ("app", "method", "path", "headers", "content_length", "keep_alive", "_conn", "_values",
                 "_parts", "_missing", "_body", "_waiter")

    def __init__(self, conn: FastConnection, app: web.Application, path: str, headers: CIMultiDict[str],
                 content_length: int, *, keep_alive: bool) -> None:
        self._conn = conn
        self.app = app
        self.method = "POST"
        self.path = path
        self.headers = headers
        self.content_length = content_length
        self.keep_alive = keep_alive
        self._values: dict[object, Any] = {}
        self._parts: list[bytes] = []
        self._missing = content_length
        self._body = b""
        self._waiter: asyncio.Future[None] | None = None

    # the typed request keys (CTX, CREDENTIAL), as on web.Request
    def __getitem__(self, key: object) -> Any:
        return self._values[key]

    def __setitem__(self, key: object, value: object) -> None:
        self._values[key] = value

    def get(self, key: object, default: object = None) -> Any:
        return self._values.get(key, default)

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._conn.transport

    @property
    def content(self) -> FastRequest:
        return self  # read_body asks ``request.content.is_eof()``

    def is_eof(self) -> bool:
        return not self._missing

    @property
    def missing(self) -> int:
        """Body bytes not received yet."""
        return self._missing

    def feed(self, data: bytes) -> int:
        """Take body bytes from ``data``; returns how many were taken (the rest is the next request)."""
        part = data[: self._missing] if len(data) > self._missing else data
        self._parts.append(part)
        self._missing -= len(part)
        if not self._missing:
            self._body = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
            self._parts = []
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)
        return len(part)

    async def read(self) -> bytes:
        if self._missing:
            self._waiter = asyncio.get_running_loop().create_future()
            self._conn.want_body()
            await self._waiter
        return self._body

    def open_stream(self, headers: Mapping[str, str]) -> EventStream:
        """A committed 200 event stream; nothing is sent before its first ``write``."""
        return EventStream(self._conn, headers)


class EventStream:
    """A chunked 200 answer on a fast-lane connection; mirrors the StreamResponse calls the relay makes."""

    __slots__ = ("_conn", "_head", "finished")
    status = 200
    prepared = True

    def __init__(self, conn: FastConnection, headers: Mapping[str, str]) -> None:
        self._conn = conn
        extra = "Transfer-Encoding: chunked" + ("\r\nConnection: close" if conn.closing else "")
        self._head: bytes | None = _head(200, "OK", headers, extra)
        self.finished = False

    async def write(self, data: bytes) -> None:
        if not data:
            return
        frame = b"%x\r\n%b\r\n" % (len(data), data)
        if self._head is not None:
            frame, self._head = self._head + frame, None
        await self._conn.send(frame)

    async def write_eof(self) -> None:
        if self.finished:
            return
        frame = b"0\r\n\r\n"
        if self._head is not None:
            frame, self._head = self._head + frame, None
        await self._conn.send(frame)
        self.finished = True
