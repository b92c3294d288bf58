"""A per-backend circuit breaker as a pure state machine: values in, values out, ``now`` injected.

The router keeps one ``BreakerState`` per backend, asks ``allow`` before sending, and calls
``record`` with the result (``success=not counts_as_failure(outcome)``; a client disconnect need
not be recorded at all).

    closed ──(failures in a row, or failure ratio over the window)──▶ open
    open ──(cooldown elapsed; allow() lets exactly one probe through)──▶ half_open
    half_open ──probe succeeds──▶ closed (counts reset)
    half_open ──probe fails──▶ open (new opened_at)

The sliding window is ten time buckets, so each call costs O(1) whatever the traffic. Pure:
stdlib only, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from policies.model import BreakerSettings

__all__ = ["CLOSED", "BreakerState", "allow", "record"]

_BUCKETS = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerState:
    """One backend's breaker; ``buckets`` holds ``(bucket_index, requests, failures)`` triples."""

    state: Literal["closed", "open", "half_open"] = "closed"
    opened_at: float = 0.0
    consecutive: int = 0  # failures in a row while closed
    buckets: tuple[tuple[int, int, int], ...] = ()  # at most _BUCKETS, oldest first
    probe_in_flight: bool = False
    probe_started_at: float = 0.0


CLOSED = BreakerState()
"""The initial state: closed, nothing counted."""


def allow(state: BreakerState, settings: BreakerSettings, now: float) -> tuple[bool, BreakerState]:
    """Return whether a request may go to the backend now, and the state to keep.

    Closed always allows. Open refuses until ``cooldown`` has passed since ``opened_at``, then turns
    half-open and lets exactly one probe through. While that probe is in flight everything else is
    refused; a probe that never reports back is replaced by a new one after another ``cooldown``.
    """
    if state.state == "closed":
        return True, state
    if state.state == "open":
        if now - state.opened_at < settings.cooldown:
            return False, state
        return True, replace(state, state="half_open", probe_in_flight=True, probe_started_at=now)
    if state.probe_in_flight and now - state.probe_started_at < settings.cooldown:
        return False, state
    return True, replace(state, probe_in_flight=True, probe_started_at=now)


def record(state: BreakerState, settings: BreakerSettings, now: float, *, success: bool) -> BreakerState:
    """Return the state after one request to the backend finished (``success`` or not).

    Closed opens on a failure that makes ``failures`` in a row, or that leaves at least
    ``min_requests`` requests in the window of which a share >= ``ratio`` failed. A half-open probe's success
    closes and resets; its failure re-opens with ``opened_at=now``. Results arriving while open
    (requests admitted before it opened) change nothing.
    """
    if state.state == "open":
        return state
    if state.state == "half_open":
        return CLOSED if success else _opened(now)
    consecutive = 0 if success else state.consecutive + 1
    buckets = _add(state.buckets, settings, now, failed=not success)
    # Only a failure can open the breaker: a success never makes a backend look worse.
    if not success:
        requests = sum(b[1] for b in buckets)
        failures = sum(b[2] for b in buckets)
        if consecutive >= settings.failures or (
            requests >= settings.min_requests and failures >= settings.ratio * requests
        ):
            return _opened(now)
    # closed stays closed: built directly, as this runs once per request (replace() is slow)
    return BreakerState(consecutive=consecutive, buckets=buckets)


def _opened(now: float) -> BreakerState:
    return BreakerState(state="open", opened_at=now)


def _add(
    buckets: tuple[tuple[int, int, int], ...],
    settings: BreakerSettings,
    now: float,
    *,
    failed: bool,
) -> tuple[tuple[int, int, int], ...]:
    width = settings.window / _BUCKETS
    current = math.floor(now / width) if width > 0 else 0
    if buckets and buckets[-1][0] == current and buckets[0][0] > current - _BUCKETS:
        # the common case, once per request: nothing expired, the current bucket exists
        index, requests, failures = buckets[-1]
        return (*buckets[:-1], (index, requests + 1, failures + failed))
    kept = [b for b in buckets if b[0] > current - _BUCKETS]
    if kept and kept[-1][0] == current:
        index, requests, failures = kept[-1]
        kept[-1] = (index, requests + 1, failures + int(failed))
    else:
        kept.append((current, 1, int(failed)))
    return tuple(kept[-_BUCKETS:])
