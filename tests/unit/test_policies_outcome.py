"""Fallback, breaker and retry classification of outcomes from policies.outcome."""

from __future__ import annotations

import pytest

from policies import DEFAULT_FALLBACK_ON, RETRYABLE, Outcome, Route, Target
from policies import counts_as_failure, should_fall_back

O = Outcome
DEFAULT = Route(name="r", models=("*",), targets=(Target(backends=("b",), model=None),))
ONLY_CONNECT = Route(
    name="r", models=("*",), targets=(Target(backends=("b",), model=None),), fallback_on=frozenset({O.CONNECT})
)

# outcome: (falls back by default, counts as breaker failure, retryable)
TABLE = {
    O.OK: (False, False, False),
    O.CONNECT: (True, True, True),
    O.TIMEOUT: (True, True, False),
    O.SERVER_ERROR: (True, True, True),
    O.RATE_LIMITED: (True, False, True),
    O.QUEUE_FULL: (True, True, True),
    O.MODEL_NOT_FOUND: (True, False, False),
    O.STREAM_ERROR: (True, True, False),
    O.BROKEN_STREAM: (True, True, False),
    O.BAD_REQUEST: (False, False, False),
    O.UPSTREAM_AUTH: (False, True, False),
    O.CONTEXT_LENGTH: (False, False, False),  # falls back only where a route names it
    O.CLIENT_DISCONNECT: (False, False, False),
}


def test_table_covers_every_outcome() -> None:
    """The truth table below lists every Outcome member."""
    assert set(TABLE) == set(Outcome)


@pytest.mark.parametrize(("outcome", "row"), TABLE.items(), ids=lambda v: str(getattr(v, "value", "")))
def test_outcome_truth_table(outcome: Outcome, row: tuple[bool, bool, bool]) -> None:
    """Each outcome falls back, trips breakers and retries exactly as the table says."""
    falls_back, failure, retryable = row
    assert should_fall_back(outcome, DEFAULT.fallback_on) is falls_back
    assert (outcome in DEFAULT_FALLBACK_ON) is falls_back
    assert counts_as_failure(outcome) is failure
    assert (outcome in RETRYABLE) is retryable


@pytest.mark.parametrize("outcome", list(Outcome))
def test_route_fallback_on_overrides_the_default(outcome: Outcome) -> None:
    """A route's own fallback_on is the whole rule: only the listed outcomes fall back."""
    assert should_fall_back(outcome, ONLY_CONNECT.fallback_on) is (outcome is O.CONNECT)


@pytest.mark.parametrize(
    ("outcome", "value"),
    [(O.SERVER_ERROR, "5xx"), (O.RATE_LIMITED, "429"), (O.QUEUE_FULL, "queue_full"), (O.OK, "ok")],
)
def test_outcome_values_are_the_config_spellings(outcome: Outcome, value: str) -> None:
    """Outcome values are the strings used in fallback_on and metric labels."""
    assert outcome.value == value == str(outcome) == f"{outcome}"
    assert Outcome(value) is outcome
