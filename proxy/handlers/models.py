"""``GET /v1/models`` and ``GET /v1/models/{id}``: what clients can actually ask for.

The routes' exact names and aliases, plus the models installed on every Ollama backend that some
route would accept, deduplicated and cached for ``ops.models_cache_ttl`` seconds. Ids may contain
``:`` and ``/``. A credential with a model allow-list sees only what it may use.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from policies.plan import is_glob, resolve_route
from proxy.errors import ModelNotFoundError, ProxyError
from proxy.gateway import Gateway
from proxy.handlers.common import json_response
from proxy.keys import CREDENTIAL, CTX, GATEWAY
from proxy.translate.models import model_object, tags_to_model_ids

__all__ = ["list_models", "retrieve_model", "model_catalog"]

log = logging.getLogger("proxy.models")
_TAGS_TIMEOUT = 5.0


async def _installed(gw: Gateway) -> list[tuple[str, int]]:
    ollamas = [u for u in gw.upstreams.values() if u.kind == "ollama"]

    async def tags(upstream: object) -> list[tuple[str, int]]:
        try:
            answer = await upstream.get_json("/api/tags", timeout=_TAGS_TIMEOUT)  # type: ignore[attr-defined]
        except ProxyError as exc:
            log.info("model discovery: %s", exc.message)
            return []
        return list(tags_to_model_ids(answer)) if isinstance(answer, dict) else []

    found: list[tuple[str, int]] = []
    for result in await asyncio.gather(*(tags(u) for u in ollamas)):
        found.extend(result)
    return found


async def model_catalog(gw: Gateway) -> list[dict[str, object]]:
    """Route names and aliases first, then installed models a route accepts; cached briefly."""
    now = time.monotonic()
    cached = gw.catalog
    if cached is not None and now - cached[0] < gw.config.ops.models_cache_ttl:
        return cached[1]
    policy = gw.config.policy
    seen: set[str] = set()
    out: list[dict[str, object]] = []
    for route in policy.routes:
        for name in route.models:
            if not is_glob(name) and name not in seen:
                seen.add(name)
                out.append(model_object(name, owned_by="gateway"))
    for model_id, created in await _installed(gw):
        if model_id not in seen and resolve_route(policy, model_id) is not None:
            seen.add(model_id)
            out.append(model_object(model_id, created=created))
    gw.catalog = (now, out)
    return out


def _visible(request: web.Request, models: list[dict[str, object]]) -> list[dict[str, object]]:
    credential = request.get(CREDENTIAL)
    if credential is None:
        return models
    gw = request.app[GATEWAY]
    return [m for m in models if gw.model_allowed(credential, str(m["id"]))]


async def list_models(request: web.Request) -> web.StreamResponse:
    models = _visible(request, await model_catalog(request.app[GATEWAY]))
    return json_response({"object": "list", "data": models}, {"X-Request-ID": request[CTX].request_id})


async def retrieve_model(request: web.Request) -> web.StreamResponse:
    wanted = request.match_info["model"]
    models = _visible(request, await model_catalog(request.app[GATEWAY]))
    for model in models:
        model_id = str(model["id"])
        if model_id == wanted or model_id == f"{wanted}:latest":
            return json_response({**model, "id": wanted}, {"X-Request-ID": request[CTX].request_id})
    raise ModelNotFoundError(wanted)
