"""Running the app: one process, or N worker processes sharing the port with SO_REUSEPORT.

Every connection is served by aiohttp's own HTTP/1.1 protocol (``web.RequestHandler``, in
``proxy.connection``), made for the runner's public ``server``. Around it, on the listening socket,
the gateway adds what aiohttp has no setting for:

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
from collections.abc import Mapping

from aiohttp import web

from proxy.config import Config
from proxy.connection import MAX_HEAD_LINE, MAX_HEADERS, ConnectionGate, GatewayProtocol

__all__ = ["Serving", "start_site", "serve", "warn_if_exposed", "warn_if_limits_per_process"]

log = logging.getLogger("proxy.server")

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
        return GatewayProtocol(manager, loop=loop, access_log=None, keepalive_timeout=server_cfg.keepalive_timeout,
                         max_line_size=MAX_HEAD_LINE, max_field_size=MAX_HEAD_LINE, max_headers=MAX_HEADERS)

    gate = ConnectionGate(protocol, server_cfg.max_connections, server_cfg.header_timeout)
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


def warn_if_limits_per_process(config: Config, workers: int) -> bool:
    """Say plainly (and return True) when credentials' limits are kept per process: no ``state`` section."""
    limited = [c.credential.name for c in config.auth.credentials
               if c.credential.max_concurrent or c.credential.requests_per_minute or c.credential.tokens_per_minute]
    if config.state is not None or not limited:
        return False
    if workers > 1:
        log.warning("rate limits are per process: each of the %d workers applies the limits of %s on its own "
                    "(%d times each limit), and every replica multiplies them again; configure "
                    "state.redis_url to share them", workers, ", ".join(limited), workers)
    else:
        log.info("rate limits are per process: several replicas of this gateway each apply them; configure "
                 "state.redis_url to share them")
    return True


def serve(config: Config, *, host: str, port: int, workers: int, environ: Mapping[str, str]) -> int:
    """Serve until SIGTERM/SIGINT; with ``workers`` > 1, fork that many processes on one port."""
    warn_if_limits_per_process(config, workers)
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
