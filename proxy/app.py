"""The aiohttp application: routes table, the middleware, and the lifecycles of its resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.config import Config
from proxy.telemetry.logs import RequestLog
from proxy.cors import install_cors
from proxy.gateway import Gateway
from proxy.handlers.embeddings import embeddings
from proxy.handlers.generate import chat_completions, completions
from proxy.handlers.admin import (
    admin_models,
    admin_stats,
    dashboard,
    dashboard_asset,
    delete_model,
    pull_model,
    warm_model,
)
from proxy.handlers.health import healthz
from proxy.handlers.models import list_models, retrieve_model
from proxy.handlers.status import readyz, status
from proxy.background.health import health_loop
from proxy.imagefetch import ImageFetcher, Resolver
from proxy.keys import GATEWAY
from proxy.middleware import gateway_middleware
from proxy.upstream.backend import close_upstreams, open_upstreams
from proxy.background.warmup import start_warmup

__all__ = ["create_app"]

log = logging.getLogger("proxy.app")


async def metrics_endpoint(request: web.Request) -> web.StreamResponse:
    metrics = request.app[GATEWAY].metrics
    if metrics is None:
        raise web.HTTPNotFound()
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def create_app(config: Config, *, rng: random.Random | None = None, health_checks: bool = True,
               multiprocess_dir: str | None = None, image_resolver: Resolver | None = None) -> web.Application:
    """Build the app for ``config``; backends' sessions open on startup and close on cleanup.

    ``image_resolver`` replaces DNS for image fetching (tests map names to addresses with it).
    """
    app = web.Application(middlewares=[gateway_middleware], client_max_size=config.server.max_body_bytes,
                          handler_args={"max_field_size": 16384, "max_line_size": 16384})
    gw = Gateway(config, {}, rng=rng)
    app[GATEWAY] = gw
    gw.image_fetcher = ImageFetcher(config.image_fetch, resolver=image_resolver)
    if config.server.cors_origins:  # off: no middleware, no per-response hook on the hot path
        install_cors(app, lambda: gw.config.server.cors_origins)
    if config.metrics.enabled:
        from proxy.telemetry.metrics import Metrics

        gw.metrics = Metrics(multiprocess_dir=multiprocess_dir)

    async def request_log(app: web.Application) -> AsyncIterator[None]:
        """The access log: buffered, flushes coalesced under load (see RequestLog), flushed at the end."""
        if not config.logging.requests:
            yield
            return
        # a large buffer: lines leave in one write per coalesced flush, not one per 8 KiB
        log_file = open(config.logging.file, "ab", buffering=1 << 20) if config.logging.file else None  # noqa: SIM115
        # stdout's bytes layer when it has one: no decode here and encode again in TextIOWrapper
        stdout = getattr(sys.stdout, "buffer", sys.stdout)
        gw.request_log = log = RequestLog(log_file or stdout, fmt=config.logging.format,  # type: ignore[arg-type]
                                          include_prompts=config.logging.include_prompts,
                                          loop=asyncio.get_running_loop())
        yield
        log.flush()
        if log_file is not None:
            log_file.close()

    async def flush_metrics_every_second() -> None:
        """With --workers, a scrape reads every worker's files: keep this worker's tally flushed."""
        while True:
            await asyncio.sleep(1.0)
            gw.metrics.flush()  # type: ignore[union-attr]

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        gw.adopt_upstreams(open_upstreams(config.backends))
        task = asyncio.create_task(health_loop(gw)) if health_checks else None
        flusher = (asyncio.create_task(flush_metrics_every_second())
                   if gw.metrics is not None and multiprocess_dir is not None else None)
        warmup = start_warmup(gw)  # in the background: the gateway serves meanwhile, /readyz waits
        yield
        if warmup is not None:
            warmup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warmup
        await gw.pulls.cancel_all()
        for pending in (task, flusher):
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
        background = list(gw.background)  # shadows, delayed session closes: end them before the sessions
        for pending in background:
            pending.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await close_upstreams(gw.upstreams)
        await gw.image_fetcher.close()
        gw.auth_executor.shutdown(wait=False, cancel_futures=True)
        if gw.metrics is not None:
            gw.metrics.flush()  # a worker's last requests reach the shared files

    app.cleanup_ctx.append(request_log)  # first in, last out: it outlives the requests it records
    app.cleanup_ctx.append(lifecycle)
    r = app.router
    r.add_post("/v1/chat/completions", chat_completions)
    r.add_post("/v1/completions", completions)
    r.add_post("/v1/embeddings", embeddings)
    r.add_get("/v1/models", list_models)
    r.add_get("/v1/models/{model:.+}", retrieve_model)
    r.add_get("/healthz", healthz)
    r.add_get("/livez", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics_endpoint)
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
    return app

