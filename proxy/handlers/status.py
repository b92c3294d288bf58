"""``GET /status`` (admin): what the gateway knows about its backends right now.

It reads only state the gateway already holds (the background health checks, breakers, pulls and
warm-up), so it is cheap to poll from the dashboard.
"""

from __future__ import annotations

import time

from aiohttp import web

from proxy.backends import Backends
from proxy.background.pull import Puller
from proxy.background.warmup import Warmup
from proxy.config import Config
from proxy.handlers.common import json_response
from proxy.handlers.health import not_ready_reasons
from proxy.keys import BACKENDS, CTX, PULLER, STATE, WARMUP

__all__ = ["status", "status_document"]


def _backend(backends: Backends, name: str) -> dict[str, object]:
    upstream = backends.upstreams[name]
    health = backends.health.get(name)
    breaker = backends.breakers.get(name)
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


def status_document(config: Config, backends: Backends, warmup: Warmup, puller: Puller) -> dict[str, object]:
    """The ``/status`` body: readiness (with the reasons when not ready), every backend, pulls and warm-up."""
    ready, routes = backends.readiness(config.policy.routes)
    pending = warmup.warming()
    auto_pull = config.ops.auto_pull
    return {
        "status": "ready" if ready and not pending else "not_ready",
        "reasons": not_ready_reasons(routes, pending),
        "time": time.time(),
        "routes": routes,
        "warming": pending,
        "warmup": [{"backend": b, "model": m, "state": state} for (b, m), state in warmup.states.items()],
        "backends": [_backend(backends, name) for name in backends.upstreams],
        "pulls": puller.board.snapshot(),
        "auto_pull": {"enabled": auto_pull.enabled, "models": list(auto_pull.models), "timeout": auto_pull.timeout},
    }


async def status(request: web.Request) -> web.StreamResponse:
    app = request.app
    document = status_document(request[CTX].config, app[BACKENDS], app[WARMUP], app[PULLER])
    state = app.get(STATE)
    document["state"] = state.status() if state is not None else {"backend": None, "per_process": True}
    return json_response(document)
