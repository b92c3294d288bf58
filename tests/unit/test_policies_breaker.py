"""The circuit-breaker state machine in policies.breaker, walked step by step with explicit clocks."""

from __future__ import annotations

import pytest

from policies import CLOSED, BreakerSettings, BreakerState, allow, record

# Each step: (action, now, expected). "allow" expects (allowed, state); "ok"/"fail" expect a state.
CONSECUTIVE = BreakerSettings(failures=3, ratio=0.5, window=10, min_requests=100, cooldown=5)
CONSECUTIVE_WALK = [
    ("allow", 0.0, (True, "closed")),
    ("fail", 0.0, "closed"),
    ("fail", 1.0, "closed"),
    ("fail", 2.0, "open"),  # third failure in a row
    ("allow", 3.0, (False, "open")),
    ("ok", 3.5, "open"),  # a late answer from before the breaker opened changes nothing
    ("allow", 6.9, (False, "open")),  # cooldown not over (opened at 2.0)
    ("allow", 7.0, (True, "half_open")),  # the one probe
    ("allow", 7.5, (False, "half_open")),  # refused while the probe is in flight
    ("fail", 8.0, "open"),  # probe failed: re-open at 8.0
    ("allow", 12.9, (False, "open")),
    ("allow", 13.0, (True, "half_open")),
    ("ok", 13.5, "closed"),  # probe succeeded
    ("allow", 14.0, (True, "closed")),
    ("fail", 14.0, "closed"),  # counts were reset on closing
    ("fail", 15.0, "closed"),
    ("ok", 16.0, "closed"),  # a success breaks the run
    ("fail", 17.0, "closed"),
    ("fail", 18.0, "closed"),
    ("fail", 19.0, "open"),
]

RATIO = BreakerSettings(failures=100, ratio=0.5, window=10, min_requests=4, cooldown=5)
RATIO_WALK = [
    ("ok", 0.0, "closed"),
    ("fail", 1.0, "closed"),
    ("fail", 2.0, "closed"),  # 2 of 3 failed, but fewer than min_requests
    ("ok", 20.0, "closed"),  # the old buckets have left the 10 s window
    ("fail", 21.0, "closed"),
    ("fail", 22.0, "closed"),  # 2 of 3 in the window
    ("ok", 23.0, "closed"),  # 2 of 4 is at the ratio, but a success never opens the breaker
    ("fail", 24.0, "open"),  # 3 of 5 >= 0.5 with 5 >= min_requests
]


def _walk(settings: BreakerSettings, steps: list[tuple[str, float, object]]) -> None:
    state = CLOSED
    for number, (action, now, expected) in enumerate(steps):
        if action == "allow":
            allowed, state = allow(state, settings, now)
            assert (allowed, state.state) == expected, f"step {number}"
        else:
            state = record(state, settings, now, success=action == "ok")
            assert state.state == expected, f"step {number}"


@pytest.mark.parametrize(
    ("settings", "steps"), [(CONSECUTIVE, CONSECUTIVE_WALK), (RATIO, RATIO_WALK)], ids=["consecutive", "ratio"]
)
def test_breaker_walk_through(settings: BreakerSettings, steps: list[tuple[str, float, object]]) -> None:
    """The breaker opens, cools down, probes once and closes or re-opens as each step expects."""
    _walk(settings, steps)


def test_reopening_sets_a_new_opened_at() -> None:
    """A failed probe re-opens the breaker with opened_at equal to the failure time."""
    state = BreakerState(state="open", opened_at=0.0)
    _, state = allow(state, CONSECUTIVE, 5.0)
    state = record(state, CONSECUTIVE, 6.0, success=False)
    assert (state.state, state.opened_at, state.probe_in_flight) == ("open", 6.0, False)


def test_lost_probe_is_replaced_after_another_cooldown() -> None:
    """A probe that never reports back does not block the backend forever."""
    _, state = allow(BreakerState(state="open", opened_at=0.0), CONSECUTIVE, 5.0)
    assert allow(state, CONSECUTIVE, 9.9)[0] is False
    allowed, state = allow(state, CONSECUTIVE, 10.0)
    assert allowed and state.state == "half_open" and state.probe_started_at == 10.0


def test_window_state_stays_bounded() -> None:
    """However many requests are recorded, at most ten buckets are kept."""
    settings = BreakerSettings(failures=10**9, ratio=1.0, window=30, min_requests=10**9, cooldown=30)
    state = CLOSED
    for i in range(5_000):
        state = record(state, settings, i * 0.37, success=i % 3 != 0)
    assert state.state == "closed"
    assert len(state.buckets) <= 10
    assert sum(b[1] for b in state.buckets) <= 30 / 0.37 + 10


def test_closed_allow_returns_the_same_state() -> None:
    """Allowing through a closed breaker costs nothing and changes nothing."""
    assert allow(CLOSED, CONSECUTIVE, 123.0) == (True, CLOSED)
