"""The running gateway's state: config, backends, breakers, health, metrics and logs.

One ``Gateway`` per app, stored under ``keys.GATEWAY``. Hot reload replaces ``config`` and
``upstreams`` as a whole (in-flight requests keep the objects they already hold). Breaker and health
state are plain values updated by the pure ``policies`` functions.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from policies.balance import choose_backend
from policies.breaker import CLOSED, BreakerState, allow, record
from policies.model import Attempt
from policies.outcome import Outcome, counts_as_failure
from policies.plan import is_glob
from proxy.auth import Authenticator, Credential, model_allowed, www_authenticate
from proxy.config import Config
from proxy.errors import RateLimitedError
from proxy.ids import new_id
from proxy.imagefetch import ImageFetcher
from proxy.background.pull import PullBoard
from proxy.ratelimit import CallerLimits, Limits
from proxy.router import RequestContext
from proxy.upstream.backend import Upstream

if TYPE_CHECKING:
    from proxy.telemetry.logs import RequestLog
    from proxy.telemetry.metrics import Metrics

__all__ = ["Gateway", "BackendHealth", "new_request_id"]

log = logging.getLogger("proxy.gateway")
_QUIET_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})


def new_request_id() -> str:
    return new_id("req_")


@dataclass(slots=True)
class BackendHealth:
    """What the last health check of one backend found (cheap endpoints only)."""

    up: bool | None = None  # None: not checked yet
    latency: float | None = None
    version: str | None = None
    error: str | None = None
    checked_at: float | None = None
    installed: tuple[str, ...] = ()
    running: tuple[dict[str, object], ...] = ()
    loaded: frozenset[str] = field(default_factory=frozenset)


class Gateway:
    """Runtime state shared by all handlers of one app."""

    def __init__(self, config: Config, upstreams: Mapping[str, Upstream], *,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.upstreams: dict[str, Upstream] = dict(upstreams)
        self.rng = rng or random.Random()
        self.clock = clock
        self.breakers: dict[str, BreakerState] = {name: CLOSED for name in upstreams}
        self.health: dict[str, BackendHealth] = {name: BackendHealth() for name in upstreams}
        self.metrics: Metrics | None = None
        self.request_log: RequestLog | None = None
        self.catalog: tuple[float, list[dict[str, object]]] | None = None  # (fetched at, models)
        self.background: set[asyncio.Task[None]] = set()  # shadow requests, pulls, delayed closes
        self.pulls = PullBoard()  # proxy.background.pull: model pulls in flight and their progress
        self.warmup: dict[tuple[str, str], str] = {}  # (backend, model) -> proxy.background.warmup state
        self.image_fetcher: ImageFetcher | None = None  # set by create_app, closed on cleanup
        # scrypt (hashed keys) runs here: a flood of wrong keys cannot block the event loop, nor
        # starve the default executor that getaddrinfo uses; threads start on first use
        self.auth_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="auth-scrypt")
        self.set_config(config)

    def set_config(self, config: Config) -> None:
        """Adopt a (re)loaded config: auth is rebuilt from it; rate-limit state carries over."""
        self.config = config
        self.authenticator = Authenticator(config.auth)
        if self.image_fetcher is not None:
            self.image_fetcher.config = config.image_fetch
        self.www_authenticate = www_authenticate(config.auth.realm)
        if not hasattr(self, "limits"):
            self.limits = Limits()  # kept across reloads: callers keep their budgets
        self.catalog = None
        self._exact_models = frozenset(
            name for route in config.policy.routes for name in route.models if not is_glob(name))

    def adopt_upstreams(self, upstreams: Mapping[str, Upstream]) -> None:
        """Serve with these backends; breaker and health state carry over for names kept."""
        self.upstreams = dict(upstreams)
        self.breakers = {name: self.breakers.get(name, CLOSED) for name in upstreams}
        self.health = {name: self.health.get(name) or BackendHealth() for name in upstreams}

    async def authenticate(self, authorization: str | None, x_api_key: str | None,
                           *, admin: bool = False) -> Credential | None:
        """The caller's credential (or, with ``admin``, a marker credential when the admin one matches).

        Plaintext secrets and hashed ones verified before (a cache) are checked inline: sha256 +
        compare_digest, microseconds. Only a miss with hashed secrets configured goes to
        ``auth_executor`` for scrypt, so the event loop never waits on scrypt.
        """
        auth = self.authenticator
        found = _check(auth, admin, authorization, x_api_key, scrypt=False)
        if found is None and auth.uses_hashes:
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(self.auth_executor, _check, auth, admin, authorization, x_api_key)
        return found

    def model_allowed(self, credential: Credential, model: str) -> bool:
        return model_allowed(credential, model)

    # -- admission and accounting --------------------------------------------------------------
    def auth_failed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.auth_failure(reason)

    def admit(self, credential: Credential | None) -> CallerLimits | None:
        """Apply the caller's concurrency, requests/minute and tokens/minute limits (429 when over).

        Returns the limits to hand back to ``release`` when the request ends (None: nothing to release).
        """
        if credential is None or (credential.max_concurrent is None and credential.requests_per_minute is None
                                  and credential.tokens_per_minute is None):
            return None
        limits = self.limits.for_credential(credential)
        refusal = limits.admit(self.clock())
        if refusal is None:
            return limits
        if self.metrics is not None:
            self.metrics.rate_limited(credential.name)
        wait = refusal.retry_after
        headers = {"Retry-After": str(max(1, math.ceil(wait)) if wait is not None else 1)}
        what = {"concurrency": "concurrent requests", "requests": "requests per minute",
                "tokens": "tokens per minute"}[refusal.reason]
        raise RateLimitedError(f"Rate limit reached for {credential.name}: too many {what}.", headers=headers)

    def release(self, limits: CallerLimits, ctx: RequestContext) -> None:
        limits.leave()
        limits.spend_tokens(ctx.prompt_tokens + ctx.completion_tokens, self.clock())

    def model_label(self, ctx: RequestContext) -> str:
        """A bounded metric label: a configured or installed model name, never raw client input."""
        model = ctx.client_model
        if model in self._exact_models:
            return model
        for health in self.health.values():
            if model in health.installed:
                return model
        return "other"

    def finish(self, ctx: RequestContext) -> None:
        """Record one finished request in metrics and the access log."""
        duration = time.perf_counter() - ctx.started
        if ctx.in_flight and self.metrics is not None:
            ctx.in_flight = False
            self.metrics.request_finished(ctx.route)
        if ctx.endpoint in _QUIET_PATHS:
            return  # probes and scrapes would drown the request log
        if self.metrics is not None and ctx.plan is None:
            if ctx.endpoint.startswith("/v1/"):  # rejected before routing: bad request, auth, unknown model
                self.metrics.observe_request("-", "-", "-", ctx.outcome, ctx.status, duration=duration,
                                             upstream_wait=0.0)
        elif self.metrics is not None and ctx.plan is not None:
            backend = ctx.backend or "-"
            model = self.model_label(ctx)
            price = None
            if backend in self.upstreams and self.upstreams[backend].kind == "ollama":
                prices = self.config.metrics.cloud_prices
                price = prices.get(ctx.client_model) or prices.get(ctx.route)
            timings = ctx.timings if ctx.timings and "load_duration" in ctx.timings else None
            self.metrics.observe_request(
                ctx.route, model, backend, ctx.outcome, ctx.status, duration=duration,
                upstream_wait=ctx.upstream_wait, ttft=ctx.ttft, prompt_tokens=ctx.prompt_tokens,
                completion_tokens=ctx.completion_tokens, ollama_timings=timings,  # type: ignore[arg-type]
                cloud_price=price)
            self.metrics.split_arm(ctx.route, ctx.plan.attempts[0].target.label())
            for failed, reason, to in ctx.fallbacks:
                self.metrics.fallback(ctx.route, failed, to, reason)
        if self.request_log is not None:
            self.request_log.write(self._log_record(ctx, duration))

    def _log_record(self, ctx: RequestContext, duration: float) -> dict[str, object]:
        t = ctx.timings or {}
        record: dict[str, object] = {
            "request_id": ctx.request_id, "credential": ctx.credential, "path": ctx.endpoint,
            "route": ctx.route if ctx.plan else None, "model": ctx.client_model or None,
            "backend": ctx.backend, "backend_model": ctx.model, "status": ctx.status, "outcome": ctx.outcome,
            "stream": ctx.stream, "fallback_path": ctx.path, "total_ms": round(duration * 1000, 2),
            "upstream_ms": round(ctx.upstream_wait * 1000, 2),
            "ttft_ms": round(ctx.ttft * 1000, 2) if ctx.ttft is not None else None,
            "prompt_tokens": ctx.prompt_tokens, "completion_tokens": ctx.completion_tokens,
        }
        for key in ("load_duration", "prompt_eval_duration", "eval_duration"):
            value = t.get(key)
            if isinstance(value, (int, float)):
                record[key.replace("_duration", "_ms")] = round(value / 1e6, 2)
        eval_ns = t.get("eval_duration")
        if isinstance(eval_ns, (int, float)) and eval_ns > 0 and ctx.completion_tokens:
            record["tokens_per_s"] = round(ctx.completion_tokens / (eval_ns / 1e9), 1)
        if ctx.prompt_text is not None:
            record["prompt"] = ctx.prompt_text
            record["answer"] = ctx.answer_text
        return record

    # -- backend choice and bookkeeping -------------------------------------------------------
    def breaker_refuses(self, name: str) -> bool:
        """True while the backend's breaker would refuse a request (no state change)."""
        state = self.breakers.get(name, CLOSED)
        if state.state == "closed":
            return False
        settings = self.config.policy.breaker
        if state.state == "open":
            return self.clock() - state.opened_at < settings.cooldown
        return state.probe_in_flight and self.clock() - state.probe_started_at < settings.cooldown

    def pick_upstream(self, attempt: Attempt) -> Upstream | None:
        """Choose the backend for ``attempt`` among its pool, honouring breakers, health and load."""
        candidates = attempt.target.backends
        if len(candidates) == 1:  # the common case, without the pool arithmetic
            name = candidates[0]
            upstream = self.upstreams.get(name)
            if upstream is None:
                return None
            state = self.breakers.get(name, CLOSED)
            if state.state == "closed":
                return upstream
            ok, self.breakers[name] = allow(state, self.config.policy.breaker, self.clock())
            return upstream if ok else None
        refused = {name for name in candidates if self.breaker_refuses(name)}
        down = {name for name in candidates if self.health.get(name, BackendHealth()).up is False}
        outstanding = {name: self.upstreams[name].outstanding for name in candidates if name in self.upstreams}
        loaded = {name: self.health[name].loaded for name in candidates if name in self.health}
        name = choose_backend(candidates, model=attempt.model, outstanding=outstanding, loaded=loaded,
                              unavailable=refused | down)
        if name is None and down - refused:
            # every usable candidate looks down: the health check may be stale, so try anyway
            name = choose_backend(candidates, model=attempt.model, outstanding=outstanding, loaded=loaded,
                                  unavailable=refused)
        if name is None or name not in self.upstreams:
            return None
        ok, state = allow(self.breakers.get(name, CLOSED), self.config.policy.breaker, self.clock())
        self.breakers[name] = state
        return self.upstreams[name] if ok else None

    def record_outcome(self, backend: str, outcome: Outcome | None) -> None:
        if outcome is None or outcome in (Outcome.CLIENT_DISCONNECT,):
            return
        before = self.breakers.get(backend, CLOSED)
        if outcome is not Outcome.OK and not counts_as_failure(outcome) and before.state == "closed":
            return
        after = record(before, self.config.policy.breaker, self.clock(), success=not counts_as_failure(outcome))
        self.breakers[backend] = after
        if after.state != before.state:
            log.warning("circuit for backend %s is now %s", backend, after.state)
            if self.metrics is not None:
                self.metrics.circuit(backend, after.state)

    def on_retry(self, ctx: RequestContext, backend: str, outcome: Outcome) -> None:
        if self.metrics is not None:
            self.metrics.retry(ctx.route, backend, outcome.value)

    def on_fallback(self, ctx: RequestContext, backend: str, outcome: Outcome) -> None:
        log.info("request %s: backend %s failed (%s), falling back", ctx.request_id, backend, outcome.value)
        ctx.fallbacks.append((backend, outcome.value, "-"))  # run_plan fills in the destination


_ADMIN = Credential(name="admin")


def _check(auth: Authenticator, admin: bool, authorization: str | None, x_api_key: str | None,
           scrypt: bool = True) -> Credential | None:
    if admin:
        return _ADMIN if auth.authenticate_admin(authorization, x_api_key, scrypt=scrypt) else None
    return auth.authenticate(authorization, x_api_key, scrypt=scrypt)


