"""The admin API and the dashboard; every path here needs the admin credential (see middleware).

    GET    /admin/models         installed and running models per backend (asked now, not cached)
    POST   /admin/models/pull    {backend, model}: pull on an Ollama backend, progress streamed as NDJSON
    DELETE /admin/models         {backend, model}: delete from an Ollama backend (also POST /admin/models/delete)
    POST   /admin/models/warm    {backend, model, keep_alive?}: load into memory now
    GET    /admin/stats          the metrics summary (requests, errors, latency, TTFT, tokens/s, ...),
                                 per-credential usage, Ollama's own figures, the last hour per minute
                                 (``series``) and the migration view per route (``migration``)
    GET    /dashboard/           the dashboard page; its files come from proxy/static (no build, no CDN)

``backend`` may be left out when the gateway has exactly one Ollama backend. Bodies that change
something must be sent as ``application/json``: a cross-site HTML form cannot send that, and a
browser may attach the cached Basic credentials to a forged request.

Every action that changes a backend (pull, delete, warm here; Ollama's native pull, push, create,
copy and delete in ``native_admin``) is one line on the ``proxy.audit`` logger, written by
``audited`` when the action ends: ``admin action=pull who=admin backend=a model=m outcome=ok
status=200``; the same fields are the record's ``audit`` attribute (a dict) for log handlers.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from proxy.backends import Backends
from proxy.config import Config
from proxy.background.health import check_backend
from proxy.background.warmup import load_model
from proxy.errors import InvalidRequestError, NotFoundError, ProxyError, UpstreamStreamError, error_body
from proxy.handlers.common import json_response, read_body
from proxy.jsonio import dumps
from proxy.keys import ACCOUNTING, BACKENDS, CATALOG, CTX, METRICS, PULLER
from proxy.telemetry.audit import audit
from proxy.upstream.backend import Upstream

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["admin_models", "pull_model", "delete_model", "warm_model", "admin_stats", "dashboard",
           "dashboard_asset", "audit", "audited"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATIC = Path(__file__).resolve().parent.parent / "static"
_ASSETS = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml",
           "charts.js": "text/javascript", "uPlot.iife.min.js": "text/javascript", "uPlot.min.css": "text/css",
           "uPlot.LICENSE": "text/plain"}
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
_LIST_TIMEOUT = 5.0
_CHANGE_TIMEOUT = 60.0


def _who(request: web.Request) -> str:
    """The admin credential's name: the middleware lets only the admin through to these paths."""
    ctx = request[CTX]
    if ctx.credential is not None:
        return ctx.credential
    return "admin" if ctx.config.auth.admin is not None else "anonymous"


def audited(action: str) -> Callable[[_Handler], _Handler]:
    """Log ``action`` on ``proxy.audit`` when the handler ends: who, backend and model (from the
    request context the handler filled), outcome and status, errors included."""
    def wrap(handler: _Handler) -> _Handler:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            ctx = request[CTX]
            try:
                response = await handler(request)
            except ProxyError as exc:
                audit(action, who=_who(request), backend=ctx.backend, model=ctx.client_model or None,
                      outcome=_text(exc.outcome) if getattr(exc, "outcome", None) else "error",
                      status=exc.status, error=exc.message)
                raise
            except asyncio.CancelledError:
                audit(action, who=_who(request), backend=ctx.backend, model=ctx.client_model or None,
                      outcome="client_disconnect")
                raise
            except Exception as exc:
                audit(action, who=_who(request), backend=ctx.backend, model=ctx.client_model or None,
                      outcome="error", status=500, error=type(exc).__name__)
                raise
            audit(action, who=_who(request), backend=ctx.backend, model=ctx.client_model or None,
                  outcome=ctx.outcome, status=response.status)
            return response
        return run
    return wrap


def _text(value: object) -> str:
    return str(getattr(value, "value", value))


def _text_field(body: dict[str, object], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"Invalid '{name}': expected a non-empty string.", param=name, code="invalid_type")
    return value.strip()


async def _target(request: web.Request) -> tuple[Upstream, str, dict[str, object]]:
    """The Ollama backend and model named by the JSON body."""
    if request.method == "POST" and request.content_type != "application/json":
        raise InvalidRequestError("Send the body as application/json.", code="unsupported_media_type", status=415)
    backends = request.app[BACKENDS]
    body = await read_body(request, request[CTX].config.server)
    model = _text_field(body, "model")
    if model is None:
        raise InvalidRequestError("Missing required parameter: 'model'.", param="model", code="missing_field")
    request[CTX].client_model = model  # for the audit line and the request log
    name = _text_field(body, "backend")
    ollamas = [u.name for u in backends.of_kind("ollama")]
    if name is None:
        if len(ollamas) != 1:
            raise InvalidRequestError(f"Missing required parameter: 'backend' (one of {', '.join(ollamas)}).",
                                      param="backend", code="missing_field")
        name = ollamas[0]
    upstream = backends.upstreams.get(name)
    if upstream is None:
        raise NotFoundError(f"Unknown backend '{name}'.", param="backend")
    if upstream.kind != "ollama":
        raise InvalidRequestError(f"Backend '{name}' is not an Ollama backend; its models are managed elsewhere.",
                                  param="backend")
    request[CTX].backend = upstream.name
    return upstream, model, body


