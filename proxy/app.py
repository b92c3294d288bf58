"""The aiohttp application: the owners of each concern, the routes table, the middleware, and the
lifecycles of what they hold (``cleanup_ctx``).

Owners, each under its own key (``proxy.keys``) and each given only the collaborators it uses:
``Backends`` (clients, breakers, health, choice), ``Admission`` (credentials and limits),
``Accounting`` (metrics and the request log), ``Router`` (attempts, retries, fallback), ``Puller``
(model pulls), ``Warmup``, ``Shadows``, ``Catalog`` (``/v1/models``), ``ImageFetcher`` and ``Tasks``
(background work). ``LiveConfig`` holds the config in force; hot reload hands the new one to each owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from proxy.accounting import Accounting
from proxy.admission import Admission
from proxy.backends import Backends
from proxy.background.health import health_loop
from proxy.background.pull import Puller
from proxy.background.shadow import Shadows
from proxy.background.tasks import Tasks
from proxy.background.warmup import Warmup
from proxy.catalog import Catalog
from proxy.config import Config, LiveConfig
from proxy.cors import install_cors
from proxy.handlers.admin import (
    admin_models,
    admin_stats,
    dashboard,
    dashboard_asset,
    delete_model,
    pull_model,
    warm_model,
)
from proxy.handlers.embeddings import embeddings
from proxy.handlers import messages, native, responses
from proxy.handlers.responses_stored import RESPONSES
from proxy.handlers.generate import chat_completions, completions
from proxy.handlers.health import healthz, readyz
from proxy.handlers.models import list_models, retrieve_model
from proxy.handlers.status import status
from proxy.imagefetch import ImageFetcher, Resolver
from proxy.keys import (
    ACCOUNTING,
    ADMISSION,
    BACKENDS,
    CATALOG,
    CONFIG,
    IMAGES,
    METRICS,
    PULLER,
    ROUTER,
    SHADOWS,
    STATE,
    TASKS,
    WARMUP,
)
from proxy.middleware import gateway_middleware, traced_gateway_middleware
from proxy.router import Router
from proxy.state.limits import SharedLimits
from proxy.state.pulls import SharedPulls
from proxy.state.responses import RedisResponseStore
from proxy.state.store import SharedState
from proxy.telemetry.logs import RequestLog
from proxy.telemetry.tracing import Tracer
from proxy.upstream.backend import close_upstreams, open_upstreams

if TYPE_CHECKING:
    from proxy.telemetry.metrics import Metrics

__all__ = ["create_app"]

log = logging.getLogger("proxy.app")


async def _metrics_endpoint(request: web.Request) -> web.StreamResponse:
    metrics = request.app.get(METRICS)
    if metrics is None:
        raise web.HTTPNotFound()
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def create_app(config: Config, *, rng: random.Random | None = None, health_checks: bool = True,
               multiprocess_dir: str | None = None, image_resolver: Resolver | None = None) -> web.Application:
    """Build the app for ``config``; backends' connections open on first use and close on cleanup.

    ``image_resolver`` replaces DNS for image fetching (tests map names to addresses with it).
    """
    # OpenTelemetry is imported (and its export thread started) only when tracing is enabled
    tracer = Tracer.from_config(config.tracing) if config.tracing.enabled else None
    app = web.Application(middlewares=[gateway_middleware if tracer is None else traced_gateway_middleware(tracer)],
                          client_max_size=config.server.max_body_bytes)
    live = app[CONFIG] = LiveConfig(config)
    metrics = None
    if config.metrics.enabled:  # imported here: with --workers, after PROMETHEUS_MULTIPROC_DIR is set
        from proxy.telemetry.metrics import Metrics

        metrics = Metrics(multiprocess_dir=multiprocess_dir)
    if metrics is not None:
        app[METRICS] = metrics
    state = None
    if config.state is not None:  # Redis, shared by every process using it
        app[STATE] = state = SharedState(config.state, on_change=metrics.state_up if metrics else None)
        app[RESPONSES] = RedisResponseStore(state)  # else the Responses door keeps them in memory
        if metrics is not None:
            metrics.state_up(True)
    backends = app[BACKENDS] = Backends(config.policy.breaker, on_circuit=metrics.circuit if metrics else None)
    tasks = app[TASKS] = Tasks()
    catalog = app[CATALOG] = Catalog(backends)
    puller = app[PULLER] = Puller(backends, tasks, lambda: live.current.ops.auto_pull,
                                  on_pulled=catalog.invalidate, on_auto_pull=metrics.auto_pull if metrics else None,
                                  shared=SharedPulls(state) if state is not None else None)
    app[ROUTER] = Router(backends, puller, rng or random.Random(), on_retry=metrics.retry if metrics else None,
                         tracer=tracer)
    shared = SharedLimits(state) if state is not None else None
    app[ADMISSION] = admission = Admission(config.auth, on_auth_failure=metrics.auth_failure if metrics else None,
                                           on_rate_limited=metrics.rate_limited if metrics else None,
                                           shared=shared, refuse_when_unavailable=config.state is not None
                                           and config.state.on_unavailable == "refuse")
    accounting = app[ACCOUNTING] = Accounting(config, backends, metrics)
    warmup = app[WARMUP] = Warmup(backends, puller, tasks)
    app[SHADOWS] = Shadows(backends, tasks, on_result=_shadow_metrics(metrics) if metrics else None)
    images = app[IMAGES] = ImageFetcher(config.image_fetch, resolver=image_resolver)
    if config.server.cors_origins:  # off: no middleware, no per-response hook on the hot path
        install_cors(app, lambda: live.current.server.cors_origins)

    async def flush_metrics_every_second() -> None:
        """With --workers, a scrape reads every worker's files: keep this worker's tally flushed."""
        while True:
            await asyncio.sleep(1.0)
            metrics.flush()  # type: ignore[union-attr]

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        backends.adopt(open_upstreams(config.backends))
        on_up = metrics.backend_up if metrics else None
        checks = asyncio.create_task(health_loop(backends, on_up=on_up)) if health_checks else None
        flusher = (asyncio.create_task(flush_metrics_every_second())
                   if metrics is not None and multiprocess_dir is not None else None)
        warmup.start(config.ops)  # in the background: the gateway serves meanwhile, /readyz waits
        yield
        for pending in (checks, flusher):
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
        await tasks.cancel_all()  # warm-up, pulls, shadows, delayed closes: before the connections close
        await close_upstreams(backends.upstreams)
        await images.close()
        admission.close()
        await admission.aclose()  # the shared state's client, when configured
        if metrics is not None:
            metrics.flush()  # a worker's last requests reach the shared files

    if tracer is not None:
        async def traces(app: web.Application) -> AsyncIterator[None]:
            """At shutdown, the spans still queued are exported (off the loop: the exporter blocks)."""
            yield
            await asyncio.get_running_loop().run_in_executor(None, tracer.shutdown)

        app.cleanup_ctx.append(traces)  # first in, last out: after the last request's spans
    app.cleanup_ctx.append(_request_log(config, accounting))  # first in, last out: it outlives the requests it records
    app.cleanup_ctx.append(lifecycle)
    _add_routes(app)
    return app


def _request_log(config: Config, accounting: Accounting) -> Callable[[web.Application], AsyncIterator[None]]:
    """The request log's lifecycle: buffered, flushes coalesced under load (see RequestLog), flushed at the end."""

    async def request_log(app: web.Application) -> AsyncIterator[None]:
        if not config.logging.requests:
            yield
            return
        # a large buffer: lines leave in one write per coalesced flush, not one per 8 KiB
        log_file = open(config.logging.file, "ab", buffering=1 << 20) if config.logging.file else None  # noqa: SIM115
        # stdout's bytes layer when it has one: no decode here and encode again in TextIOWrapper
        stdout = getattr(sys.stdout, "buffer", sys.stdout)
        accounting.request_log = log = RequestLog(log_file or stdout, fmt=config.logging.format,  # type: ignore[arg-type]
                                                  include_prompts=config.logging.include_prompts,
                                                  loop=asyncio.get_running_loop())
        yield
        log.flush()
        if log_file is not None:
            log_file.close()

    return request_log


