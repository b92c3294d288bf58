"""Carrying out a routing plan: attempts in order, retries, fallback, breaker bookkeeping.

The decisions are the pure ``policies`` engine's; ``Router`` only does what they say, with the
backends' owner (``Backends``: choice and breakers) and the puller (auto-pull on "model not found").
Fallback happens only before the first byte has gone to the client: after that the relay ends the
stream with an error event and nothing is retried.

``ctx.fallbacks`` holds one ``(from, reason, to)`` per attempt given up *and followed by an attempt
actually sent*: a failure with nowhere left to go is not a fallback. An attempt skipped because its
circuit is open (or whose retries were cut short when it opened) is one, with reason
``circuit_open``, and appears in ``ctx.path`` (the request log's ``fallback_path``) as
``"backend:model (circuit open)"``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from policies.model import Attempt
from policies.outcome import Outcome, should_fall_back
from policies.retry import backoff_delay, may_retry
from proxy.backends import Backends
from proxy.background.pull import Puller
from proxy.context import RequestContext
from proxy.errors import ProxyError, ServiceUnavailableError
from proxy.telemetry.tracing import Tracer
from proxy.upstream.backend import Upstream

__all__ = ["CIRCUIT_OPEN", "Router"]

CIRCUIT_OPEN = "circuit_open"
"""The fallback reason of an attempt skipped, or a retry cut short, because its backend's circuit is open."""

log = logging.getLogger("proxy.router")
_T = TypeVar("_T")


def _retry_after(exc: ProxyError) -> float | None:
    value = exc.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _without_frames(exc: ProxyError) -> ProxyError:
    """``exc`` without its traceback and the low-level error it came from. The router keeps the last
    failure until the request ends (a stream's whole life): its frames would keep the failed attempt's
    payload and connection alive all that time. A ProxyError is rendered, never logged with a trace."""
    exc.__traceback__ = exc.__context__ = exc.__cause__ = None
    return exc


class Router:
    """Runs a request's attempts; ``on_retry(route, backend, outcome)`` hears retries (metrics).

    With a ``tracer``, each attempt sent runs inside its own span (``Tracer.attempt``).
    """

    def __init__(self, backends: Backends, puller: Puller, rng: random.Random, *,
                 on_retry: Callable[[str, str, str], None] | None = None, tracer: Tracer | None = None) -> None:
        self.backends, self.puller, self.rng, self.on_retry = backends, puller, rng, on_retry
        self.tracer = tracer

    async def run(self, ctx: RequestContext, call: Callable[[Attempt, Upstream], Awaitable[_T]]) -> _T:
        """Try ``ctx.plan``'s attempts in order with ``call`` until one succeeds or none may follow."""
        assert ctx.plan is not None
        route = ctx.plan.route
        backends = self.backends
        last: ProxyError | None = None
        # Attempts given up (failed, or skipped with their circuit open) as (backend, reason): each
        # becomes one fallback once a later attempt is sent; with nowhere left to go, none is counted.
        abandoned: list[tuple[str, str]] = []
        for attempt in ctx.plan.attempts:
            upstream = backends.pick(attempt)
            if upstream is None:
                last = last or ServiceUnavailableError(
                    f"no healthy backend for route {route.name} (circuit open)", code="no_backend_available")
                skipped = "+".join(attempt.target.backends)
                ctx.path.append(f"{skipped}:{attempt.model} (circuit open)")
                abandoned.append((skipped, CIRCUIT_OPEN))
                continue
            for failed, reason in abandoned:
                ctx.fallbacks.append((failed, reason, upstream.name))
            abandoned.clear()
            retry_number = 0
            pulled = False  # at most one auto-pull per attempt
            while True:
                ctx.path.append(f"{upstream.name}:{attempt.model}")
                ctx.backend, ctx.model = upstream.name, attempt.model
                upstream.outstanding += 1
                try:
                    result = await (call(attempt, upstream) if self.tracer is None
                                    else self.tracer.attempt(ctx, attempt, upstream, retry_number, call))
                except ProxyError as exc:
                    backends.record(upstream.name, exc.outcome)
                    if exc.outcome is None or ctx.committed:
                        raise
                    last = _without_frames(exc)
                    ctx.outcome = exc.outcome.value
                    if exc.outcome is Outcome.MODEL_NOT_FOUND and upstream.kind == "ollama" and not pulled:
                        pulled = True  # ops.auto_pull: pull once (single flight), wait, then retry this attempt
                        pulling = await self.puller.auto_pull(upstream, attempt.model)
                        if pulling.ready:
                            continue
                        if pulling.note:
                            exc.message = f"{exc.message} ({pulling.note})"
                    elapsed = time.perf_counter() - ctx.started
                    delay = backoff_delay(retry_number, route.retry, jitter=self.rng.random(),
                                          retry_after=_retry_after(exc))
                    if may_retry(exc.outcome, retry_number, elapsed=elapsed, delay=delay, settings=route.retry):
                        await asyncio.sleep(delay)
                        if backends.refuses(upstream.name):  # the circuit opened: no retry, move on
                            abandoned.append((upstream.name, CIRCUIT_OPEN))
                            break
                        if self.on_retry is not None:  # counted once it is really sent
                            self.on_retry(route.name, upstream.name, exc.outcome.value)
                        retry_number += 1
                        continue
                    if not should_fall_back(exc.outcome, route.fallback_on):
                        raise
                    log.info("request %s: backend %s failed (%s), %s", ctx.request_id, upstream.name,
                             exc.outcome.value,
                             "falling back" if attempt is not ctx.plan.attempts[-1] else "no fallback left")
                    abandoned.append((upstream.name, exc.outcome.value))
                    break
                except asyncio.CancelledError:
                    ctx.outcome = Outcome.CLIENT_DISCONNECT.value
                    raise
                else:
                    backends.record(upstream.name, Outcome.OK)
                    ctx.outcome = Outcome.OK.value
                    return result
                finally:
                    upstream.outstanding -= 1
        assert last is not None
        last.final = True
        raise last
