"""Liveness and readiness: ``/healthz`` (and ``/livez``) and ``/readyz``, both cheap.

Readiness is ``Backends.readiness`` (every required route has a healthy backend) plus warm-up:
not ready while ``ops.warmup`` models still load.
"""

from __future__ import annotations

from aiohttp import web

from proxy.handlers.common import json_response
from proxy.keys import BACKENDS, CTX, WARMUP

__all__ = ["healthz", "readyz"]


async def healthz(request: web.Request) -> web.StreamResponse:
    """The process is up and serving."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    """503 until every required route has a healthy backend and warm-up has finished."""
    ready, routes = request.app[BACKENDS].readiness(request[CTX].config.policy.routes)
    pending = request.app[WARMUP].warming()
    ok = ready and not pending
    return json_response({"status": "ready" if ok else "not_ready", "routes": routes, "warming": pending},
                         status=200 if ok else 503)
