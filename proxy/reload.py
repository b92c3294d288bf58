"""Hot reload: SIGHUP re-reads the config file; an invalid file is rejected and the old one keeps serving.

In-flight requests keep the backends they already hold; old sessions close after a grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping

from aiohttp import web

from proxy.config import ConfigError, load_config
from proxy.keys import GATEWAY
from proxy.upstream import close_upstreams, open_upstreams

__all__ = ["reload_config", "install_reload"]

log = logging.getLogger("proxy.reload")
_GRACE = 30.0


async def reload_config(app: web.Application, environ: Mapping[str, str]) -> bool:
    """Re-read the config file; True when the new one was adopted."""
    gw = app[GATEWAY]
    path = gw.config.source
    if path is None:
        log.warning("reload requested but the gateway was started without a config file")
        return False
    try:
        config = load_config(path, environ)
    except ConfigError as exc:
        log.error("config reload rejected, keeping the running config:\n%s", exc)
        return False
    old = gw.upstreams
    gw.set_config(config)
    gw.adopt_upstreams(open_upstreams(config.backends))
    log.info("config reloaded from %s", path)

    async def close_later() -> None:
        await asyncio.sleep(_GRACE)
        await close_upstreams(old)

    task = asyncio.create_task(close_later())
    gw.background.add(task)
    task.add_done_callback(gw.background.discard)
    return True


def install_reload(app: web.Application, environ: Mapping[str, str]) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload_config(app, environ)))
