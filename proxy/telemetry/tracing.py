"""OpenTelemetry traces, opt-in: one server span per request, one client span per backend attempt.

Built only when ``tracing.enabled`` (``Tracer.from_config``), the only importer of OpenTelemetry;
with tracing off the middleware and the router hold ``None`` and nothing here runs. A client's W3C
``traceparent`` makes the request span its child; each attempt span's context goes to the backend
as ``traceparent`` (``proxy.upstream.backend.TRACEPARENT``), so Ollama's or a cloud's
own spans join the trace. Attributes follow the OpenTelemetry GenAI semantic conventions
(``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens``/``output_tokens``, ``gen_ai.provider.name``) beside the HTTP ones;
the gateway's own figures are under ``gateway.*`` (route, backend, outcome, retry number).

Spans leave in batches (BatchSpanProcessor, every ``export_interval`` seconds) over OTLP/HTTP;
``shutdown`` exports what is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from policies.model import Attempt
from proxy.context import RequestContext
from proxy.telemetry.trace_config import TracingConfig
from proxy.upstream.backend import TRACEPARENT, Upstream

__all__ = ["Tracer", "operation_name"]

_T = TypeVar("_T")
# the GenAI operation each model door performs (gen_ai.operation.name's well-known values); the
# backend types ("ollama", "openai", "anthropic") are already gen_ai.provider.name values
_OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "chat",
    "/v1/messages": "chat",
    "/api/chat": "chat",
    "/api/generate": "text_completion",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
}


def operation_name(path: str) -> str | None:
    """``gen_ai.operation.name`` for a request path; None for the paths that call no model."""
    return _OPERATIONS.get(path)


class Tracer:
    """Starts and ends the gateway's spans; ``shutdown`` flushes the last batch."""

    def __init__(self, provider: Any, tracer: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider, self._tracer = provider, tracer
        self._context, self._trace = context, trace
        self._server, self._client = SpanKind.SERVER, SpanKind.CLIENT
        self._status, self._error = Status, StatusCode.ERROR
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_config(cls, cfg: TracingConfig, *, version: str = "") -> Tracer:
        """A tracer exporting to ``cfg.endpoint`` over OTLP/HTTP (protobuf)."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        attributes = {"service.name": cfg.service_name}
        if version:
            attributes["service.version"] = version
        provider = TracerProvider(resource=Resource.create(attributes),
                                  sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)))
        exporter = OTLPSpanExporter(endpoint=cfg.endpoint, headers=dict(cfg.headers), timeout=cfg.timeout)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=cfg.export_interval * 1000))
        return cls(provider, provider.get_tracer("ollama-gateway", version or None))

    def start_request(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[Any, object]:
        """The request's server span, child of the client's ``traceparent`` if valid, made current."""
        parent = self._propagator.extract(headers)
        span = self._tracer.start_span(f"{method} {path}", context=parent, kind=self._server,
                                       attributes={"http.request.method": method, "url.path": path})
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        return span, token

    def end_request(self, span: Any, token: object, ctx: RequestContext | None, *, method: str,
                    route: str | None) -> None:
        """Name the span for what was done, set the request's figures and end it."""
        self._context.detach(token)  # type: ignore[arg-type]
        if route is not None:
            span.set_attribute("http.route", route)
        if ctx is None:  # refused before the gateway saw it (no context was made)
            span.end()
            return
        operation = operation_name(ctx.endpoint)
        span.update_name(f"{operation} {ctx.client_model}" if operation and ctx.client_model
                         else f"{method} {route or ''}".rstrip())
        attributes: dict[str, Any] = {"http.response.status_code": ctx.status, "gateway.outcome": ctx.outcome,
                                      "gateway.request_id": ctx.request_id}
        if ctx.plan is not None:
            attributes["gateway.route"] = ctx.route
        if operation is not None:
            attributes["gen_ai.operation.name"] = operation
            if ctx.client_model:
                attributes["gen_ai.request.model"] = ctx.client_model
            if ctx.model:
                attributes["gen_ai.response.model"] = ctx.model
            if ctx.backend:
                attributes["gateway.backend"] = ctx.backend
                kind = _kind(ctx)
                if kind:
                    attributes["gen_ai.provider.name"] = kind
            attributes["gen_ai.usage.input_tokens"] = ctx.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = ctx.completion_tokens
        if ctx.fallbacks:
            attributes["gateway.fallbacks"] = len(ctx.fallbacks)
        span.set_attributes(attributes)
        if ctx.status >= 500:
            span.set_status(self._status(self._error, ctx.outcome))
            span.set_attribute("error.type", ctx.outcome)
        span.end()

    async def attempt(self, ctx: RequestContext, attempt: Attempt, upstream: Upstream, retry_number: int,
                      call: Callable[[Attempt, Upstream], Awaitable[_T]]) -> _T:
        """Run ``call`` for one backend attempt inside its client span; its context goes out as ``traceparent``."""
        operation = operation_name(ctx.endpoint) or "request"
        span = self._tracer.start_span(
            f"{operation} {attempt.model}", kind=self._client,
            attributes={"gen_ai.operation.name": operation, "gen_ai.request.model": attempt.model,
                        "gen_ai.provider.name": upstream.kind, "gateway.backend": upstream.name,
                        "gateway.retry": retry_number})
        sc = span.get_span_context()
        token = TRACEPARENT.set(b"traceparent: 00-%032x-%016x-%02x\r\n" % (sc.trace_id, sc.span_id, sc.trace_flags)
                                if sc.is_valid else None)
        outcome = "ok"
        try:
            return await call(attempt, upstream)
        except BaseException as exc:
            found = getattr(exc, "outcome", None)
            outcome = found.value if found is not None else (
                "client_disconnect" if isinstance(exc, asyncio.CancelledError) else "error")
            span.set_status(self._status(self._error, outcome))
            span.set_attribute("error.type", outcome)
            raise
        finally:
            TRACEPARENT.reset(token)
            span.set_attribute("gateway.outcome", outcome)
            if ctx.model:
                span.set_attribute("gen_ai.response.model", ctx.model)
            span.end()

    def shutdown(self) -> None:
        """Export the spans still queued and stop the exporter (blocking: run it off the loop)."""
        self._provider.shutdown()


def _kind(ctx: RequestContext) -> str | None:
    for backend in ctx.config.backends:
        if backend.name == ctx.backend:
            return backend.kind
    return None

