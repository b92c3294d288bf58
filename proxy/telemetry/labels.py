"""The label values the gateway's metrics take: bounded, so a series count never follows client input.

Route/model/backend/credential/arm are *configured* names passed by the caller (never raw client
input); outcome and reason go through ``bounded_label`` against ``OUTCOMES`` (and the other sets
here), a status code becomes its class (``status_class``), a breaker state its gauge value.
No prometheus_client here: the values, not the metrics (``proxy.telemetry.families``).
"""

from __future__ import annotations

from collections.abc import Collection
from enum import Enum

__all__ = ["AUTH_FAILURE_REASONS", "CIRCUIT_STATES", "FALLBACK_REASONS", "OUTCOMES", "bounded_label", "status_class"]

OUTCOMES = frozenset({
    "ok", "connect", "timeout", "5xx", "429", "queue_full", "model_not_found", "stream_error",
    "broken_stream", "bad_request", "upstream_auth", "context_length", "client_disconnect", "rejected",
})
FALLBACK_REASONS = OUTCOMES | {"circuit_open"}  # circuit_open: skipped (or retries cut short) by its breaker
AUTH_FAILURE_REASONS = frozenset({"missing", "malformed", "invalid", "admin", "forbidden", "expired"})
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}
_OUTCOMES_OR_ERROR = OUTCOMES | {"error"}  # shadow and pull tasks also end in "error"
_STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")


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


def _circuit_value(state: object) -> float:
    """Map a breaker state (int, name or Enum) to 0/1/2."""
    if isinstance(state, Enum):
        state = state.value if isinstance(state.value, (int, str)) else state.name
    if isinstance(state, str) and state.lower() in CIRCUIT_STATES:
        return float(CIRCUIT_STATES[state.lower()])
    if isinstance(state, int) and not isinstance(state, bool) and state in (0, 1, 2):
        return float(state)
    raise ValueError(f"unknown circuit state {state!r}; expected 0/1/2 or closed/half_open/open")
