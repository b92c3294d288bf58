"""The pure routing engine: which backend and model serve a request, and what to do when one fails.

The routing contract:

- **Route lookup.** The client's ``model`` is matched against every route's ``models``: exact
  names (aliases) first, across all routes; then fnmatch globs in route order; a route listing
  ``"*"`` is the default and is tried last. No match means no plan (the proxy answers 404
  ``model_not_found``). With no routes configured, one ``default`` route sends every model, under
  its own name, to the first backend.
- **Traffic split.** Each route has weighted targets; one is chosen per request. With a sticky key
  (first present of the route's ``sticky`` sources: API key, OpenAI ``user``, a header) the choice
  is a SHA-256 of route name and key, so one client stays on one arm on every replica and across
  restarts; otherwise the caller's random ``roll`` decides.
- **Attempts.** The chosen target comes first, then the route's ``fallback`` targets in order,
  without repeats. A target may name a pool of backends; ``choose_backend`` picks the one with
  the model already loaded, then the least busy, skipping those whose breaker is open.
- **Fallback.** Before the first byte reaches the client, an attempt that ends with an outcome in
  the route's ``fallback_on`` moves on to the next attempt; any other outcome is final. After the
  first byte there is no fallback. Transient outcomes (``RETRYABLE``) may first be retried on the
  same target with jittered exponential backoff, within ``retry.attempts`` and ``retry.budget``.
- **Breakers.** Failures (``counts_as_failure``) open a backend's breaker after N in a row or a
  high failure ratio over a sliding window; after a cooldown one probe decides whether it closes.
- **Shadowing.** A ``share`` of a route's requests is also sent to a shadow target whose answer is
  discarded.

Everything here takes and returns plain frozen values. Time (``now``), randomness (``roll``,
``jitter``) and the environment (``environ``) are arguments. Stdlib only: nothing from ``proxy``,
no aiohttp, yaml, orjson or prometheus_client, no ``os.environ``, clocks or global random.
"""

from __future__ import annotations

from policies.balance import choose_backend
from policies.breaker import CLOSED, BreakerState, allow, record
from policies.model import (
    Attempt,
    BreakerSettings,
    Plan,
    Policy,
    RetrySettings,
    Route,
    Shadow,
    Target,
)
from policies.outcome import (
    DEFAULT_FALLBACK_ON,
    RETRYABLE,
    Outcome,
    counts_as_failure,
    should_fall_back,
)
from policies.parse import parse_policy
from policies.plan import pick_arm, plan, resolve_route, sticky_key, sticky_roll
from policies.retry import backoff_delay, may_retry
from policies.schema import Problems, SchemaError

__all__ = [
    "CLOSED",
    "DEFAULT_FALLBACK_ON",
    "RETRYABLE",
    "Attempt",
    "BreakerSettings",
    "BreakerState",
    "Outcome",
    "Plan",
    "Policy",
    "Problems",
    "RetrySettings",
    "Route",
    "SchemaError",
    "Shadow",
    "Target",
    "allow",
    "backoff_delay",
    "choose_backend",
    "counts_as_failure",
    "may_retry",
    "parse_policy",
    "pick_arm",
    "plan",
    "record",
    "resolve_route",
    "should_fall_back",
    "sticky_key",
    "sticky_roll",
]
