"""Backoff delays and retry decisions from policies.retry."""

from __future__ import annotations

import pytest

from policies import Outcome, RetrySettings, backoff_delay, may_retry

SETTINGS = RetrySettings(attempts=2, base_delay=0.25, max_delay=4.0, budget=15.0)


@pytest.mark.parametrize(
    ("retry_number", "jitter", "retry_after", "expected"),
    [
        (0, 0.5, None, 0.25),  # jitter 0.5 -> factor 1.0
        (1, 0.5, None, 0.5),
        (2, 0.5, None, 1.0),
        (4, 0.5, None, 4.0),  # 0.25 * 16 = 4.0, exactly the cap
        (5, 0.5, None, 4.0),  # capped
        (1000, 0.5, None, 4.0),  # no overflow for absurd retry numbers
        (0, 0.0, None, 0.2),  # jitter 0 -> factor 0.8
        (2, 0.0, None, 0.8),
        (2, 0.75, None, 1.1),  # factor 1.1
        (5, 0.0, None, 3.2),  # jitter applies after the cap
        (0, 0.5, 3.0, 3.0),  # Retry-After raises the delay
        (2, 0.5, 0.1, 1.0),  # ... but never lowers it
    ],
)
def test_backoff_delay_table(retry_number: int, jitter: float, retry_after: float | None, expected: float) -> None:
    """Delay is base*2**n capped at max_delay, jittered into [0.8, 1.2), floored at Retry-After."""
    got = backoff_delay(retry_number, SETTINGS, jitter=jitter, retry_after=retry_after)
    assert got == pytest.approx(expected)


def test_backoff_jitter_stays_within_twenty_percent() -> None:
    """Any jitter roll in [0, 1) keeps the delay within [0.8, 1.2) of the nominal value."""
    for i in range(100):
        delay = backoff_delay(1, SETTINGS, jitter=i / 100)
        assert 0.4 <= delay < 0.6


@pytest.mark.parametrize(
    ("outcome", "retry_number", "elapsed", "delay", "expected"),
    [
        (Outcome.CONNECT, 0, 0.0, 0.25, True),
        (Outcome.SERVER_ERROR, 1, 1.0, 0.5, True),
        (Outcome.RATE_LIMITED, 0, 0.0, 1.0, True),
        (Outcome.QUEUE_FULL, 0, 0.0, 1.0, True),
        (Outcome.QUEUE_FULL, 2, 0.0, 1.0, False),  # attempts=2 used up
        (Outcome.CONNECT, 0, 14.0, 1.0, True),  # exactly at the budget
        (Outcome.CONNECT, 0, 14.0, 1.01, False),  # over the budget
        (Outcome.TIMEOUT, 0, 0.0, 0.25, False),  # not retryable
        (Outcome.MODEL_NOT_FOUND, 0, 0.0, 0.25, False),
        (Outcome.BAD_REQUEST, 0, 0.0, 0.25, False),
        (Outcome.OK, 0, 0.0, 0.25, False),
    ],
)
def test_may_retry_table(outcome: Outcome, retry_number: int, elapsed: float, delay: float, expected: bool) -> None:
    """Only retryable outcomes retry, and only within the attempt count and the time budget."""
    assert may_retry(outcome, retry_number, elapsed=elapsed, delay=delay, settings=SETTINGS) is expected


def test_default_settings_never_retry() -> None:
    """The default of zero extra attempts means a failure goes straight to fallback."""
    assert may_retry(Outcome.CONNECT, 0, elapsed=0.0, delay=0.0, settings=RetrySettings()) is False
