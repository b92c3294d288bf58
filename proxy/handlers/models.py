"""``GET /v1/models`` and ``GET /v1/models/{id}``: what clients can actually ask for (``proxy.catalog``).

Ids may contain ``:`` and ``/``. A credential with a model allow-list sees only what it may use.
"""

from __future__ import annotations

from aiohttp import web

from proxy.auth import model_allowed
from proxy.errors import ModelNotFoundError
from proxy.handlers.common import json_response
from proxy.keys import CATALOG, CREDENTIAL, CTX

__all__ = ["list_models", "retrieve_model"]


async def _visible(request: web.Request) -> list[dict[str, object]]:
    config = request[CTX].config
    models = await request.app[CATALOG].models(config.policy, config.ops.models_cache_ttl)
    credential = request.get(CREDENTIAL)
    if credential is None:
        return models
    return [m for m in models if model_allowed(credential, str(m["id"]))]


async def list_models(request: web.Request) -> web.StreamResponse:
    models = await _visible(request)
    return json_response({"object": "list", "data": models}, {"X-Request-ID": request[CTX].request_id})


async def retrieve_model(request: web.Request) -> web.StreamResponse:
    wanted = request.match_info["model"]
    for model in await _visible(request):
        model_id = str(model["id"])
        if model_id == wanted or model_id == f"{wanted}:latest":
            return json_response({**model, "id": wanted}, {"X-Request-ID": request[CTX].request_id})
    raise ModelNotFoundError(wanted)
