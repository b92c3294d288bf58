"""Shadow requests: a copy of a share of a route's traffic sent to another target, answer discarded.

The client never waits for, nor sees, a shadow: ``start_shadow`` only schedules a background task
(kept in ``gw.background`` so it is not garbage-collected mid-flight). The copy is always
non-streamed, runs under its own deadline (the shadow backend's ``timeouts.read``), and every
failure is logged and swallowed. What it yields is a measurement: latency, outcome and token counts
through ``Metrics.shadow``, to compare a candidate backend (say Ollama) with the one serving users.
Shadows take no part in breaker bookkeeping, and at most ``MAX_SHADOWS`` run at once per gateway,
so a hanging shadow backend cannot pile up tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from policies.balance import choose_backend
from policies.model import Attempt, Route
from policies.outcome import Outcome
from proxy.errors import ProxyError
from proxy.jsonio import dumps
from proxy.relay import ollama_error_line
from proxy.translate.chat import chat_request_to_ollama
from proxy.translate.completions import completion_request_to_ollama

if TYPE_CHECKING:
    from proxy.gateway import Gateway
    from proxy.router import RequestContext
    from proxy.upstream.backend import Upstream

__all__ = ["MAX_SHADOWS", "start_shadow"]

log = logging.getLogger("proxy.background.shadow")

MAX_SHADOWS = 64
_TASK_NAME = "shadow"
# endpoint -> (Ollama path, OpenAI-compatible path, translator to Ollama)
_PATHS = {
    "chat": ("/api/chat", "/chat/completions", chat_request_to_ollama),
    "completion": ("/api/generate", "/completions", completion_request_to_ollama),
}


def start_shadow(gw: Gateway, ctx: RequestContext, body: Mapping[str, object], *, endpoint: str) -> None:
    """Send a non-streamed copy of ``body`` to ``ctx.plan.shadow`` in the background; never raises."""
    plan = ctx.plan
    if plan is None or plan.shadow is None:
        return
    attempt = plan.shadow
    if sum(1 for task in gw.background if task.get_name() == _TASK_NAME) >= MAX_SHADOWS:
        log.warning("request %s: shadow skipped, %d shadow requests already in flight", ctx.request_id,
                    MAX_SHADOWS)
        return
    upstream = _pick(gw, attempt)
    if upstream is None:
        log.debug("request %s: shadow skipped, no usable backend for %s", ctx.request_id, attempt.target.label())
        return
    copy = {key: value for key, value in body.items() if key not in ("stream", "stream_options")}
    task = asyncio.get_running_loop().create_task(
        _shadow(gw, plan.route, ctx.request_id, copy, attempt, upstream, endpoint), name=_TASK_NAME)
    gw.background.add(task)
    task.add_done_callback(gw.background.discard)


def _pick(gw: Gateway, attempt: Attempt) -> Upstream | None:
    """The least busy usable backend of the shadow target, without touching breaker state."""
    candidates = attempt.target.backends
    unavailable = {name for name in candidates if gw.breaker_refuses(name) or name not in gw.upstreams
                   or gw.health[name].up is False}
    name = choose_backend(candidates, model=attempt.model, unavailable=unavailable,
                          outstanding={n: gw.upstreams[n].outstanding for n in candidates if n in gw.upstreams},
                          loaded={n: gw.health[n].loaded for n in candidates if n in gw.health})
    return gw.upstreams[name] if name is not None else None


async def _shadow(gw: Gateway, route: Route, request_id: str, body: dict[str, object], attempt: Attempt,
                  upstream: Upstream, endpoint: str) -> None:
    started = time.perf_counter()
    outcome, prompt_tokens, completion_tokens = Outcome.OK.value, 0, 0
    upstream.outstanding += 1
    try:
        async with asyncio.timeout(upstream.cfg.timeouts.read):
            prompt_tokens, completion_tokens = await _send(upstream, body, attempt.model, route, endpoint)
    except ProxyError as exc:
        outcome = exc.outcome.value if exc.outcome is not None else "rejected"
        log.info("request %s: shadow to %s failed (%s): %s", request_id, upstream.name, outcome, exc.message)
    except TimeoutError:
        outcome = Outcome.TIMEOUT.value
        log.info("request %s: shadow to %s timed out", request_id, upstream.name)
    except asyncio.CancelledError:
        raise  # shutting down: nothing to record
    except Exception:
        outcome = "error"
        log.exception("request %s: shadow to %s failed unexpectedly", request_id, upstream.name)
    finally:
        upstream.outstanding -= 1
    if gw.metrics is not None:
        gw.metrics.shadow(route.name, upstream.name, outcome, duration=time.perf_counter() - started,
                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


async def _send(upstream: Upstream, body: dict[str, object], model: str, route: Route,
                endpoint: str) -> tuple[int, int]:
    """One non-streamed request; returns (prompt tokens, completion tokens) from the answer."""
    ollama_path, openai_path, to_ollama = _PATHS[endpoint]
    if upstream.kind == "openai":
        resp = await upstream.send("POST", openai_path, dumps({**body, "model": model, "stream": False}),
                                   model=model)
        answer = await resp.json()
        usage = answer.get("usage") if isinstance(answer, dict) else None
        if not isinstance(usage, dict):
            return 0, 0
        return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    native = to_ollama({**body, "stream": False}, model=model, default_options=route.options,
                       default_keep_alive=route.keep_alive)
    resp = await upstream.send("POST", ollama_path, dumps(native), model=model)
    answer = await resp.json()
    error = ollama_error_line(answer, upstream.name)
    if error is not None:
        raise error
    if not isinstance(answer, dict):
        return 0, 0
    return _int(answer.get("prompt_eval_count")), _int(answer.get("eval_count"))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
