"""The model list clients see (``/v1/models``): route names and aliases, then installed models.

The routes' exact names and aliases come first, then the models installed on every Ollama backend
that some route would accept, deduplicated and cached for ``ops.models_cache_ttl`` seconds.
Concurrent misses share one round of tag fetches (single flight); a backend the health checks
last found down is not asked (its tags would only cost the caller a timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time

from policies.model import Policy
from policies.plan import is_glob, resolve_route
from proxy.backends import Backends
from proxy.errors import ProxyError
from proxy.translate.models import model_object, tags_to_model_ids
from proxy.upstream.backend import Upstream

__all__ = ["Catalog"]

log = logging.getLogger("proxy.catalog")
_TAGS_TIMEOUT = 5.0


class Catalog:
    """The cached model list; ``invalidate`` after a pull or delete."""

    def __init__(self, backends: Backends) -> None:
        self.backends = backends
        self._cached: tuple[float, list[dict[str, object]]] | None = None
        self._building: asyncio.Future[list[dict[str, object]]] | None = None

    def invalidate(self) -> None:
        self._cached = None

    async def models(self, policy: Policy, ttl: float) -> list[dict[str, object]]:
        """The list for ``policy``, from the cache when younger than ``ttl`` seconds."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < ttl:
            return cached[1]
        if self._building is not None:
            return await asyncio.shield(self._building)
        self._building = asyncio.get_running_loop().create_future()
        try:
            models = await self._build(policy)
        except BaseException as exc:
            self._building.set_exception(exc)
            self._building.exception()  # retrieved: a miss nobody else waited for is not an error
            raise
        finally:
            building, self._building = self._building, None
        building.set_result(models)
        self._cached = (time.monotonic(), models)
        return models

    async def _build(self, policy: Policy) -> list[dict[str, object]]:
        seen: set[str] = set()
        out: list[dict[str, object]] = []
        for route in policy.routes:
            for name in route.models:
                if not is_glob(name) and name not in seen:
                    seen.add(name)
                    out.append(model_object(name, owned_by="gateway"))
        asked = [u for u in self.backends.of_kind("ollama") if self.backends.health[u.name].up is not False]
        for result in await asyncio.gather(*(_installed(u) for u in asked)):
            for model_id, created in result:
                if model_id not in seen and resolve_route(policy, model_id) is not None:
                    seen.add(model_id)
                    out.append(model_object(model_id, created=created))
        return out


async def _installed(upstream: Upstream) -> list[tuple[str, int]]:
    try:
        answer = await upstream.get_json("/api/tags", timeout=_TAGS_TIMEOUT)
    except ProxyError as exc:
        log.info("model discovery: %s", exc.message)
        return []
    return list(tags_to_model_ids(answer)) if isinstance(answer, dict) else []
