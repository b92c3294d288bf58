"""Background health checks with cheap endpoints only.

Ollama: ``/api/version`` (up, version), ``/api/ps`` (loaded models, for loaded-model preference) and
``/api/tags`` (installed models). OpenAI-compatible: ``GET /models``. Never a generation call: on
Ollama that would load a model and evict another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from proxy.backends import BackendHealth, Backends
from proxy.errors import ProxyError
from proxy.upstream.backend import Upstream

__all__ = ["check_backend", "check_all", "health_loop"]

log = logging.getLogger("proxy.background.health")


def _names(answer: object) -> list[Mapping[str, object]]:
    models = answer.get("models") if isinstance(answer, dict) else None
    return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []


async def check_backend(upstream: Upstream, *, timeout: float = 5.0) -> BackendHealth:
    """One round of checks for one backend; never raises for a backend problem."""
    started = time.perf_counter()
    try:
        if upstream.models_path is not None:  # an OpenAI-compatible or Anthropic cloud
            await upstream.get_json(upstream.models_path, timeout=timeout)
            return BackendHealth(up=True, latency=time.perf_counter() - started, checked_at=time.time())
        version = await upstream.get_json("/api/version", timeout=timeout)
        latency = time.perf_counter() - started
        ps, tags = await asyncio.gather(upstream.get_json("/api/ps", timeout=timeout),
                                        upstream.get_json("/api/tags", timeout=timeout))
    except ProxyError as exc:
        return BackendHealth(up=False, error=exc.message, checked_at=time.time())
    running = tuple(
        {"model": m.get("model") or m.get("name"), "expires_at": m.get("expires_at"),
         "size_vram": m.get("size_vram"), "context_length": m.get("context_length")}
        for m in _names(ps)
    )
    installed = tuple(str(m.get("model") or m.get("name")) for m in _names(tags))
    return BackendHealth(
        up=True, latency=latency, checked_at=time.time(),
        version=str(version.get("version")) if isinstance(version, dict) else None,
        installed=installed, running=running,
        loaded=frozenset(str(r["model"]) for r in running if r.get("model")),
    )


async def check_all(backends: Backends, *, on_up: Callable[[str, bool], None] | None = None) -> None:
    """One round of checks for every backend, stored in ``backends``; ``on_up(name, up)`` hears each result."""
    upstreams = list(backends.upstreams.values())
    results = await asyncio.gather(*(check_backend(u) for u in upstreams))
    for upstream, health in zip(upstreams, results):
        backends.set_health(upstream.name, health)
        if on_up is not None:
            on_up(upstream.name, bool(health.up))


async def health_loop(backends: Backends, *, on_up: Callable[[str, bool], None] | None = None) -> None:
    """Check every backend now, then every ``min(health_interval)`` seconds, until cancelled."""
    while True:
        try:
            await check_all(backends, on_up=on_up)
        except Exception:  # a bug here must not stop the checks
            log.exception("health check round failed")
        interval = min((u.cfg.health_interval for u in backends.upstreams.values()), default=10.0)
        await asyncio.sleep(interval)
