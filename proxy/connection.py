"""One client connection: aiohttp's own protocol, behind the gateway's connection limit and header timeout.

``ConnectionGate`` is the listening socket's protocol factory. Each accepted connection is counted
once established (for HTTPS: once its handshake is done); beyond ``server.max_connections`` it gets
a 503 in OpenAI's shape and is closed. A new connection must deliver its first request head within
``server.header_timeout`` (blank lines before the request line do not count). ``GatewayProtocol`` is
aiohttp's ``web.RequestHandler`` with two differences: requests its parser refuses are answered in
HTTP/1.1 with OpenAI's JSON error shape and logged without any of the refused bytes, and each read is
handed to the parser in pieces that end where a request head ends, so a refusal spoils neither the
requests before it nor, after ``Connection: close``, the request it follows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11, RawRequestMessage
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy.errors import InvalidRequestError, ProxyError, ServiceUnavailableError, render_error

__all__ = ["ConnectionGate", "GatewayProtocol", "MAX_HEAD_LINE", "MAX_HEADERS"]

log = logging.getLogger("proxy.connection")

MAX_HEAD_LINE = 16384  # bytes in the request line or one header line (aiohttp's default is 8190)
MAX_HEADERS = 128  # header lines in one request head (aiohttp's default)
_HEAD_END = b"\r\n\r\n"
_REFUSING_MAX = 256  # refusals in progress beyond this are reset without an answer
_REFUSAL_LINGER = 2.0  # seconds a refused client gets to read the 503 before the socket closes



def _busy_response() -> bytes:
    status, body, headers = render_error(ServiceUnavailableError(
        "The gateway has too many open connections; retry shortly.", code="too_many_connections"))
    head = [f"HTTP/1.1 {status} Service Unavailable", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Retry-After: 1", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def _refusal(exc: BaseException | None, status: int) -> ProxyError:
    """What a parser-level refusal tells the client: a fixed text per cause, never the bytes sent."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return InvalidRequestError(f"A request line or header is longer than {MAX_HEAD_LINE} bytes.",
                                   code="header_too_large", status=431)
    if isinstance(exc, (http_exceptions.BadStatusLine, http_exceptions.BadHttpMethod,
                        http_exceptions.InvalidURLError)):
        return InvalidRequestError("The request line is not valid HTTP/1.1.", code="bad_request_line")
    if isinstance(exc, http_exceptions.TransferEncodingError | http_exceptions.ContentLengthError):
        return _BAD_FRAMING
    if isinstance(exc, http_exceptions.HttpProcessingError):
        # llhttp reports most causes as a plain BadHttpMessage; its fixed reason text comes before
        # ":\n", the client's bytes after it (and are never looked at)
        reason = exc.message.split(":\n", 1)[0]
        if "'Host' header" in reason:  # missing or duplicated: the same answer as the middleware's
            return InvalidRequestError("A request must carry exactly one Host header.", code="bad_host_header")
        if reason.startswith("Too many headers"):
            return InvalidRequestError(f"A request may carry at most {MAX_HEADERS} headers.",
                                       code="too_many_headers")
        if any(word in reason for word in ("chunk", "Content-Length", "Transfer-Encoding")):
            return _BAD_FRAMING
    if status == 413:
        return InvalidRequestError("Request body is too large.", code="request_too_large", status=413)
    if status >= 500:
        return ProxyError("The server had an error while processing your request.", status=status)
    return InvalidRequestError("The request is not valid HTTP/1.1.", code="bad_request", status=status)


_BAD_FRAMING = InvalidRequestError("The request body's framing is not valid HTTP/1.1.", code="bad_framing")


class _BrokenBodyError(InvalidRequestError, ConnectionError):
    """Raised by reading a body whose framing the parser refused (a bad chunk): the same 400 as a
    refusal (``bad_framing``), and a ``ConnectionError`` to code that would go on reading, since the
    connection's byte stream can no longer be followed."""

    def __init__(self) -> None:
        super().__init__(_BAD_FRAMING.message, code="bad_framing")


