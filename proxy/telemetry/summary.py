"""The dashboard's summary of the metrics' current values: per model, route, backend and credential.

``summarize(registry)`` reads every sample of the registry (with ``--workers``, every worker's files)
and sums them into the rows the dashboard reads from ``/admin/stats``: requests, error rate, latency
mean and quantiles, TTFT, tokens/s and cost avoided per model; fallbacks, split shares and in-flight
per route; health and circuit per backend; requests and tokens per credential. ``Metrics.snapshot``
is this summary of the app's registry.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["summarize"]

_CIRCUIT_NAMES = ("closed", "half_open", "open")
_NOT_ERRORS = frozenset({"ok", "client_disconnect"})
_MODEL_SAMPLES = ("proxy_req", "proxy_time_to", "proxy_output", "proxy_tokens", "proxy_cloud")


def summarize(registry: CollectorRegistry) -> dict[str, Any]:
    """Per-model, per-route and per-backend summaries of the current values (all workers)."""
    sums: defaultdict[tuple[str, str, str], float] = defaultdict(float)  # (sample, model, kind)
    buckets: defaultdict[str, defaultdict[float, float]] = defaultdict(lambda: defaultdict(float))
    routes: defaultdict[str, dict[str, Any]] = defaultdict(
        lambda: {"fallbacks": 0.0, "fallbacks_by_reason": defaultdict(float), "split": defaultdict(float),
                 "in_flight": 0.0})
    backends: defaultdict[str, dict[str, Any]] = defaultdict(dict)
    credentials: defaultdict[str, dict[str, float]] = defaultdict(
        lambda: {"requests": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0})
    for family in registry.collect():
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
