"""Prometheus metrics for one gateway app: ``Metrics`` owns one ``CollectorRegistry`` per app.

Never the global ``REGISTRY``: two apps in one process each get their own series. Every event the
handlers report is one method (``observe_request``, ``fallback``, ``circuit`` ...). Per-request
events go through a ``Tally`` (``proxy.telemetry.tally``): plain-Python accumulators per label tuple, applied
to the metrics whenever the registry is collected, so a request costs a few dict lookups and
additions; rarer events (fallbacks, circuits, auth failures) update the metrics at once.

Labels are bounded: route/model/backend/credential/arm are *configured* names passed by the caller
(never raw client input); outcome and reason go through ``bounded_label`` against ``OUTCOMES``.

Multiprocess (``--workers N``): the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` *before* anything imports
``prometheus_client`` (its value class is chosen at import time), calls ``clear_multiprocess_dir``
once before forking and ``mark_process_dead(pid, dir)`` when a worker exits. Each worker builds
``Metrics(multiprocess_dir=dir)``: values go to per-pid mmap files, and ``render``/``snapshot`` read
every worker's files through a ``MultiProcessCollector``. One ``Metrics`` per process in that mode.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import math
import os
from collections import defaultdict
from collections.abc import Collection, Mapping
from enum import Enum
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.multiprocess import mark_process_dead as _mark_process_dead

from proxy.telemetry.tally import Tally

__all__ = [
    "AUTH_FAILURE_REASONS", "CIRCUIT_STATES", "FALLBACK_REASONS", "LATENCY_BUCKETS", "OUTCOMES", "Metrics",
    "bounded_label", "clear_multiprocess_dir", "mark_process_dead", "status_class",
]

OUTCOMES = frozenset({
    "ok", "connect", "timeout", "5xx", "429", "queue_full", "model_not_found", "stream_error",
    "broken_stream", "bad_request", "upstream_auth", "context_length", "client_disconnect", "rejected",
})
FALLBACK_REASONS = OUTCOMES | {"circuit_open"}  # circuit_open: skipped (or retries cut short) by its breaker
AUTH_FAILURE_REASONS = frozenset({"missing", "malformed", "invalid", "admin", "forbidden", "expired"})
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}
_OUTCOMES_OR_ERROR = OUTCOMES | {"error"}  # shadow and pull tasks also end in "error"
_CIRCUIT_NAMES = ("closed", "half_open", "open")
_NOT_ERRORS = frozenset({"ok", "client_disconnect"})
_STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
_MODEL_SAMPLES = ("proxy_req", "proxy_time_to", "proxy_output", "proxy_tokens", "proxy_cloud")

# From 0.5 ms (a cached or refused request, the gateway's own overhead) to 5 min (a long generation),
# about 2.5x apart: p50/p95 of 1-20 ms requests and of multi-second Ollama TTFTs both resolve.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
                   30.0, 60.0, 120.0, 300.0)
_LATENCY = _TTFT = LATENCY_BUCKETS
_TPS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0)
_PROMPT_TPS = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 50000.0)
_LOAD = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_OVERHEAD = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2)

_C, _G, _H = Counter, Gauge, Histogram
_RMB = "route model backend"
# key: (class, full name, help, labels, extra kwargs). Gauges say how workers combine: in-flight is
# summed; circuit and up show the worst worker (open wins, down wins); "live" drops dead workers.
_SPECS: dict[str, tuple[Any, str, str, str, dict[str, Any]]] = {
    "requests": (_C, "proxy_requests_total", "Requests by final outcome.", _RMB + " outcome status_class", {}),
    "duration": (_H, "proxy_request_duration_seconds", "Total request time.", _RMB, {"buckets": _LATENCY}),
    "ttft": (_H, "proxy_time_to_first_token_seconds", "Time to first token.", _RMB, {"buckets": _TTFT}),
    "tps": (_H, "proxy_output_tokens_per_second", "Completion tokens per second.", _RMB, {"buckets": _TPS}),
    "tokens": (_C, "proxy_tokens_total", "Tokens by kind.", _RMB + " kind", {}),
    "in_flight": (_G, "proxy_in_flight_requests", "Requests in progress.", "route", {"multiprocess_mode": "livesum"}),
    "load": (_H, "proxy_ollama_load_duration_seconds", "Ollama model load time.", "backend model", {"buckets": _LOAD}),
    "cold": (_C, "proxy_ollama_cold_starts_total", "Requests that waited for a model load.", "backend model", {}),
    "prompt_rate": (_H, "proxy_ollama_prompt_eval_tokens_per_second", "Ollama prompt eval rate.", "backend model",
                    {"buckets": _PROMPT_TPS}),
    "eval_rate": (_H, "proxy_ollama_eval_tokens_per_second", "Ollama generation rate.", "backend model",
                  {"buckets": _TPS}),
    "overhead": (_H, "proxy_overhead_seconds", "Gateway time outside the backend.", "route", {"buckets": _OVERHEAD}),
    "fallbacks": (_C, "proxy_fallbacks_total", "Fallbacks.", "route from_backend to_backend reason", {}),
    "retries": (_C, "proxy_retries_total", "Retries on the same backend.", "route backend reason", {}),
    "circuit": (_G, "proxy_circuit_state", "0 closed 1 half-open 2 open.", "backend", {"multiprocess_mode": "livemax"}),
    "up": (_G, "proxy_backend_up", "1 if health checks pass.", "backend", {"multiprocess_mode": "livemin"}),
    "state_up": (_G, "proxy_state_backend_up", "1 while the shared state (Redis) answers.", "backend",
                 {"multiprocess_mode": "livemin"}),
    "split": (_C, "proxy_split_arm_total", "Requests per split arm.", "route arm", {}),
    "shadow": (_C, "proxy_shadow_requests_total", "Shadow requests.", "route backend outcome", {}),
    "shadow_duration": (_H, "proxy_shadow_duration_seconds", "Shadow time.", "route backend", {"buckets": _LATENCY}),
    "shadow_tokens": (_C, "proxy_shadow_tokens_total", "Shadow tokens.", "route backend kind", {}),
    "pulls": (_C, "proxy_auto_pulls_total", "Automatic model pulls.", "backend model outcome", {}),
    "cost": (_C, "proxy_cloud_cost_avoided_usd_total", "Cloud price of tokens served locally.", "route model", {}),
    "auth": (_C, "proxy_auth_failures_total", "Rejected credentials.", "reason", {}),
    "limited": (_C, "proxy_rate_limited_total", "Requests refused by rate limits.", "credential", {}),
    "cred_requests": (_C, "proxy_credential_requests_total", "Requests per client credential.", "credential", {}),
    "cred_tokens": (_C, "proxy_credential_tokens_total", "Tokens per client credential, by kind.",
                    "credential kind", {}),
}
_SUFFIXES = {_C: ("_total",), _G: ("",), _H: ("_bucket", "_sum", "_count")}


def _text(value: object) -> str:
    """Label text of a plain string or an Enum member (``Outcome.OK`` -> ``"ok"``)."""
    return str(value.value) if isinstance(value, Enum) else str(value)


def bounded_label(value: object, allowed: Collection[str], *, other: str = "other") -> str:
    """Return ``value`` as label text if it is in ``allowed``, else ``other`` (caps cardinality)."""
    text = _text(value)
    return text if text in allowed else other


def status_class(status: int) -> str:
    """``200`` -> ``"2xx"``; anything outside 100..599 -> ``"other"``."""
    return _STATUS_CLASSES[status // 100] if 100 <= status < 600 else "other"


def mark_process_dead(pid: int, multiprocess_dir: str) -> None:
    """Drop a dead worker's live gauges (in-flight, circuit, up); its counters keep counting."""
    _mark_process_dead(pid, multiprocess_dir)