class _WatchedParser:
    """aiohttp's request parser, watched for refusals inside a body already handed to a handler.

    aiohttp queues a refusal as the connection's next request and leaves the body being read
    waiting for bytes that will never be parsed (until ``server.body_timeout``); here the body's
    read fails at once instead, so the request is answered with the 400 and the connection closed.
    """

    def __init__(self, parser: Any) -> None:
        self._parser = parser
        self._body: Any = None  # the StreamReader of the last request the parser emitted

    def feed_data(self, data: bytes) -> Any:
        try:
            result = self._parser.feed_data(data)
        except http_exceptions.HttpProcessingError:
            body, self._body = self._body, None
            if body is not None and not body.is_eof():
                body.set_exception(_BrokenBodyError())
            raise
        if result[0]:
            self._body = result[0][-1][1]
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class _Refused(web.Response):
    """The answer to a head aiohttp could not parse. aiohttp hands it a placeholder request that
    says HTTP/1.0, which would make the status line ``HTTP/1.0`` and drop ``Connection: close``;
    it is sent as HTTP/1.1 like every other answer (an HTTP/1.0 client accepts a 1.1 status line)."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if request.version != HttpVersion11:
            message = RawRequestMessage(
                method=request.method, path="/", version=HttpVersion11, headers=CIMultiDictProxy(CIMultiDict()),
                raw_headers=(), should_close=True, compression=None, upgrade=False, chunked=False, url=URL("/"))
            request = web.BaseRequest(message, request.content, request.protocol, request.writer, request.task,
                                      asyncio.get_running_loop())
        return await super().prepare(request)


class GatewayProtocol(web.RequestHandler):
    """aiohttp's per-connection protocol; its answer to requests it cannot parse differs, and each
    read is handed to the parser in pieces that end where a request head ends."""

    __slots__ = ("_head_tail",)

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        # the one private attribute used: aiohttp has no hook for a refusal inside a body
        self._parser = _WatchedParser(self._parser)
        self._head_tail = b""  # the last bytes seen, so a head end split across reads is found

    def data_received(self, data: bytes) -> None:
        # aiohttp's parser raises at the first byte it refuses and loses the requests it completed
        # earlier in the same read. Bytes after a "Connection: close" request are refused that way
        # (RFC 9112 9.6: they are to be ignored), and so is a bad request pipelined behind a good
        # one: either would turn the good request's answer into a 400. Feeding the parser up to each
        # head's end first queues the complete requests before the rest of the read is parsed; a
        # refusal then only answers what follows them (or nothing, after "Connection: close").
        ends = []
        joint = (self._head_tail + data[:3]).find(_HEAD_END)
        if joint != -1:
            ends.append(joint + 4 - len(self._head_tail))
        at = data.find(_HEAD_END)
        while at != -1:
            ends.append(at + 4)
            at = data.find(_HEAD_END, at + 4)
        self._head_tail = (self._head_tail + data[-3:])[-3:]
        start = 0
        for end in ends:
            if start < end < len(data):
                super().data_received(data[start:end])
                start = end
        super().data_received(data[start:] if start else data)

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's own version logs the exception, whose text can hold the refused header line
        log.info("refused a malformed request from %s: %s (HTTP %d)", request.remote,
                 type(exc).__name__ if exc is not None else "error", status)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; the connection is closed instead")
        code, body, headers = render_error(_refusal(exc, status))
        response = _Refused(body=body, status=code, content_type="application/json", headers=headers)
        response.force_close()
        return response


class ConnectionGate:
    """The listening socket's protocol factory: aiohttp's protocol for at most ``limit`` connections."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], limit: int, header_timeout: float) -> None:
        self.factory, self.limit, self.header_timeout = factory, limit, header_timeout
        self.open = self.refusing = 0
        self.busy = _busy_response()

    def __call__(self) -> asyncio.Protocol:
        return _Admission(self)

    def admit(self) -> asyncio.Protocol:
        """The protocol of a connection just established: served and counted, or refused."""
        if self.open >= self.limit:
            return _Refusal(self)
        self.open += 1
        return _Counted(self, self.factory())


class _Admission(asyncio.Protocol):
    """An accepted connection, counted only once established (for HTTPS: once its handshake is
    done, within ``header_timeout``). A handshake that fails never reaches the protocol again, not
    even ``connection_lost``: a connection counted when accepted would keep its slot for good."""

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        protocol = self._gate.admit()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


class _Counted(asyncio.Protocol):
    """The protocol of one connection, passed every event; counted until the connection is lost."""

    def __init__(self, gate: ConnectionGate, inner: asyncio.Protocol) -> None:
        self._gate, self._inner = gate, inner
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes seen, so a head end split across reads is found
        self._started = False  # a byte other than CR/LF has arrived (blank lines may precede a request)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # slow-client guard: the first request's head must be complete within header_timeout
        self._timer = asyncio.get_running_loop().call_later(self._gate.header_timeout, transport.close)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._gate.open -= 1
        if self._timer is not None:
            self._timer.cancel()
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            if self._started:
                seen = self._tail + data
            else:  # blank lines before the request line end no head: they must not stop the timer
                seen = data.lstrip(b"\r\n")
                self._started = bool(seen)
            if _HEAD_END in seen:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = seen[-3:]  # the terminator may arrive a byte at a time
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _Refusal(asyncio.Protocol):
    """Over the limit: write the 503 at once and half-close, so the client's request bytes that
    still arrive do not turn into a reset that would discard the answer; close after a moment."""

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # any transport: uvloop's TCPTransport is not an asyncio.Transport subclass
        self._gate.refusing += 1
        if self._gate.refusing > _REFUSING_MAX:
            transport.abort()  # type: ignore[attr-defined]
            return
        transport.write(self._gate.busy)  # type: ignore[attr-defined]
        if transport.can_write_eof():  # type: ignore[attr-defined]
            transport.write_eof()  # type: ignore[attr-defined]
        self._timer = asyncio.get_running_loop().call_later(_REFUSAL_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read: it is refused whatever it is

    def connection_lost(self, exc: Exception | None) -> None:
        self._gate.refusing -= 1
        if self._timer is not None:
            self._timer.cancel()
