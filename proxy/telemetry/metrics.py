"""Prometheus metrics for one gateway app: ``Metrics`` owns one ``CollectorRegistry`` per app.

Never the global ``REGISTRY``: two apps in one process each get their own series. Every event the
handlers report is one method (``observe_request``, ``fallback``, ``circuit`` ...). Per-request
events go through a ``Tally`` (``proxy.telemetry.tally``): plain-Python accumulators per label tuple, applied
to the metrics whenever the registry is collected, so a request costs a few dict lookups and
additions; rarer events (fallbacks, circuits, auth failures) update the metrics at once.

The families (names, help, labels, buckets) are ``proxy.telemetry.families``; their label values are
bounded by ``proxy.telemetry.labels``; the dashboard's summary (``snapshot``) is ``proxy.telemetry.summary``.

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
import os
from collections.abc import Collection, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.multiprocess import mark_process_dead as _mark_process_dead

from proxy.telemetry.families import _SPECS, _SUFFIXES, LATENCY_BUCKETS
from proxy.telemetry.labels import (
    _OUTCOMES_OR_ERROR, AUTH_FAILURE_REASONS, CIRCUIT_STATES, FALLBACK_REASONS, OUTCOMES, _circuit_value, _text,
    bounded_label, status_class,
)
from proxy.telemetry.summary import summarize
from proxy.telemetry.tally import Tally

# Re-exported: the label values and buckets lived here before proxy.telemetry.labels and .families.
__all__ = [
    "AUTH_FAILURE_REASONS", "CIRCUIT_STATES", "FALLBACK_REASONS", "LATENCY_BUCKETS", "OUTCOMES", "Metrics",
    "bounded_label", "clear_multiprocess_dir", "mark_process_dead", "status_class",
]


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
        return summarize(self.registry)


def _check_multiprocess(path: str) -> None:
    """Fail at startup if prometheus_client was not imported in multiprocess mode for ``path``."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        raise ValueError("multiprocess_dir given, but PROMETHEUS_MULTIPROC_DIR was not set before "
                         "prometheus_client was first imported")
    # prometheus_client itself writes into os.environ's directory, so that is the one that must match.
    env_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not os.path.isdir(path) or os.path.realpath(env_dir) != os.path.realpath(path):
        raise ValueError(f"multiprocess_dir {path!r} must exist and equal PROMETHEUS_MULTIPROC_DIR ({env_dir!r})")