def clear_multiprocess_dir(multiprocess_dir: str) -> None:
    """Create the directory and remove stale ``*.db`` files; call once before forking workers."""
    os.makedirs(multiprocess_dir, exist_ok=True)
    for path in glob.glob(os.path.join(multiprocess_dir, "*.db")):
        os.remove(path)


class Metrics:
    """All gateway metrics over one per-app registry; one method per event, built for the hot path."""

    def __init__(self, *, multiprocess_dir: str | None = None, cold_start_seconds: float = 0.1) -> None:
        self.multiprocess_dir = multiprocess_dir
        self._cold_start_seconds = cold_start_seconds
        # Hot-path caches: the accumulators one request (or one set of Ollama timings) touches.
        self._tally = Tally()
        self._series: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._ollama: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._counts: dict[tuple[str, ...], Any] = {}
        self._in_flight: dict[str, Any] = {}
        live: CollectorRegistry | None = CollectorRegistry()
        self.registry: CollectorRegistry = live  # type: ignore[assignment]
        if multiprocess_dir is not None:
            _check_multiprocess(multiprocess_dir)
            live = None  # live values go to this worker's mmap files, registered nowhere
            # A MultiProcessCollector re-reads all files on every collect(), so keeping one is what
            # the documented "fresh registry per scrape" recipe achieves.
            self.registry = CollectorRegistry()
        self.registry.register(self._tally)  # first: collecting the registry flushes the tally
        if multiprocess_dir is not None:
            MultiProcessCollector(self.registry, path=multiprocess_dir)
        # key -> cached ``metric.labels``: a C-level dict hit per event once a label tuple was seen.
        self._metric: dict[str, Any] = {
            key: cls(name, doc, labels.split(), registry=live, **kw) for key, (cls, name, doc, labels, kw) in _SPECS.items()}
        self._f: dict[str, Any] = {key: functools.lru_cache(maxsize=None)(metric.labels)
                                   for key, metric in self._metric.items()}

    # -- exposition ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Apply the per-request accumulators to the metrics (collecting the registry does this too)."""
        self._tally.flush()

    def render(self) -> tuple[bytes, str]:
        """Body and content type for ``/metrics``; send the type as a ``Content-Type`` header."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    @staticmethod
    def sample_names() -> frozenset[str]:
        """Every sample name these metrics expose (``proxy_requests_total``, ``..._bucket`` ...)."""
        return frozenset(name.removesuffix("_total") + suffix
                         for cls, name, *_ in _SPECS.values() for suffix in _SUFFIXES[cls])

    # -- per-request events -------------------------------------------------------------------

    def request_started(self, route: str) -> None:
        """One more request in flight on ``route``."""
        (self._in_flight.get(route) or self._new_in_flight(route)).inc()

    def request_finished(self, route: str) -> None:
        """One request on ``route`` left (pair with ``request_started`` in a ``finally``)."""
        (self._in_flight.get(route) or self._new_in_flight(route)).dec()

    def _new_in_flight(self, route: str) -> Any:
        gauge = self._in_flight[route] = self._tally.gauge(self._f["in_flight"](route))
        return gauge

    def _count(self, key: str, *labels: str) -> Any:
        """The accumulator of counter ``key`` with ``labels``."""
        found = self._counts.get((key, *labels))
        if found is None:
            found = self._counts[(key, *labels)] = self._tally.counter(self._f[key](*labels))
        return found

    def observe_request(
        self, route: str, model: str, backend: str, outcome: object, status: int, *,
        duration: float, upstream_wait: float, ttft: float | None = None,
        prompt_tokens: int = 0, completion_tokens: int = 0,
        ollama_timings: Mapping[str, int] | None = None, ollama_model: str | None = None,
        cloud_price: tuple[float, float] | None = None,
    ) -> None:
        """Record one finished request (times in seconds; ``cloud_price`` = USD per 1M in/out tokens).

        Pass ``cloud_price`` only when a local (Ollama) backend served the request. Tokens/s is
        ``(completion_tokens - 1) / (duration - ttft)`` when ``ttft`` is known, else over ``duration``.
        ``ollama_timings`` is Ollama's final chunk (``load_duration``, ``eval_count`` ... in ns),
        recorded under ``ollama_model``: the (bounded) model Ollama loaded, which for an alias is
        not the client's ``model`` (default: ``model``).
        """
        oc = _text(outcome)
        self._count("requests", route, model, backend, oc if oc in OUTCOMES else "other", status_class(status)).inc()
        key = (route, model, backend)
        duration_h, ttft_h, tps_h, prompt_c, completion_c, overhead_h = self._series.get(key) or self._new_series(key)
        duration_h.observe(duration)
        overhead = duration - upstream_wait
        overhead_h.observe(overhead if overhead > 0.0 else 0.0)
        if ttft is not None:
            ttft_h.observe(ttft)
        if prompt_tokens:
            prompt_c.inc(prompt_tokens)
        if completion_tokens:
            completion_c.inc(completion_tokens)
            if oc == "ok":
                if ttft is None:
                    rate = completion_tokens / duration if duration > 0.0 else 0.0
                else:
                    span = duration - ttft
                    rate = (completion_tokens - 1) / span if span > 0.0 and completion_tokens > 1 else 0.0
                if rate > 0.0:
                    tps_h.observe(rate)
        if ollama_timings:
            self._observe_ollama(backend, model if ollama_model is None else ollama_model, ollama_timings)
        if cloud_price is not None and (prompt_tokens or completion_tokens):
            usd = (prompt_tokens * cloud_price[0] + completion_tokens * cloud_price[1]) / 1e6
            if usd > 0.0:
                self._count("cost", route, model).inc(usd)

    def _new_series(self, key: tuple[str, str, str]) -> tuple[Any, ...]:
        f, hist, count = self._f, self._tally.histogram, self._tally.counter
        series = self._series[key] = (hist(f["duration"](*key)), hist(f["ttft"](*key)), hist(f["tps"](*key)),
                                      count(f["tokens"](*key, "prompt")), count(f["tokens"](*key, "completion")),
                                      hist(f["overhead"](key[0])))
        return series

    def _observe_ollama(self, backend: str, model: str, t: Mapping[str, int]) -> None:
        key = (backend, model)
        series = self._ollama.get(key)
        if series is None:
            f, hist = self._f, self._tally.histogram
            series = self._ollama[key] = (hist(f["load"](*key)), self._tally.counter(f["cold"](*key)),
                                          hist(f["prompt_rate"](*key)), hist(f["eval_rate"](*key)))
        load_h, cold_c, prompt_h, eval_h = series
        load = t.get("load_duration")
        if load is not None:
            load_h.observe(load / 1e9)
            if load > self._cold_start_seconds * 1e9:
                cold_c.inc()
        count, ns = t.get("prompt_eval_count"), t.get("prompt_eval_duration")
        if count and ns:
            prompt_h.observe(count * 1e9 / ns)
        count, ns = t.get("eval_count"), t.get("eval_duration")
        if count and ns:
            eval_h.observe(count * 1e9 / ns)

    # -- routing and backend events -----------------------------------------------------------

    def fallback(self, route: str, from_backend: str, to_backend: str, reason: object) -> None:
        """The router moved from ``from_backend`` to ``to_backend``: ``reason`` is an Outcome or ``circuit_open``."""
        self._f["fallbacks"](route, from_backend, to_backend, bounded_label(reason, FALLBACK_REASONS)).inc()

    def retry(self, route: str, backend: str, reason: object) -> None:
        """The router retried ``backend`` after ``reason`` (an Outcome)."""
        self._f["retries"](route, backend, bounded_label(reason, OUTCOMES)).inc()

    def circuit(self, backend: str, state: object) -> None:
        """Breaker state: 0/1/2, ``"closed"``/``"half_open"``/``"open"`` or an Enum of either.

        ``None``: the backend was removed (a reload), so is its series. With ``--workers`` the other
        workers' files keep it, so it is set to 0 (closed) first: a removed backend never reads open.
        """
        if state is None:
            self._f["circuit"](backend).set(0.0)
            with contextlib.suppress(KeyError):
                self._metric["circuit"].remove(backend)
            self._f["circuit"].cache_clear()  # the cached child left with the series
            return
        self._f["circuit"](backend).set(_circuit_value(state))

    def state_up(self, up: bool) -> None:
        """Whether the shared state (``state.redis_url``) answers; set at start and on every change."""
        self._f["state_up"]("redis").set(1.0 if up else 0.0)

    def backend_up(self, backend: str, up: bool) -> None:
        """Result of the latest health check of ``backend``."""
        self._f["up"](backend).set(1.0 if up else 0.0)

    def split_arm(self, route: str, arm: str) -> None:
        """A split route picked ``arm`` (a configured target name)."""
        self._count("split", route, arm).inc()

    def split_arms(self, arms: Collection[tuple[str, str]]) -> None:
        """Every arm of every split route exists from the start, at 0 until picked (``weight: 0`` arms too)."""
        for route, arm in arms:
            self._count("split", route, arm)

    def shadow(self, route: str, backend: str, outcome: object, *, duration: float,
               prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """A shadow (mirrored) request to ``backend`` finished (an Outcome or ``"error"``)."""
        self._f["shadow"](route, backend, bounded_label(outcome, _OUTCOMES_OR_ERROR)).inc()
        self._f["shadow_duration"](route, backend).observe(duration)
        if prompt_tokens:
            self._f["shadow_tokens"](route, backend, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self._f["shadow_tokens"](route, backend, "completion").inc(completion_tokens)

    def auto_pull(self, backend: str, model: str, outcome: object) -> None:
        """An automatic ``ollama pull`` ended (``ok``, ``error`` or an Outcome); ``model`` is a bounded label."""
        self._f["pulls"](backend, model, bounded_label(outcome, _OUTCOMES_OR_ERROR)).inc()

    def auth_failure(self, reason: str) -> None:
        """A credential was refused; reasons outside ``AUTH_FAILURE_REASONS`` count as ``other``."""
        self._f["auth"](bounded_label(reason, AUTH_FAILURE_REASONS)).inc()

    def rate_limited(self, credential: str) -> None:
        """A request from ``credential`` (its configured name) hit a rate limit."""
        self._f["limited"](credential).inc()

    def credential_usage(self, credential: str, prompt_tokens: int, completion_tokens: int) -> None:
        """A request authenticated as ``credential`` (its configured name) finished, with these tokens."""
        self._count("cred_requests", credential).inc()
        if prompt_tokens:
            self._count("cred_tokens", credential, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self._count("cred_tokens", credential, "completion").inc(completion_tokens)

    # -- dashboard ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Per-model, per-route and per-backend summaries of the current values (all workers)."""
        sums: defaultdict[tuple[str, str, str], float] = defaultdict(float)  # (sample, model, kind)
        buckets: defaultdict[str, defaultdict[float, float]] = defaultdict(lambda: defaultdict(float))
        routes: defaultdict[str, dict[str, Any]] = defaultdict(
            lambda: {"fallbacks": 0.0, "fallbacks_by_reason": defaultdict(float), "split": defaultdict(float),
                     "in_flight": 0.0})
        backends: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        credentials: defaultdict[str, dict[str, float]] = defaultdict(
            lambda: {"requests": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0})
        for family in self.registry.collect():
            for s in family.samples:
                name, lab, v = s.name, s.labels, s.value
                if name.startswith(_MODEL_SAMPLES) and "model" in lab:
                    if name == "proxy_request_duration_seconds_bucket":
                        buckets[lab["model"]][float(lab["le"])] += v
                        continue
                    if name == "proxy_requests_total" and lab["outcome"] not in _NOT_ERRORS:
                        sums[("errors", lab["model"], "")] += v
                    sums[(name, lab["model"], lab.get("kind", ""))] += v
                elif name == "proxy_fallbacks_total":
                    routes[lab["route"]]["fallbacks"] += v
                    routes[lab["route"]]["fallbacks_by_reason"][lab["reason"]] += v
                elif name == "proxy_split_arm_total":
                    routes[lab["route"]]["split"][lab["arm"]] += v
                elif name == "proxy_in_flight_requests":
                    routes[lab["route"]]["in_flight"] += v
                elif name == "proxy_backend_up":
                    backends[lab["backend"]]["up"] = v >= 1.0
                elif name == "proxy_circuit_state":
                    backends[lab["backend"]]["circuit"] = _CIRCUIT_NAMES[min(max(int(v), 0), 2)]
                elif name == "proxy_credential_requests_total":
                    credentials[lab["credential"]]["requests"] += v
                elif name == "proxy_credential_tokens_total":
                    credentials[lab["credential"]][lab["kind"] + "_tokens"] += v
        models = {m: _model_summary(sums, m, buckets.get(m, {})) for m in sorted({m for _, m, _ in sums})}
        for r in routes.values():
            split = r.pop("split")
            total = sum(split.values())
            r["split_shares"] = {arm: n / total for arm, n in sorted(split.items())} if total else {}
            r["fallbacks_by_reason"] = dict(r["fallbacks_by_reason"])
        return {"models": models, "routes": dict(sorted(routes.items())), "backends": dict(sorted(backends.items())),
                "credentials": dict(sorted(credentials.items()))}