async def _refresh(app: web.Application, upstream: Upstream) -> None:
    """After a change on ``upstream``: forget the cached model list and check the backend again."""
    app[CATALOG].invalidate()
    backends: Backends = app[BACKENDS]
    backends.set_health(upstream.name, await check_backend(upstream))


async def _models_of(upstream: Upstream) -> dict[str, object]:
    out: dict[str, object] = {"name": upstream.name, "type": upstream.kind, "installed": [], "running": [],
                              "error": None}
    try:
        if upstream.models_path is not None:
            answer = await upstream.get_json(upstream.models_path, timeout=_LIST_TIMEOUT)
            data = answer.get("data") if isinstance(answer, dict) else None
            out["installed"] = [{"model": m.get("id")} for m in data or [] if isinstance(m, dict)]
            return out
        tags, ps = await asyncio.gather(upstream.get_json("/api/tags", timeout=_LIST_TIMEOUT),
                                        upstream.get_json("/api/ps", timeout=_LIST_TIMEOUT))
    except ProxyError as exc:
        out["error"] = exc.message
        return out
    keys_tags = ("model", "size", "modified_at", "digest", "details")
    keys_ps = ("model", "size", "size_vram", "expires_at", "context_length")
    for key, answer, fields in (("installed", tags, keys_tags), ("running", ps, keys_ps)):
        models = answer.get("models") if isinstance(answer, dict) else None
        out[key] = [{f: m.get(f) if f != "model" else (m.get("model") or m.get("name")) for f in fields}
                    for m in models or [] if isinstance(m, dict)]
    return out


async def admin_models(request: web.Request) -> web.StreamResponse:
    upstreams = request.app[BACKENDS].upstreams.values()
    backends = await asyncio.gather(*(_models_of(u) for u in upstreams))
    return json_response({"backends": backends})


@audited("pull")
async def pull_model(request: web.Request) -> web.StreamResponse:
    """Pull (or join the pull already running) and stream its progress as NDJSON, one event a line."""
    upstream, model, _ = await _target(request)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache",
                                       "X-Request-ID": request[CTX].request_id})
    await resp.prepare(request)
    last: dict[str, object] = {}
    async for event in request.app[PULLER].watch(upstream, model, trigger="admin"):
        last = event
        await resp.write(dumps(event) + b"\n")
    if last.get("state") != "done":
        # the stream has started: the error is its last line, in OpenAI's error shape
        error = UpstreamStreamError(str(last.get("error") or f"pulling {model} failed"), backend=upstream.name)
        request[CTX].outcome = "stream_error"
        await resp.write(dumps(error_body(error)) + b"\n")
    await resp.write_eof()
    return resp


@audited("delete")
async def delete_model(request: web.Request) -> web.StreamResponse:
    upstream, model, _ = await _target(request)
    resp = await upstream.send("DELETE", "/api/delete", dumps({"model": model}), first_byte=_CHANGE_TIMEOUT,
                               model=model)
    await resp.read()
    await _refresh(request.app, upstream)
    return json_response({"deleted": True, "backend": upstream.name, "model": model})


@audited("warm")
async def warm_model(request: web.Request) -> web.StreamResponse:
    upstream, model, body = await _target(request)
    keep_alive = body.get("keep_alive", request[CTX].config.ops.warmup_keep_alive)
    if keep_alive is not None and (not isinstance(keep_alive, (str, int)) or isinstance(keep_alive, bool)):
        raise InvalidRequestError("Invalid 'keep_alive': expected a duration such as 30m, or seconds.",
                                  param="keep_alive", code="invalid_type")
    seconds = await load_model(upstream, model, keep_alive)
    await _refresh(request.app, upstream)
    return json_response({"loaded": True, "backend": upstream.name, "model": model, "seconds": round(seconds, 3)})


async def admin_stats(request: web.Request) -> web.StreamResponse:
    """The metrics summary, plus the last hour and the migration view (computed by the gateway itself)."""
    metrics = request.app.get(METRICS)
    series = request.app[ACCOUNTING].series
    snapshot = {**metrics.snapshot(), **_shadow_and_ollama(metrics.registry)} if metrics is not None else {
        "models": {}, "routes": {}, "backends": {}, "credentials": {}, "shadows": [], "ollama": []}
    return json_response({"enabled": metrics is not None, **snapshot, "series": series.snapshot(),
                          "migration": _migration(request[CTX].config, series.arms(), snapshot)})


