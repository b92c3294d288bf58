"""Running the app: one process, or N worker processes sharing the port with SO_REUSEPORT.

Every connection is served by aiohttp's own HTTP/1.1 protocol (``web.RequestHandler``), made by the
runner's public ``server`` factory. Around it, on the listening socket, the gateway adds what aiohttp
has no setting for:

- at most ``server.max_connections`` open connections (idle keep-alive ones and clients still
  sending their headers included); one more gets a 503 in OpenAI's shape and is closed;
- a new connection must deliver its first request head within ``server.header_timeout`` seconds or
  it is closed (slowloris); later heads on a kept-alive connection are bounded by aiohttp's own
  ``keepalive_timeout``;
- requests aiohttp's parser refuses (a line or header too long, too many headers, bad framing) are
  answered in OpenAI's JSON error shape, and logged without any part of the offending bytes (an
  oversized ``Authorization`` header must not reach a log);
- HTTPS (and mutual TLS) when ``server.tls`` is set (``proxy.tls``).

Handler cancellation is on: when a client disconnects, its handler is cancelled, which closes the
upstream request at once, so Ollama stops generating. SIGTERM/SIGINT stop accepting, let in-flight
requests and streams finish for up to ``server.shutdown_timeout`` seconds, then close. SIGHUP
re-reads the config file (hot reload) and the TLS certificate.
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

from aiohttp import http_exceptions, web

from proxy.config import Config
from proxy.errors import InvalidRequestError, ProxyError, ServiceUnavailableError, render_error

__all__ = ["Serving", "start_site", "serve", "warn_if_exposed"]

log = logging.getLogger("proxy.server")

_MAX_HEAD_LINE = 16384  # bytes in the request line or one header line (aiohttp's default is 8190)
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
    if isinstance(exc, (http_exceptions.BadStatusLine, http_exceptions.BadHttpMethod)):
        return InvalidRequestError("The request line is not valid HTTP/1.1.", code="bad_request_line")
    if isinstance(exc, http_exceptions.TransferEncodingError | http_exceptions.ContentLengthError):
        return InvalidRequestError("The request body's framing is not valid HTTP/1.1.", code="bad_framing")
    if status == 413:
        return InvalidRequestError("Request body is too large.", code="request_too_large", status=413)
    if status >= 500:
        return ProxyError("The server had an error while processing your request.", status=status)
    return InvalidRequestError("The request is not valid HTTP/1.1.", code="bad_request", status=status)


class _Protocol(web.RequestHandler):
    """aiohttp's per-connection protocol; only its answer to requests it cannot parse differs."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's own version logs the exception, whose text can hold the refused header line
        log.info("refused a malformed request from %s: %s (HTTP %d)", request.remote,
                 type(exc).__name__ if exc is not None else "error", status)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; the connection is closed instead")
        code, body, headers = render_error(_refusal(exc, status))
        response = web.Response(body=body, status=code, content_type="application/json", headers=headers)
        response.force_close()
        return response


class _Gate:
    """The listening socket's protocol factory: aiohttp's protocol for at most ``limit`` connections."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], limit: int, header_timeout: float) -> None:
        self.factory, self.limit, self.header_timeout = factory, limit, header_timeout
        self.open = self.refusing = 0
        self.busy = _busy_response()

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.limit:
            return _Refusal(self)
        self.open += 1
        return _Counted(self, self.factory())


class _Counted(asyncio.Protocol):
    """The protocol of one connection, passed every event; counted until the connection is lost."""

    def __init__(self, gate: _Gate, inner: asyncio.Protocol) -> None:
        self._gate, self._inner = gate, inner
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes seen, so a head end split across reads is found

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
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
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

    def __init__(self, runner: web.AppRunner, server: asyncio.base_events.Server, port: int) -> None:
        self.runner, self.server, self.port = runner, server, port

    async def cleanup(self) -> None:
        """Stop accepting, let requests finish within ``shutdown_timeout``, then close everything."""
        self.server.close()
        await self.runner.cleanup()


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
                         max_line_size=_MAX_HEAD_LINE, max_field_size=_MAX_HEAD_LINE)

    gate = _Gate(protocol, server_cfg.max_connections, server_cfg.header_timeout)
    sock = _listen(host, port, reuse_port=reuse_port)
    listening = await loop.create_server(gate, sock=sock, backlog=1024, ssl=tls)
    bound = sock.getsockname()[1]
    return Serving(runner, listening, bound), bound


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
