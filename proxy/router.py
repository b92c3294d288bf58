"""Carrying out a routing plan: attempts in order, retries, fallback, breaker bookkeeping.

The decisions are the pure ``policies`` engine's; this module only does what they say. A request's
state lives in a ``RequestContext`` that the handler creates, the relay updates (``committed``,
``ttft``) and the access log reads at the end. Fallback happens only before the first byte has gone
to the client: after that the relay ends the stream with an SSE error event and nothing is retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from policies.model import Attempt, Plan
from policies.outcome import Outcome, should_fall_back
from policies.retry import backoff_delay, may_retry
from proxy.errors import ProxyError, ServiceUnavailableError
from proxy.background.pull import auto_pull

if TYPE_CHECKING:
    from proxy.gateway import Gateway
    from proxy.upstream.backend import Upstream

__all__ = ["RequestContext", "run_plan"]

T = TypeVar("T")


@dataclass(slots=True)
class RequestContext:
    """Everything known about one request, for routing, headers, metrics and the access log."""

    request_id: str
    endpoint: str
    client_model: str = ""
    credential: str | None = None
    plan: Plan | None = None
    started: float = field(default_factory=time.perf_counter)
    stream: bool = False
    committed: bool = False  # the first byte went to the client: no more fallback
    in_flight: bool = False  # counted in the in-flight gauge (released by Gateway.finish)
    backend: str | None = None
    model: str | None = None  # the model name on the backend that served it
    path: list[str] = field(default_factory=list)  # "backend:model" per attempt made
    fallbacks: list[tuple[str, str, str]] = field(default_factory=list)  # (failed, outcome, to backend or "-")
    outcome: str = "ok"
    status: int = 200
    upstream_wait: float = 0.0  # seconds blocked on backends (total minus this = gateway overhead)
    ttft: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings: dict[str, object] | None = None  # Ollama's final-chunk durations (ns)
    prompt_text: str | None = None
    answer_text: str | None = None

    @property
    def route(self) -> str:
        return self.plan.route.name if self.plan else "-"


def _retry_after(exc: ProxyError) -> float | None:
    value = exc.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def run_plan(
    gw: Gateway,
    ctx: RequestContext,
    call: Callable[[Attempt, Upstream], Awaitable[T]],
) -> T:
    """Try ``ctx.plan``'s attempts in order with ``call`` until one succeeds or none may follow."""
    assert ctx.plan is not None
    route = ctx.plan.route
    last: ProxyError | None = None
    for attempt in ctx.plan.attempts:
        upstream = gw.pick_upstream(attempt)
        if upstream is None:
            last = last or ServiceUnavailableError(
                f"no healthy backend for route {route.name} (circuit open)", code="no_backend_available")
            continue
        if ctx.fallbacks and ctx.fallbacks[-1][2] == "-":
            failed, reason, _ = ctx.fallbacks[-1]
            ctx.fallbacks[-1] = (failed, reason, upstream.name)  # where the fallback went
        retry_number = 0
        pulled = False  # at most one auto-pull per attempt
        while True:
            ctx.path.append(f"{upstream.name}:{attempt.model}")
            ctx.backend, ctx.model = upstream.name, attempt.model
            upstream.outstanding += 1
            try:
                result = await call(attempt, upstream)
            except ProxyError as exc:
                gw.record_outcome(upstream.name, exc.outcome)
                if exc.outcome is None or ctx.committed:
                    raise
                last = exc
                ctx.outcome = exc.outcome.value
                if exc.outcome is Outcome.MODEL_NOT_FOUND and upstream.kind == "ollama" and not pulled:
                    pulled = True  # ops.auto_pull: pull once (single flight), wait, then retry this attempt
                    pulling = await auto_pull(gw, upstream, attempt.model)
                    if pulling.ready:
                        continue
                    if pulling.note:
                        exc.message = f"{exc.message} ({pulling.note})"
                elapsed = time.perf_counter() - ctx.started
                delay = backoff_delay(retry_number, route.retry, jitter=gw.rng.random(),
                                      retry_after=_retry_after(exc))
                if may_retry(exc.outcome, retry_number, elapsed=elapsed, delay=delay, settings=route.retry):
                    gw.on_retry(ctx, upstream.name, exc.outcome)
                    retry_number += 1
                    await asyncio.sleep(delay)
                    if gw.breaker_refuses(upstream.name):
                        break
                    continue
                if not should_fall_back(exc.outcome, route):
                    raise
                gw.on_fallback(ctx, upstream.name, exc.outcome)
                break
            except asyncio.CancelledError:
                ctx.outcome = Outcome.CLIENT_DISCONNECT.value
                raise
            else:
                gw.record_outcome(upstream.name, Outcome.OK)
                ctx.outcome = Outcome.OK.value
                return result
            finally:
                upstream.outstanding -= 1
    assert last is not None
    last.final = True
    raise last

