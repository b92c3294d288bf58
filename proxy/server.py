"""Running the app: one process, or N worker processes sharing the port with SO_REUSEPORT.

Handler cancellation is on: when a client disconnects, its handler is cancelled, which closes the
upstream request at once (also while waiting for the first byte), so Ollama stops generating.
A new connection must deliver its first request's headers within ``server.header_timeout``
seconds or it is closed (slowloris). At most ``server.max_connections`` connections are open at once
(idle keep-alive ones and clients still sending their headers included); one more gets a 503 in
OpenAI's shape and is closed. Connections start in the fast lane (``proxy.fastlane``), which serves
the model endpoints itself and hands anything else to aiohttp's protocol. SIGTERM/SIGINT stop
accepting, let in-flight requests and streams finish for up to ``server.shutdown_timeout`` seconds,
then close. SIGHUP re-reads the config file (hot reload).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping

from aiohttp import web

from proxy.config import Config
from proxy.errors import ServiceUnavailableError, render_error
from proxy.fastlane.connection import Lane
from proxy.middleware import Handler, gateway_middleware

__all__ = ["start_site", "serve", "warn_if_exposed"]

# POSTed to the fast lane (proxy.fastlane) unless CORS or server.fast_lane: false says otherwise
FAST_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


def _fast_handlers(app: web.Application) -> dict[str, Handler]:
    """The app's own POST handlers of ``FAST_PATHS``: the fast lane calls exactly what aiohttp would."""
    found = {}
    for route in app.router.routes():
        path = route.resource.get_info().get("path") if route.resource is not None else None
        if route.method == "POST" and path in FAST_PATHS:
            found[path] = route.handler
    return found

log = logging.getLogger("proxy.server")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(config: Config, host: str) -> bool:
    """Log a warning (and return True) when client auth is off and ``host`` is not loopback."""
    if config.auth.credentials or _is_loopback(host):
        return False
    log.warning("authentication is OFF and the gateway listens on %s: anyone who reaches this port "
                "can use every model. Configure auth.credentials.", host or "every interface")
    return True


_REFUSING_MAX = 256  # refusals in progress beyond this are reset without an answer
_REFUSAL_LINGER = 2.0  # seconds a refused client gets to read the 503 before the socket closes


def _busy_response() -> bytes:
    status, body, headers = render_error(ServiceUnavailableError(
        "The gateway has too many open connections; retry shortly.", code="too_many_connections"))
    head = [f"HTTP/1.1 {status} Service Unavailable", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Retry-After: 1", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


class _Gate:
    """The listening socket's protocol factory: the fast lane's or aiohttp's protocol, for at most
    ``limit`` connections."""

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
        self._tail = b""  # the last bytes seen, so a header end split across two reads is found

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # slow-client guard: the first request's headers must be complete within header_timeout
        self._timer = asyncio.get_running_loop().call_later(self._gate.header_timeout, transport.close)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._gate.open -= 1
        if self._timer is not None:
            self._timer.cancel()
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            if b"\r\n\r\n" in self._tail + data:
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = data[-3:]
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
        assert isinstance(transport, asyncio.Transport)
        self._gate.refusing += 1
        if self._gate.refusing > _REFUSING_MAX:
            transport.abort()
            return
        transport.write(self._gate.busy)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(_REFUSAL_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read: it is refused whatever it is

    def connection_lost(self, exc: Exception | None) -> None:
        self._gate.refusing -= 1
        if self._timer is not None:
            self._timer.cancel()


class _LimitedSite(web.TCPSite):
    """A TCPSite whose listening socket goes through a `_Gate` (aiohttp has no connection limit)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, config: Config,
                 reuse_port: bool | None, backlog: int) -> None:
        super().__init__(runner, host, port, reuse_port=reuse_port, backlog=backlog)
        self.config = config
        self.lane: Lane | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner (TCPSite.start, minus its create_server)
        server = self._runner.server
        assert server is not None and isinstance(self._runner, web.AppRunner)
        app = self._runner.app
        factory: Callable[[], asyncio.Protocol] = server
        # the fast lane runs the gateway middleware and nothing else: any other middleware or
        # response hook (CORS) means every request goes through aiohttp's web layer
        if (self.config.server.fast_lane and list(app.middlewares) == [gateway_middleware]
                and not app.on_response_prepare):
            factory = self.lane = Lane(app, server, _fast_handlers(app), self.config.server)
        self._server = await asyncio.get_running_loop().create_server(
            _Gate(factory, self.config.server.max_connections, self.config.server.header_timeout),
            self._host, self._port, backlog=self._backlog, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port)

    async def stop(self) -> None:
        await super().stop()  # stop accepting
        if self.lane is not None:  # then the fast lane's requests finish, before aiohttp's server drains its own
            await self.lane.shutdown(self.config.server.shutdown_timeout)


async def start_site(app: web.Application, config: Config, *, host: str, port: int,
                     reuse_port: bool = False) -> tuple[web.AppRunner, int]:
    """Start serving ``app``; returns the runner and the bound port (``port=0`` picks a free one)."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=config.server.shutdown_timeout,
                           keepalive_timeout=config.server.keepalive_timeout,
                           max_field_size=16384, max_line_size=16384)
    await runner.setup()
    site = _LimitedSite(runner, host, port, config=config, reuse_port=reuse_port or None, backlog=1024)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound


async def _serve_one(config: Config, host: str, port: int, *, reuse_port: bool, environ: Mapping[str, str],
                     multiprocess_dir: str | None) -> None:
    from proxy.app import create_app
    from proxy.reload import install_reload

    app = create_app(config, multiprocess_dir=multiprocess_dir)
    runner, bound = await start_site(app, config, host=host, port=port, reuse_port=reuse_port)
    warn_if_exposed(config, host)
    log.info("serving on http://%s:%d (pid %d)", host, bound, os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    install_reload(app, environ)
    await stop.wait()
    log.info("shutting down: finishing in-flight requests (up to %.0fs)", config.server.shutdown_timeout)
    await runner.cleanup()


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
    from proxy.metrics import clear_multiprocess_dir

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
            from proxy.metrics import mark_process_dead

            mark_process_dead(child, mp_dir)
        except Exception:  # metrics cleanup must not hide the exit status
            pass
    if own_dir:
        shutil.rmtree(mp_dir, ignore_errors=True)
    return int(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run: python -m proxy")
