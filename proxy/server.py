"""Running the app: one process, or N worker processes sharing the port with SO_REUSEPORT.

Every connection is served by aiohttp's own HTTP/1.1 protocol (``web.RequestHandler``), made by the
runner's public ``server`` factory. Around it, on the listening socket, the gateway adds what aiohttp
has no setting for:

- at most ``server.max_connections`` open connections (idle keep-alive ones and clients still
  sending their headers included; for HTTPS, counted once the handshake is done, which must be
  within ``server.header_timeout``); one more gets a 503 in OpenAI's shape and is closed;
- a new connection must deliver its first request head within ``server.header_timeout`` seconds or
  it is closed (slowloris; blank lines before the request line do not count as a head); later heads
  on a kept-alive connection are bounded by aiohttp's own ``keepalive_timeout``;
- requests aiohttp's parser refuses (a line or header too long, too many headers, no or two Host
  headers, bad framing) are answered in HTTP/1.1 with OpenAI's JSON error shape, and logged without
  any part of the offending bytes (an oversized ``Authorization`` header must not reach a log); a
  refusal spoils neither the requests before it on the connection nor, after ``Connection: close``,
  the request it follows;
- HTTPS (and mutual TLS) when ``server.tls`` is set (``proxy.tls``).

Handler cancellation is on: when a client disconnects, its handler is cancelled, which closes the
upstream request at once, so Ollama stops generating. SIGTERM/SIGINT stop accepting, let in-flight
requests and streams finish for up to ``server.shutdown_timeout`` seconds, then close their
connections (so the process exits after about that long, not twice as long). SIGHUP re-reads the
config file (hot reload) and the TLS certificate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11, RawRequestMessage
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy.config import Config
from proxy.errors import InvalidRequestError, ProxyError, ServiceUnavailableError, render_error

__all__ = ["Serving", "start_site", "serve", "warn_if_exposed"]

log = logging.getLogger("proxy.server")

_MAX_HEAD_LINE = 16384  # bytes in the request line or one header line (aiohttp's default is 8190)
_MAX_HEADERS = 128  # header lines in one request head (aiohttp's default)
_HEAD_END = b"\r\n\r\n"
_REFUSING_MAX = 256  # refusals in progress beyond this are reset without an answer
_REFUSAL_LINGER = 2.0  # seconds a refused client gets to read the 503 before the socket closes


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(config: Config, host: str) -> bool:
    """Log a warning (and return True) when ``host`` is beyond loopback and clients are either not
    authenticated at all, or send their credentials in clear text (no ``server.tls``)."""
    if _is_loopback(host):
        return False
    where = host or "every interface"
    if not config.auth.credentials:
        log.warning("authentication is OFF and the gateway listens on %s: anyone who reaches this port "
                    "can use every model. Configure auth.credentials.", where)
        return True
    if config.server.tls is None:
        log.warning("the gateway listens on %s without TLS: clients' API keys and passwords cross the "
                    "network in clear text. Configure server.tls (or terminate TLS in front).", where)
        return True
    return False


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
        return InvalidRequestError(f"A request line or header is longer than {_MAX_HEAD_LINE} bytes.",
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
            return InvalidRequestError(f"A request may carry at most {_MAX_HEADERS} headers.",
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


class _Protocol(web.RequestHandler):
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


class _Gate:
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

    def __init__(self, gate: _Gate) -> None:
        self._gate = gate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        protocol = self._gate.admit()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


class _Counted(asyncio.Protocol):
    """The protocol of one connection, passed every event; counted until the connection is lost."""

    def __init__(self, gate: _Gate, inner: asyncio.Protocol) -> None:
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

    def __init__(self, gate: _Gate) -> None:
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


class Serving:
    """A started gateway: the runner, the listening server and the bound port; ``cleanup`` stops it."""

    def __init__(self, runner: web.AppRunner, server: asyncio.base_events.Server, port: int,
                 shutdown_timeout: float) -> None:
        self.runner, self.server, self.port = runner, server, port
        self.shutdown_timeout = shutdown_timeout

    async def cleanup(self) -> None:
        """Stop accepting, let requests finish within ``shutdown_timeout``, then close everything."""
        self.server.close()
        manager = self.runner.server
        if manager is not None:
            manager.pre_shutdown()  # idle connections close now, busy ones after their request
            await asyncio.gather(*(_finish(conn, self.shutdown_timeout) for conn in manager.connections))
        await self.runner.cleanup()


async def _finish(conn: web.RequestHandler, timeout: float) -> None:
    """Let ``conn`` finish its request for up to ``timeout`` seconds, then close it.

    aiohttp's own ``RequestHandler.shutdown`` waits ``timeout`` for the request, then fails only its
    body's read and waits ``timeout`` once more before it cancels the handler: a stream outliving
    the first wait kept the process for twice the timeout. Closing the connection instead cancels
    the handler at once (handler cancellation is on), which also closes its upstream request.
    """
    try:
        await asyncio.wait_for(conn.shutdown(timeout), timeout)
    except TimeoutError:
        conn.force_close()


def _listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.setblocking(False)
    return sock


async def start_site(app: web.Application, config: Config, *, host: str, port: int, reuse_port: bool = False,
                     tls: ssl.SSLContext | None = None) -> tuple[Serving, int]:
    """Start serving ``app``; returns what to ``cleanup()`` and the bound port (``port=0`` picks one)."""
    server_cfg = config.server
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=server_cfg.shutdown_timeout)
    await runner.setup()
    manager = runner.server
    assert manager is not None
    loop = asyncio.get_running_loop()

    def protocol() -> asyncio.Protocol:
        return _Protocol(manager, loop=loop, access_log=None, keepalive_timeout=server_cfg.keepalive_timeout,
                         max_line_size=_MAX_HEAD_LINE, max_field_size=_MAX_HEAD_LINE, max_headers=_MAX_HEADERS)

    gate = _Gate(protocol, server_cfg.max_connections, server_cfg.header_timeout)
    sock = _listen(host, port, reuse_port=reuse_port)
    listening = await loop.create_server(gate, sock=sock, backlog=1024, ssl=tls,
                                         ssl_handshake_timeout=server_cfg.header_timeout if tls else None)
    bound = sock.getsockname()[1]
    return Serving(runner, listening, bound, server_cfg.shutdown_timeout), bound


async def _serve_one(config: Config, host: str, port: int, *, reuse_port: bool, environ: Mapping[str, str],
                     multiprocess_dir: str | None) -> None:
    from proxy.app import create_app
    from proxy.background.reload import install_reload
    from proxy.tls import ServerTLS

    tls = ServerTLS(config.server.tls) if config.server.tls is not None else None
    app = create_app(config, multiprocess_dir=multiprocess_dir)
    serving, bound = await start_site(app, config, host=host, port=port, reuse_port=reuse_port,
                                      tls=tls.context if tls else None)
    warn_if_exposed(config, host)
    log.info("serving on %s://%s:%d (pid %d)", "https" if tls else "http", host, bound, os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    install_reload(app, environ, tls=tls)
    await stop.wait()
    log.info("shutting down: finishing in-flight requests (up to %.0fs)", config.server.shutdown_timeout)
    await serving.cleanup()


def _run(coro: object) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)  # type: ignore[arg-type]


def serve(config: Config, *, host: str, port: int, workers: int, environ: Mapping[str, str]) -> int:
    """Serve until SIGTERM/SIGINT; with ``workers`` > 1, fork that many processes on one port."""
    if workers <= 1:
        _run(_serve_one(config, host, port, reuse_port=False, environ=environ, multiprocess_dir=None))
        return 0
    # prometheus_client reads this at import time: set it before any worker imports it
    own_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # created here: removed again on exit
    mp_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="ollama-gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir
    from proxy.telemetry.metrics import clear_multiprocess_dir

    clear_multiprocess_dir(mp_dir)  # counters of an earlier run must not be merged in
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _run(_serve_one(config, host, port, reuse_port=True, environ=environ, multiprocess_dir=mp_dir))
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    status = 0
    for child in children:
        while True:
            try:
                _, code = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        status = status or (os.waitstatus_to_exitcode(code) != 0)
        try:
            from proxy.telemetry.metrics import mark_process_dead

            mark_process_dead(child, mp_dir)
        except Exception:  # metrics cleanup must not hide the exit status
            pass
    if own_dir:
        shutil.rmtree(mp_dir, ignore_errors=True)
    return int(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run: python -m proxy")