def _migration(config: Config, arms: dict[str, dict[str, dict[str, object]]],
               snapshot: dict[str, object]) -> list[dict[str, object]]:
    """Per configured route: each arm's configured weight beside its actual share and figures, and
    the route's shadow results (a route with one target and no shadow has nothing to compare)."""
    shadows = snapshot.get("shadows") or []
    out: list[dict[str, object]] = []
    for route in config.policy.routes:
        seen = arms.get(route.name, {})
        route_shadows = [s for s in shadows if isinstance(s, dict) and s.get("route") == route.name]
        if len(route.targets) < 2 and route.shadow is None and not route_shadows:
            continue
        total_weight = sum(t.weight for t in route.targets)
        total = sum(int(a["requests"]) for a in seen.values())  # type: ignore[call-overload]
        rows = []
        for target in route.targets:
            figures = seen.get(target.label(), {})
            requests = figures.get("requests", 0)
            rows.append({"arm": target.label(), "backends": list(target.backends),
                         "weight": target.weight / total_weight if total_weight else 0.0,
                         "share": requests / total if total else None,  # type: ignore[operator]
                         **({"requests": 0, "errors": 0} | figures)})
        out.append({"route": route.name, "requests": total, "arms": rows,
                    "shadow": route.shadow.target.label() if route.shadow else None, "shadows": route_shadows})
    return out


def _shadow_and_ollama(registry: CollectorRegistry) -> dict[str, list[dict[str, Any]]]:
    """Shadow results per route and backend, and Ollama's own timings per backend and model, from the
    metrics (``Metrics.shadow`` and the Ollama series), summed over every worker."""
    shadows: defaultdict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"requests": 0.0, "outcomes": defaultdict(float), "duration_sum": 0.0, "duration_count": 0.0,
                 "prompt_tokens": 0.0, "completion_tokens": 0.0})
    ollama: defaultdict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in registry.collect():
        for sample in family.samples:
            name, lab, v = sample.name, sample.labels, sample.value
            if name.startswith("proxy_shadow_"):
                _shadow_sample(shadows[(lab["route"], lab["backend"])], name, lab, v)
            elif name.startswith("proxy_ollama_") and not name.endswith(("_bucket", "_created")):
                ollama[(lab["backend"], lab["model"])][name] += v
    return {"shadows": [_shadow_summary(route, backend, s) for (route, backend), s in sorted(shadows.items())],
            "ollama": [_ollama_summary(backend, model, o) for (backend, model), o in sorted(ollama.items())]}


def _shadow_sample(into: dict[str, Any], name: str, lab: Mapping[str, str], v: float) -> None:
    if name == "proxy_shadow_requests_total":
        into["requests"] += v
        into["outcomes"][lab["outcome"]] += v
    elif name == "proxy_shadow_duration_seconds_sum":
        into["duration_sum"] += v
    elif name == "proxy_shadow_duration_seconds_count":
        into["duration_count"] += v
    elif name == "proxy_shadow_tokens_total":
        into[lab["kind"] + "_tokens"] += v


def _shadow_summary(route: str, backend: str, s: Mapping[str, Any]) -> dict[str, Any]:
    count = s["duration_count"]
    return {"route": route, "backend": backend, "requests": s["requests"], "outcomes": dict(s["outcomes"]),
            "duration_mean_s": s["duration_sum"] / count if count else None,
            "prompt_tokens": s["prompt_tokens"], "completion_tokens": s["completion_tokens"]}


def _ollama_summary(backend: str, model: str, o: Mapping[str, float]) -> dict[str, Any]:
    def mean(base: str) -> float | None:
        count = o.get(base + "_count", 0.0)
        return o.get(base + "_sum", 0.0) / count if count else None

    return {"backend": backend, "model": model, "loads": o.get("proxy_ollama_load_duration_seconds_count", 0.0),
            "load_mean_s": mean("proxy_ollama_load_duration_seconds"),
            "cold_starts": o.get("proxy_ollama_cold_starts_total", 0.0),
            "prompt_eval_tokens_per_s_mean": mean("proxy_ollama_prompt_eval_tokens_per_second"),
            "eval_tokens_per_s_mean": mean("proxy_ollama_eval_tokens_per_second")}


async def dashboard(request: web.Request) -> web.StreamResponse:
    if not request.path.endswith("/"):
        raise web.HTTPFound("dashboard/")  # relative links and Location: works behind a path prefix
    return web.Response(body=(_STATIC / "dashboard.html").read_bytes(), content_type="text/html",
                        charset="utf-8", headers=_PAGE_HEADERS)


async def dashboard_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    content_type = _ASSETS.get(name)
    if content_type is None:
        raise NotFoundError(f"Unknown path: {request.method} {request.path}")
    return web.Response(body=(_STATIC / name).read_bytes(), content_type=content_type, headers=_PAGE_HEADERS)
