"""Liveness, and the readiness rule that ``/readyz`` (handlers/status.py) applies: both cheap."""

from __future__ import annotations

from aiohttp import web

from proxy.gateway import Gateway
from proxy.handlers.common import json_response

__all__ = ["healthz", "readiness"]


async def healthz(request: web.Request) -> web.StreamResponse:
    """The process is up and serving."""
    return json_response({"status": "ok"})


def readiness(gw: Gateway) -> tuple[bool, dict[str, object]]:
    """Ready when every required route has at least one target with a healthy backend."""
    routes: dict[str, object] = {}
    ready = True
    for route in gw.config.policy.routes:
        healthy = [
            name
            for target in (*route.targets, *route.fallback)
            for name in target.backends
            if gw.health.get(name) is not None and gw.health[name].up and not gw.breaker_refuses(name)
        ]
        routes[route.name] = {"ready": bool(healthy), "required": route.required, "healthy_backends": healthy}
        if route.required and not healthy:
            ready = False
    return ready, routes

