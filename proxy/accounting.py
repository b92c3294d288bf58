"""Finishing a request: its metrics, its request-log line, and the bounded model label both use.

``Accounting.finish(ctx)`` is called once per request by the middleware, whatever the request's
fate. Labels are bounded: a model label is a configured route name, alias or target model, or a
model some backend has installed, otherwise ``other`` (client input never becomes a label by
itself). ``name`` and ``name:latest`` are one model: either spelling, configured or installed,
lets the name be a label as the client wrote it. Ollama's own timings are labelled with the model
the backend served (``ctx.model``), not the client's alias.

Every routed request also lands in ``series`` (the last hour per minute, for the dashboard's
charts and migration view, kept even when metrics are off), and a request made with a client
credential counts towards that credential's usage (its configured name is the label).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from policies.names import model_spellings
from policies.plan import is_glob
from proxy.backends import Backends
from proxy.config import Config
from proxy.context import RequestContext
from proxy.telemetry.series import Series

if TYPE_CHECKING:
    from proxy.telemetry.logs import RequestLog
    from proxy.telemetry.metrics import Metrics

__all__ = ["Accounting"]

_QUIET_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})
# Ollama's native model calls: counted like /v1/* when refused before routing
_NATIVE_MODEL_PATHS = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"})


class Accounting:
    """Metrics and the request log for finished requests; either may be absent (switched off)."""

    def __init__(self, config: Config, backends: Backends, metrics: Metrics | None, *,
                 series: Series | None = None) -> None:
        self.backends = backends
        self.metrics = metrics
        self.series = series if series is not None else Series()
        self.request_log: RequestLog | None = None  # opened by the app's lifecycle when configured
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Adopt a (re)loaded config: the exact model names that may be labels, cloud prices."""
        self.prices = config.metrics.cloud_prices
        names = {name for route in config.policy.routes for name in route.models if not is_glob(name)}
        for route in config.policy.routes:
            targets = (*route.targets, *route.fallback, *((route.shadow.target,) if route.shadow else ()))
            names.update(t.model for t in targets if t.model is not None)
        if self.metrics is not None:  # a split's arms read 0%, not "no data", until they are picked
            self.metrics.split_arms([(route.name, target.label()) for route in config.policy.routes
                                     if len(route.targets) > 1 for target in route.targets])
        self.exact_models = frozenset(spelling for name in names for spelling in model_spellings(name))

    def started(self, ctx: RequestContext) -> None:
        """The request was planned onto a route: count it in flight until ``finish``."""
        if self.metrics is not None and ctx.plan is not None:
            self.metrics.request_started(ctx.plan.route.name)
            ctx.in_flight = True

    def model_label(self, model: str) -> str:
        """A bounded metric label: a configured or installed model name, never raw client input."""
        if model in self.exact_models or self.backends.installed(model):
            return model
        return "other"  # also the empty name

    def finish(self, ctx: RequestContext) -> None:
        """Record one finished request in metrics and the request log."""
        duration = time.perf_counter() - ctx.started
        metrics = self.metrics
        if ctx.in_flight and metrics is not None:
            ctx.in_flight = False
            metrics.request_finished(ctx.route)
        if ctx.endpoint in _QUIET_PATHS:
            return  # probes and scrapes would drown the request log
        if ctx.plan is None and (ctx.endpoint.startswith("/v1/") or ctx.endpoint in _NATIVE_MODEL_PATHS):
            # rejected before routing: bad request, auth, rate limit, unknown model
            self.series.refused(outcome=ctx.outcome, status=ctx.status)
            if metrics is not None:
                metrics.observe_request("-", "-", "-", ctx.outcome, ctx.status, duration=duration,
                                        upstream_wait=0.0)
        if metrics is not None and ctx.credential is not None:
            metrics.credential_usage(ctx.credential, ctx.prompt_tokens, ctx.completion_tokens)
        if ctx.plan is not None:
            backend = ctx.backend or "-"
            upstream = self.backends.upstreams.get(backend)
            price = None
            if upstream is not None and upstream.kind == "ollama":
                price = self.prices.get(ctx.client_model) or self.prices.get(ctx.route)
            arm = ctx.plan.attempts[0].target.label()
            cost = (ctx.prompt_tokens * price[0] + ctx.completion_tokens * price[1]) / 1e6 if price else 0.0
            self.series.record(route=ctx.route, arm=arm, backend=backend, outcome=ctx.outcome, status=ctx.status,
                               duration=duration, ttft=ctx.ttft, prompt_tokens=ctx.prompt_tokens,
                               completion_tokens=ctx.completion_tokens, fallbacks=len(ctx.fallbacks),
                               cost_usd=cost)
        if metrics is not None and ctx.plan is not None:
            timings = ctx.timings if ctx.timings and "load_duration" in ctx.timings else None
            model = self.model_label(ctx.client_model)
            served = model if ctx.model is None or ctx.model == ctx.client_model else self.model_label(ctx.model)
            metrics.observe_request(
                ctx.route, model, backend, ctx.outcome, ctx.status, duration=duration,
                upstream_wait=ctx.upstream_wait, ttft=ctx.ttft, prompt_tokens=ctx.prompt_tokens,
                completion_tokens=ctx.completion_tokens, ollama_timings=timings,  # type: ignore[arg-type]
                ollama_model=served, cloud_price=price)
            metrics.split_arm(ctx.route, arm)
            for failed, reason, to in ctx.fallbacks:  # only fallbacks that reached another backend
                metrics.fallback(ctx.route, failed, to, reason)
        if self.request_log is not None:
            self.request_log.write(_log_record(ctx, duration))


def _hundredths(value: float) -> float:
    """``round(value, 2)`` for the log's non-negative figures, at less than half its cost (round to
    a whole number is the fast path)."""
    return round(value * 100) / 100


def _log_record(ctx: RequestContext, duration: float) -> dict[str, object]:
    t = ctx.timings or {}
    record: dict[str, object] = {
        "request_id": ctx.request_id, "credential": ctx.credential, "path": ctx.endpoint,
        "route": ctx.route if ctx.plan else None, "model": ctx.client_model or None,
        "backend": ctx.backend, "backend_model": ctx.model, "status": ctx.status, "outcome": ctx.outcome,
        "stream": ctx.stream, "fallback_path": ctx.path, "total_ms": _hundredths(duration * 1000),
        "upstream_ms": _hundredths(ctx.upstream_wait * 1000),
        "ttft_ms": _hundredths(ctx.ttft * 1000) if ctx.ttft is not None else None,
        "prompt_tokens": ctx.prompt_tokens, "completion_tokens": ctx.completion_tokens,
    }
    if t:
        for key, name in _OLLAMA_MS:
            value = t.get(key)
            if isinstance(value, (int, float)):
                record[name] = _hundredths(value / 1e6)
        eval_ns = t.get("eval_duration")
        if isinstance(eval_ns, (int, float)) and eval_ns > 0 and ctx.completion_tokens:
            record["tokens_per_s"] = round(ctx.completion_tokens / (eval_ns / 1e9) * 10) / 10
    if ctx.ignored_tools:
        record["ignored_tools"] = list(ctx.ignored_tools)
    if ctx.prompt_text is not None:
        record["prompt"] = ctx.prompt_text
        record["answer"] = ctx.answer_text
    return record


_OLLAMA_MS = (("load_duration", "load_ms"), ("prompt_eval_duration", "prompt_eval_ms"), ("eval_duration", "eval_ms"))
