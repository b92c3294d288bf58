"""Warm-up: load the models of ``ops.warmup`` at startup so the first user request is not cold.

A load is Ollama's cheapest request: ``POST /api/generate`` with a model and no prompt, which loads
the model and answers ``done_reason: "load"`` without generating. It runs in the background while
the gateway serves; ``Warmup.states`` holds each model's state and ``/readyz`` stays not ready until
every one has finished (loaded or failed: a model that cannot load must not block readiness forever).
Loads on one backend go one after another (they compete for the same memory); backends in parallel.
A model that is missing is pulled first when ``ops.auto_pull`` allows it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from policies.outcome import Outcome
from proxy.backends import Backends
from proxy.background.pull import Puller
from proxy.background.tasks import Tasks
from proxy.config import OpsConfig
from proxy.errors import ProxyError, UpstreamStreamError
from proxy.jsonio import JSONDecodeError, dumps, loads
from proxy.upstream.backend import Upstream

__all__ = ["FAILED", "LOADING", "PENDING", "READY", "Warmup", "load_model"]

log = logging.getLogger("proxy.background.warmup")

PENDING, LOADING, READY, FAILED = "pending", "loading", "ready", "failed"


async def load_model(upstream: Upstream, model: str, keep_alive: str | int | None) -> float:
    """Load ``model`` into memory on an Ollama backend; returns the seconds it took."""
    body: dict[str, object] = {"model": model}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    started = time.perf_counter()
    resp = await upstream.send("POST", "/api/generate", dumps(body), model=model)
    raw = await resp.read()
    lines = [line for line in raw.splitlines() if line.strip()]
    try:
        last = loads(lines[-1]) if lines else {}
    except JSONDecodeError:
        last = {}
    if isinstance(last, dict) and "error" in last:
        raise UpstreamStreamError(f"loading {model} on {upstream.name} failed: {last['error']}",
                                  outcome=Outcome.STREAM_ERROR, backend=upstream.name)
    return time.perf_counter() - started


class Warmup:
    """The warm-up of ``ops.warmup``: each (backend, model)'s state, and the task that loads them."""

    def __init__(self, backends: Backends, puller: Puller, tasks: Tasks) -> None:
        self.backends, self.puller, self.tasks = backends, puller, tasks
        self.states: dict[tuple[str, str], str] = {}

    def warming(self) -> list[str]:
        """``backend/model`` of every warm-up that has not finished yet."""
        return [f"{b}/{m}" for (b, m), state in self.states.items() if state in (PENDING, LOADING)]

    def start(self, ops: OpsConfig) -> asyncio.Task[None] | None:
        """Mark every warm-up model pending and load them in the background (None: nothing to do)."""
        by_backend: dict[str, list[str]] = {}
        for item in ops.warmup:
            upstream = self.backends.upstreams.get(item.backend)
            if upstream is not None and upstream.kind == "ollama":
                by_backend.setdefault(item.backend, []).append(item.model)
                self.states[(item.backend, item.model)] = PENDING
        if not by_backend:
            return None
        return self.tasks.spawn(self._warm_up(by_backend, ops.warmup_keep_alive), name="warm-up")

    async def _warm_up(self, by_backend: dict[str, list[str]], keep_alive: str | int | None) -> None:
        """Load every model; backends in parallel, one model after another on each; never raises."""
        await asyncio.gather(*(self._warm_backend(self.backends.upstreams[name], models, keep_alive)
                               for name, models in by_backend.items()))
        log.info("warm-up finished")

    async def _warm_backend(self, upstream: Upstream, models: list[str], keep_alive: str | int | None) -> None:
        for model in models:
            key = (upstream.name, model)
            self.states[key] = LOADING
            try:
                try:
                    seconds = await load_model(upstream, model, keep_alive)
                except ProxyError as exc:
                    if (exc.outcome is not Outcome.MODEL_NOT_FOUND
                            or not (await self.puller.auto_pull(upstream, model)).ready):
                        raise
                    seconds = await load_model(upstream, model, keep_alive)
            except ProxyError as exc:
                self.states[key] = f"{FAILED}: {exc.message}"
                log.warning("warm-up of %s on %s failed: %s", model, upstream.name, exc.message)
            except Exception:  # a bug must not keep /readyz at "warming" forever
                self.states[key] = f"{FAILED}: internal error (see the gateway's log)"
                log.exception("warm-up of %s on %s failed unexpectedly", model, upstream.name)
            else:
                self.states[key] = READY
                log.info("warm-up: %s loaded on %s in %.1fs", model, upstream.name, seconds)
