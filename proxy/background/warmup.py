"""Warm-up: load the models of ``ops.warmup`` at startup so the first user request is not cold.

A load is Ollama's cheapest request: ``POST /api/generate`` with a model and no prompt, which loads
the model and answers ``done_reason: "load"`` without generating. It runs in the background while
the gateway serves; ``gw.warmup`` holds each model's state and ``/readyz`` stays not ready until
every one has finished (loaded or failed: a model that cannot load must not block readiness forever).
Loads on one backend go one after another (they compete for the same memory); backends in parallel.
A model that is missing is pulled first when ``ops.auto_pull`` allows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from policies.outcome import Outcome
from proxy.errors import ProxyError, UpstreamStreamError
from proxy.jsonio import JSONDecodeError, dumps, loads
from proxy.background.pull import auto_pull
from proxy.upstream.backend import Upstream

if TYPE_CHECKING:
    from proxy.gateway import Gateway

__all__ = ["load_model", "warm_up", "start_warmup", "warming"]

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


def warming(gw: Gateway) -> list[str]:
    """``backend/model`` of every warm-up that has not finished yet."""
    return [f"{b}/{m}" for (b, m), state in gw.warmup.items() if state in (PENDING, LOADING)]


async def _warm_backend(gw: Gateway, upstream: Upstream, models: list[str]) -> None:
    keep_alive = gw.config.ops.warmup_keep_alive
    for model in models:
        key = (upstream.name, model)
        gw.warmup[key] = LOADING
        try:
            try:
                seconds = await load_model(upstream, model, keep_alive)
            except ProxyError as exc:
                if exc.outcome is not Outcome.MODEL_NOT_FOUND or not (await auto_pull(gw, upstream, model)).ready:
                    raise
                seconds = await load_model(upstream, model, keep_alive)
        except ProxyError as exc:
            gw.warmup[key] = f"{FAILED}: {exc.message}"
            log.warning("warm-up of %s on %s failed: %s", model, upstream.name, exc.message)
        except Exception:  # a bug must not keep /readyz at "warming" forever
            gw.warmup[key] = f"{FAILED}: internal error (see the gateway's log)"
            log.exception("warm-up of %s on %s failed unexpectedly", model, upstream.name)
        else:
            gw.warmup[key] = READY
            log.info("warm-up: %s loaded on %s in %.1fs", model, upstream.name, seconds)


async def warm_up(gw: Gateway) -> None:
    """Load every ``ops.warmup`` model; never raises for a backend problem."""
    by_backend: dict[str, list[str]] = {}
    for item in gw.config.ops.warmup:
        upstream = gw.upstreams.get(item.backend)
        if upstream is None or upstream.kind != "ollama":
            continue
        by_backend.setdefault(item.backend, []).append(item.model)
    await asyncio.gather(*(_warm_backend(gw, gw.upstreams[name], models) for name, models in by_backend.items()))
    if by_backend:
        log.info("warm-up finished")


def start_warmup(gw: Gateway) -> asyncio.Task[None] | None:
    """Mark every warm-up model pending and start loading them in the background (None: nothing to do)."""
    items = [(w.backend, w.model) for w in gw.config.ops.warmup if w.backend in gw.upstreams]
    if not items:
        return None
    for key in items:
        gw.warmup[key] = PENDING
    task = asyncio.create_task(warm_up(gw), name="warm-up")
    gw.background.add(task)
    task.add_done_callback(gw.background.discard)
    return task
