"""Running the app: one process, or N worker processes sharing the port with SO_REUSEPORT.

Handler cancellation is on: when a client disconnects, its handler is cancelled, which closes the
upstream request at once (also while waiting for the first byte), so Ollama stops generating.
SIGTERM/SIGINT stop accepting, let in-flight requests and streams finish for up to
``server.shutdown_timeout`` seconds, then close. SIGHUP re-reads the config file (hot reload).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Mapping

from aiohttp import web

from proxy.config import Config

__all__ = ["start_site", "serve"]

log = logging.getLogger("proxy.server")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def start_site(app: web.Application, config: Config, *, host: str, port: int,
                     reuse_port: bool = False) -> tuple[web.AppRunner, int]:
    """Start serving ``app``; returns the runner and the bound port (``port=0`` picks a free one)."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=config.server.shutdown_timeout,
                           keepalive_timeout=config.server.keepalive_timeout,
                           max_field_size=16384, max_line_size=16384)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=1024)
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
    if not config.auth.credentials and not _is_loopback(host):
        log.warning("authentication is OFF and the gateway listens on %s: anyone who reaches this port "
                    "can use every model. Configure auth.credentials.", host)
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
    return int(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run: python -m proxy")