def _model_summary(sums: Mapping[tuple[str, str, str], float], m: str,
                   buckets: Mapping[float, float]) -> dict[str, Any]:
    """One model's dashboard row from the summed samples."""
    def get(name: str, kind: str = "") -> float:
        return sums.get((name, m, kind), 0.0)

    def mean(base: str) -> float | None:
        count = get(base + "_count")
        return get(base + "_sum") / count if count else None

    requests, errors = get("proxy_requests_total"), get("errors")
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "latency_mean_s": mean("proxy_request_duration_seconds"),
        "latency_p50_s": _quantile(0.5, buckets),
        "latency_p95_s": _quantile(0.95, buckets),
        "ttft_mean_s": mean("proxy_time_to_first_token_seconds"),
        "tokens_per_s_mean": mean("proxy_output_tokens_per_second"),
        "prompt_tokens": get("proxy_tokens_total", "prompt"),
        "completion_tokens": get("proxy_tokens_total", "completion"),
        "cost_avoided_usd": get("proxy_cloud_cost_avoided_usd_total"),
    }


def _quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """Approximate quantile from cumulative buckets, interpolated like PromQL ``histogram_quantile``."""
    bounds = sorted(cumulative.items())
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank, lower, below = q * bounds[-1][1], 0.0, 0.0
    for upper, count in bounds:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = upper, count
    return lower


def _circuit_value(state: object) -> float:
    """Map a breaker state (int, name or Enum) to 0/1/2."""
    if isinstance(state, Enum):
        state = state.value if isinstance(state.value, (int, str)) else state.name
    if isinstance(state, str) and state.lower() in CIRCUIT_STATES:
        return float(CIRCUIT_STATES[state.lower()])
    if isinstance(state, int) and not isinstance(state, bool) and state in (0, 1, 2):
        return float(state)
    raise ValueError(f"unknown circuit state {state!r}; expected 0/1/2 or closed/half_open/open")


def _check_multiprocess(path: str) -> None:
    """Fail at startup if prometheus_client was not imported in multiprocess mode for ``path``."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        raise ValueError("multiprocess_dir given, but PROMETHEUS_MULTIPROC_DIR was not set before "
                         "prometheus_client was first imported")
    # prometheus_client itself writes into os.environ's directory, so that is the one that must match.
    env_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not os.path.isdir(path) or os.path.realpath(env_dir) != os.path.realpath(path):
        raise ValueError(f"multiprocess_dir {path!r} must exist and equal PROMETHEUS_MULTIPROC_DIR ({env_dir!r})")
