"""Ollama's read-only calls in front: ``GET /api/tags``, ``/api/ps``, ``/api/version`` and ``/``.

Each asks every Ollama backend now (the small probes pool, a short timeout), except those the
health checks last found down, and merges what answered: a backend that fails is left out of the
answer; when none answers, the first failure is the answer (502 in Ollama's shape). The model
lists hold what the caller may use (its allow-list), under route aliases too
(``proxy.translate.native.merge_models``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiohttp import web

from proxy.auth import model_allowed
from proxy.backends import Backends
from proxy.errors import ProxyError, UpstreamUnavailableError
from proxy.handlers.common import json_response
from proxy.keys import BACKENDS, CREDENTIAL, CTX
from proxy.translate.native import NATIVE_KIND, lowest_version, merge_models

__all__ = ["add_list_routes", "native_tags", "native_ps", "native_version", "native_root"]

log = logging.getLogger("proxy.handlers.native")
_TIMEOUT = 5.0


async def _ask_all(backends: Backends, path: str) -> list[tuple[str, object]]:
    """``(backend, answer)`` for every Ollama backend that answered ``GET path`` (a 502 if none did)."""
    ollamas = backends.of_kind(NATIVE_KIND)
    if not ollamas:
        return []
    asked = [u for u in ollamas if backends.health[u.name].up is not False]
    if not asked:
        raise UpstreamUnavailableError("no Ollama backend is up (every one failed its last health check)")
    results = await asyncio.gather(*(u.get_json(path, timeout=_TIMEOUT) for u in asked), return_exceptions=True)
    answered: list[tuple[str, object]] = []
    failures: list[ProxyError] = []
    for upstream, result in zip(asked, results):
        if isinstance(result, ProxyError):
            log.info("%s: %s", path, result.message)
            failures.append(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            answered.append((upstream.name, result))
    if not answered:
        raise failures[0]
    return answered


def _models(answer: object) -> list[Mapping[str, object]]:
    models = answer.get("models") if isinstance(answer, dict) else None
    return [m for m in models if isinstance(m, Mapping)] if isinstance(models, list) else []


async def _model_list(request: web.Request, path: str) -> web.StreamResponse:
    answers = await _ask_all(request.app[BACKENDS], path)
    credential = request.get(CREDENTIAL)
    policy = request[CTX].config.policy
    merged = merge_models(policy, [(name, _models(answer)) for name, answer in answers],
                          lambda name: credential is None or model_allowed(credential, name))
    return json_response({"models": merged})


async def native_tags(request: web.Request) -> web.StreamResponse:
    """The models installed on the Ollama backends that the caller may use, in Ollama's shape."""
    return await _model_list(request, "/api/tags")


async def native_ps(request: web.Request) -> web.StreamResponse:
    """The models loaded in memory on the Ollama backends that the caller may use."""
    return await _model_list(request, "/api/ps")


async def native_version(request: web.Request) -> web.StreamResponse:
    """The lowest version among the Ollama backends: a client gating a feature on it finds it everywhere."""
    answers = await _ask_all(request.app[BACKENDS], "/api/version")
    version = lowest_version([answer.get("version") for _, answer in answers if isinstance(answer, dict)])
    if version is None:
        raise UpstreamUnavailableError("no Ollama backend reported its version")
    return json_response({"version": version})


async def native_root(request: web.Request) -> web.StreamResponse:
    """What Ollama answers on ``/`` (clients and load balancers probe it); HEAD too."""
    return web.Response(text="Ollama is running", content_type="text/plain")


def add_list_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", native_root)
    router.add_get("/api/tags", native_tags)
    router.add_get("/api/ps", native_ps)
    router.add_get("/api/version", native_version)
