"""Liveness and readiness: ``/healthz`` (and ``/livez``) and ``/readyz``, both cheap.

Readiness is ``Backends.readiness`` (every required route has a healthy backend) plus warm-up:
not ready while ``ops.warmup`` models still load. Each route lists the backends it considered
(state, circuit, the health check's error), and ``reasons`` says why the gateway is not ready
(empty when it is), one line per required route without a usable backend, e.g.
``route chat: no usable backend (local: down, backend local is unreachable (connection refused))``.
Backend names and error texts only, never URLs or credentials: ``/readyz`` needs no credential.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiohttp import web

from proxy.handlers.common import json_response
from proxy.keys import BACKENDS, CTX, STATE, WARMUP

__all__ = ["healthz", "not_ready_reasons", "readyz"]


async def healthz(request: web.Request) -> web.StreamResponse:
    """The process is up and serving."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    """503 until every required route has a healthy backend and warm-up has finished."""
    ready, routes = request.app[BACKENDS].readiness(request[CTX].config.policy.routes)
    pending = request.app[WARMUP].warming()
    ok = ready and not pending
    body: dict[str, object] = {"status": "ready" if ok else "not_ready", "reasons": not_ready_reasons(routes, pending),
                               "routes": routes, "warming": pending}
    state = request.app.get(STATE)
    if state is not None:  # reported, not a readiness condition: limits fall back as on_unavailable says
        body["state"] = state.status()
    return json_response(body, status=200 if ok else 503)


def not_ready_reasons(routes: Mapping[str, object], warming: Sequence[str]) -> list[str]:
    """One line per required route without a usable backend, naming each backend's state; then warm-up."""
    reasons = []
    for name, route in routes.items():
        if not isinstance(route, dict) or route.get("ready") or not route.get("required"):
            continue
        parts = []
        for b in route.get("backends", ()):
            why = [] if b["state"] == "up" else [str(b["state"])]
            if b["circuit"] != "closed":
                why.append("circuit " + str(b["circuit"]).replace("_", "-"))
            if b.get("error"):
                why.append(str(b["error"]))
            parts.append(f"{b['name']}: {', '.join(why)}")
        reasons.append(f"route {name}: no usable backend ({'; '.join(parts)})")
    if warming:
        reasons.append(f"warming up: {', '.join(warming)}")
    return reasons
