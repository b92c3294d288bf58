"""``GET /status`` (admin) and ``GET /readyz``: what the gateway knows about its backends right now.

``/status`` reads only state the gateway already holds (the background health checks, breakers,
pulls and warm-up), so it is cheap to poll from the dashboard. ``/readyz`` is the routes' readiness
from ``handlers.health.readiness`` plus warm-up: not ready while ``ops.warmup`` models still load.
"""

from __future__ import annotations

import time

from aiohttp import web

from proxy.gateway import Gateway
from proxy.handlers.common import json_response
from proxy.handlers.health import readiness
from proxy.keys import GATEWAY
from proxy.background.warmup import warming

__all__ = ["status", "readyz", "status_document"]


def _backend(gw: Gateway, name: str) -> dict[str, object]:
    upstream = gw.upstreams[name]
    health = gw.health.get(name)
    breaker = gw.breakers.get(name)
    return {
        "name": name,
        "type": upstream.kind,
        "url": upstream.cfg.url,  # never holds credentials: config rejects user:pass@ in URLs
        "up": health.up if health else None,
        "latency_ms": round(health.latency * 1000, 1) if health and health.latency is not None else None,
        "checked_at": health.checked_at if health else None,
        "error": health.error if health else None,
        "circuit": breaker.state if breaker else "closed",
        "in_flight": upstream.outstanding,
        "version": health.version if health else None,
        "installed": list(health.installed) if health else [],
        "running": [dict(r) for r in health.running] if health else [],
    }


def status_document(gw: Gateway) -> dict[str, object]:
    """The ``/status`` body: readiness, every backend, pulls and warm-up."""
    ready, routes = readiness(gw)
    pending = warming(gw)
    return {
        "status": "ready" if ready and not pending else "not_ready",
        "time": time.time(),
        "routes": routes,
        "warming": pending,
        "warmup": [{"backend": b, "model": m, "state": state} for (b, m), state in gw.warmup.items()],
        "backends": [_backend(gw, name) for name in gw.upstreams],
        "pulls": gw.pulls.snapshot(),
        "auto_pull": {"enabled": gw.config.ops.auto_pull.enabled, "models": list(gw.config.ops.auto_pull.models),
                      "timeout": gw.config.ops.auto_pull.timeout},
    }


async def status(request: web.Request) -> web.StreamResponse:
    return json_response(status_document(request.app[GATEWAY]))


async def readyz(request: web.Request) -> web.StreamResponse:
    """503 until every required route has a healthy backend and warm-up has finished."""
    gw = request.app[GATEWAY]
    ready, routes = readiness(gw)
    pending = warming(gw)
    ok = ready and not pending
    return json_response({"status": "ready" if ok else "not_ready", "routes": routes, "warming": pending},
                         status=200 if ok else 503)
