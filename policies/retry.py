"""Retrying on the same target: how long to wait, and whether another try is allowed.

Exponential backoff with jitter (the roll is passed in), a ``Retry-After`` floor, and an overall
time budget so that retries never outlast what the client will wait. Only transient outcomes in
``RETRYABLE`` are retried; once retries run out, the route's fallback takes over. Stdlib only.
"""

from __future__ import annotations

from policies.model import RetrySettings
from policies.outcome import RETRYABLE, Outcome

__all__ = ["backoff_delay", "may_retry"]

# 2**30 * any sane base_delay is far beyond any max_delay; the cap keeps the float finite.
_MAX_EXPONENT = 30


def backoff_delay(
    retry_number: int,
    settings: RetrySettings,
    *,
    jitter: float,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before retry ``retry_number`` (0 for the first retry).

    ``base_delay * 2**retry_number`` capped at ``max_delay``, times a jitter factor: ``jitter`` in
    [0, 1) maps linearly onto [0.8, 1.2). A ``retry_after`` (seconds, from the upstream's
    Retry-After header) raises the delay to at least that value.
    """
    raw = settings.base_delay * 2.0 ** min(max(retry_number, 0), _MAX_EXPONENT)
    delay = min(raw, settings.max_delay) * (0.8 + 0.4 * jitter)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def may_retry(
    outcome: Outcome,
    retry_number: int,
    *,
    elapsed: float,
    delay: float,
    settings: RetrySettings,
) -> bool:
    """Return True when retry ``retry_number`` (0-based) of ``outcome`` may go ahead after ``delay``.

    The outcome must be in ``RETRYABLE``, fewer than ``settings.attempts`` retries must have been
    made, and ``elapsed + delay`` (seconds since the request started) must fit in the budget.
    """
    return (
        outcome in RETRYABLE
        and retry_number < settings.attempts
        and elapsed + delay <= settings.budget
    )