def _add_routes(app: web.Application) -> None:
    """Every path the gateway serves: the OpenAI door, probes, metrics, admin and dashboard, the other doors."""
    r = app.router
    r.add_post("/v1/chat/completions", chat_completions)
    r.add_post("/v1/completions", completions)
    r.add_post("/v1/embeddings", embeddings)
    r.add_get("/v1/models", list_models)
    r.add_get("/v1/models/{model:.+}", retrieve_model)
    r.add_get("/healthz", healthz)
    r.add_get("/livez", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", _metrics_endpoint)
    r.add_get("/status", status)
    r.add_get("/admin/models", admin_models)
    r.add_delete("/admin/models", delete_model)
    r.add_post("/admin/models/pull", pull_model)
    r.add_post("/admin/models/delete", delete_model)
    r.add_post("/admin/models/warm", warm_model)
    r.add_get("/admin/stats", admin_stats)
    r.add_get("/dashboard", dashboard)
    r.add_get("/dashboard/", dashboard)
    r.add_get("/dashboard/{name}", dashboard_asset)
    responses.add_routes(app)  # the OpenAI Responses API
    messages.add_routes(r)  # Anthropic's Messages API
    native.add_routes(r)  # Ollama's own API


def _shadow_metrics(metrics: Metrics):  # type: ignore[no-untyped-def]
    def record(route: str, backend: str, outcome: str, seconds: float, prompt: int, completion: int) -> None:
        metrics.shadow(route, backend, outcome, duration=seconds, prompt_tokens=prompt, completion_tokens=completion)
    return record
