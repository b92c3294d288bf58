"""proxy.ratelimit: token buckets with explicit ``now``, concurrency, admission order, registry."""

from __future__ import annotations

import pytest

from proxy.auth import Credential
from proxy.ratelimit import CallerLimits, Limits, Refusal, TokenBucket


def test_requests_per_minute_burst_then_retry_after() -> None:
    """A full minute's allowance may burst; the next request waits for one token to refill."""
    caller = CallerLimits(requests_per_minute=60)  # 1 token per second
    assert [caller.check_request(0.0) for _ in range(60)] == [None] * 60
    assert caller.check_request(0.0) == pytest.approx(1.0)
    assert caller.check_request(0.25) == pytest.approx(0.75)
    assert caller.check_request(1.0) is None
    assert caller.check_request(1.0) == pytest.approx(1.0)


def test_refused_requests_take_nothing() -> None:
    """Asking while refused does not push the wait further out."""
    caller = CallerLimits(requests_per_minute=1)  # one per 60 s
    assert caller.check_request(100.0) is None
    assert [caller.check_request(100.0 + t) for t in (0, 10, 30)] == pytest.approx([60.0, 50.0, 30.0])
    assert caller.check_request(160.0) is None


def test_refill_is_continuous_and_capped() -> None:
    """Tokens accrue at rate/60 per second and never beyond the per-minute capacity."""
    caller = CallerLimits(requests_per_minute=600)  # 10 per second
    for _ in range(600):
        assert caller.check_request(0.0) is None
    assert caller.check_request(0.0) == pytest.approx(0.1)
    assert caller.check_request(0.1) is None  # 0.1 s * 10/s is exactly one token despite float error
    assert caller.check_request(0.1) == pytest.approx(0.1)
    allowed = sum(caller.check_request(10_000.0) is None for _ in range(700))
    assert allowed == 600


def test_clock_going_backwards_neither_refills_nor_breaks() -> None:
    """An earlier ``now`` than the last one adds nothing."""
    caller = CallerLimits(requests_per_minute=60)
    for _ in range(60):
        caller.check_request(50.0)
    assert caller.check_request(40.0) == pytest.approx(1.0)
    assert caller.check_request(51.0) is None


def test_tokens_per_minute_debt() -> None:
    """Spending may go negative; requests are refused until the debt is paid off."""
    caller = CallerLimits(tokens_per_minute=1000)  # 1000/60 tokens per second
    assert caller.check_tokens(0.0) is None
    caller.spend_tokens(1500, 0.0)  # level -500
    assert caller.check_tokens(0.0) == pytest.approx(30.0)
    assert caller.check_tokens(15.0) == pytest.approx(15.0)
    assert caller.check_tokens(30.0) is None
    caller.spend_tokens(0, 30.0)
    caller.spend_tokens(-50, 30.0)  # nonsense counts are ignored
    assert caller.check_tokens(30.0) is None


def test_tokens_below_capacity_are_allowed() -> None:
    """Spending part of the budget leaves requests allowed; checking takes no tokens."""
    caller = CallerLimits(tokens_per_minute=100)
    caller.spend_tokens(100, 0.0)  # exactly empty, not negative
    assert caller.check_tokens(0.0) is None
    assert caller.check_tokens(0.0) is None
    caller.spend_tokens(1, 0.0)
    assert caller.check_tokens(0.0) == pytest.approx(0.6)


def test_concurrency_enter_and_leave() -> None:
    """At most max_concurrent requests are in flight; leaving frees a slot."""
    caller = CallerLimits(max_concurrent=2)
    assert (caller.try_enter(), caller.try_enter(), caller.try_enter()) == (True, True, False)
    assert caller.in_flight == 2
    caller.leave()
    assert caller.try_enter() is True
    for _ in range(5):
        caller.leave()  # unbalanced leaves never go below zero
    assert caller.in_flight == 0
    assert (caller.try_enter(), caller.try_enter(), caller.try_enter()) == (True, True, False)


def test_unlimited_costs_nothing() -> None:
    """Without limits there are no buckets and every check passes."""
    caller = CallerLimits()
    assert (caller.requests, caller.tokens, caller.max_concurrent) == (None, None, None)
    assert all(caller.try_enter() for _ in range(1000))
    assert caller.in_flight == 0
    assert caller.check_request(0.0) is None and caller.check_tokens(0.0) is None
    caller.spend_tokens(10**9, 0.0)
    caller.leave()
    assert caller.admit(0.0) is None


def test_admit_order_and_undo() -> None:
    """admit refuses on tokens first, then concurrency, then requests, undoing its slot."""
    caller = CallerLimits(max_concurrent=1, requests_per_minute=1, tokens_per_minute=60)
    assert caller.admit(0.0) is None and caller.in_flight == 1
    assert caller.admit(0.0) == Refusal(reason="concurrency", retry_after=None)
    caller.leave()
    refusal = caller.admit(1.0)
    assert refusal is not None and refusal.reason == "requests" and refusal.retry_after == pytest.approx(59.0)
    assert caller.in_flight == 0  # the slot taken for the refused request was given back
    caller.spend_tokens(120, 2.0)  # the bucket was full (60, capped), now -60: 60 s at 1 token/s
    assert caller.admit(2.0) == Refusal(reason="tokens", retry_after=pytest.approx(60.0))
    assert caller.in_flight == 0
    assert caller.admit(62.0) is None


def test_limits_are_shared_per_credential_name() -> None:
    """Limits creates one CallerLimits per credential name, from its settings, on first use."""
    limits = Limits()
    app = Credential(name="app", max_concurrent=1, requests_per_minute=120, tokens_per_minute=6000)
    caller = limits.for_credential(app)
    assert limits.for_credential(app) is caller
    assert caller.max_concurrent == 1
    assert (caller.requests.capacity, caller.requests.rate) == (120.0, 2.0)  # type: ignore[union-attr]
    assert (caller.tokens.capacity, caller.tokens.rate) == (6000.0, 100.0)  # type: ignore[union-attr]
    other = limits.for_credential(Credential(name="other"))
    assert other is not caller and other.requests is None
    assert caller.try_enter() and not limits.for_credential(app).try_enter()


def test_token_bucket_rejects_nonsense() -> None:
    """A bucket needs a positive capacity and rate."""
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, 0)
    bucket = TokenBucket(3, 0.5)
    assert bucket.take(3, 7.0) is None
    assert bucket.take(2, 7.0) == pytest.approx(4.0)
