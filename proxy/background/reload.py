"""Hot reload: SIGHUP re-reads the config file; an invalid file is rejected and the old one keeps serving.

The switch is atomic for the event loop: the new backends' sessions are opened first, then config
and backends are swapped with no ``await`` in between, so a request sees either the old gateway or
the new one. In-flight requests (streams included) keep the config and the ``Upstream`` objects they already hold:
the old sessions are closed only once none of them has a request outstanding, or after the longest
old ``first_byte + read`` timeout at the latest. Breaker and health state carry over for backends
kept under the same name. Listen address, workers, logging and metrics switches need a restart.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping

from aiohttp import web

from proxy.config import Config, ConfigError, load_config
from proxy.keys import ACCOUNTING, ADMISSION, BACKENDS, CATALOG, CONFIG, IMAGES, TASKS
from proxy.telemetry.audit import audit
from proxy.tls import ServerTLS
from proxy.upstream.backend import Upstream, close_upstreams, open_upstreams

__all__ = ["reload_config", "install_reload"]

log = logging.getLogger("proxy.background.reload")
_DRAIN_POLL = 0.25  # seconds between checks that the old backends have no request in flight


async def reload_config(app: web.Application, environ: Mapping[str, str]) -> bool:
    """Re-read the config file; True when the new one was adopted, False (old config kept) otherwise."""
    live = app[CONFIG]
    path = live.current.source
    if path is None:
        log.warning("reload requested but the gateway was started without a config file")
        return False
    try:
        config = load_config(path, environ)
        upstreams = open_upstreams(config.backends)
    except ConfigError as exc:
        log.error("config reload rejected, keeping the running config:\n%s", exc)
        audit("reload", who="signal", backend=None, model=None, outcome="rejected",
              error=f"{len(exc.problems)} problem(s) in {path}")
        return False
    except Exception as exc:
        log.error("config reload rejected, keeping the running config: %s", exc)
        audit("reload", who="signal", backend=None, model=None, outcome="rejected", error=type(exc).__name__)
        return False
    _warn_restart_only(live.current, config)
    backends = app[BACKENDS]
    old = backends.upstreams
    # no await from here to the end of the swap: a request sees the old gateway or the new one
    live.current = config
    backends.adopt(upstreams, config.policy.breaker)
    app[ADMISSION].configure(config.auth)
    app[ACCOUNTING].configure(config)
    app[IMAGES].config = config.image_fetch
    app[CATALOG].invalidate()
    log.info("config reloaded from %s (%d backends, %d routes)", path, len(config.backends),
             len(config.policy.routes))
    app[TASKS].spawn(_close_when_drained(old), name="reload-drain")
    audit("reload", who="signal", backend=None, model=None, outcome="ok")
    return True


async def _close_when_drained(old: Mapping[str, Upstream]) -> None:
    """Close the replaced sessions once their in-flight requests are done (bounded; also on cancel)."""
    limit = max((u.cfg.timeouts.first_byte + u.cfg.timeouts.read for u in old.values()), default=0.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    try:
        while any(u.outstanding > 0 for u in old.values()) and loop.time() < deadline:
            await asyncio.sleep(_DRAIN_POLL)
    finally:
        await close_upstreams(old)


def _warn_restart_only(before: Config, after: Config) -> None:
    b, a = before.server, after.server
    for what, old, new in (("server.host/port/workers", (b.host, b.port, b.workers), (a.host, a.port, a.workers)),
                           ("server.max_body_mb/max_connections/keepalive_timeout",
                            (b.max_body_bytes, b.max_connections, b.keepalive_timeout),
                            (a.max_body_bytes, a.max_connections, a.keepalive_timeout)),
                           ("logging", before.logging, after.logging),
                           ("server.cors_origins (CORS was off at start)",
                            bool(b.cors_origins), bool(b.cors_origins or a.cors_origins)),
                           ("metrics.enabled", before.metrics.enabled, after.metrics.enabled)):
        if old != new:
            log.warning("config reload: changes to %s take effect only after a restart", what)


def install_reload(app: web.Application, environ: Mapping[str, str], *, tls: ServerTLS | None = None) -> None:
    """Reload the config, and the TLS certificate of ``tls``, on SIGHUP (call from within the running loop)."""
    loop = asyncio.get_running_loop()

    async def reload_all() -> None:
        adopted = await reload_config(app, environ)
        if tls is not None:
            new = app[CONFIG].current.server.tls if adopted else None
            tls.reload(new)  # the certificate files may have been renewed even if the config did not change

    def on_sighup() -> None:
        app[TASKS].spawn(reload_all(), name="reload")

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
