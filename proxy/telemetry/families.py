"""The metric families the gateway exports: name, help, label names, buckets, how workers combine.

One table, ``_SPECS``, that ``Metrics`` (``proxy.telemetry.metrics``) builds its metrics from, in one
registry per app; the alert rules and dashboards read these names (``tests/unit/test_alert_rules``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["LATENCY_BUCKETS"]

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
