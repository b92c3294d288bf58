"""The last hour as the gateway saw it: per-minute buckets of finished requests, for the dashboard.

``Series.record`` is called by ``Accounting.finish`` for every routed request; ``snapshot`` turns
the buckets into charts (requests and errors per backend, TTFT p50/p95, tokens per second,
fallbacks, 429s) and ``arms`` into the migration view (per route and split arm: requests, errors,
latency and TTFT percentiles, tokens/s, cost avoided). No Prometheus is needed.

Memory is bounded whatever the traffic: at most ``span / step`` buckets (60 by default), labels are
configured names (routes, arms, backends) passed by the caller, and each bucket keeps at most
``samples`` latency samples per key (later ones overwrite earlier ones in turn), so percentiles are
exact up to that many requests per minute and per key, and a fair sample beyond. The clock is
injected (``now``), in seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["Series", "percentile"]

_NOT_ERRORS = frozenset({"ok", "client_disconnect"})


def percentile(q: float, values: Iterable[float]) -> float | None:
    """The ``q`` quantile (0..1) of ``values``, interpolated between the closest ranks; None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class _Samples:
    """At most ``cap`` values; once full, each new value replaces the oldest one."""

    __slots__ = ("cap", "values", "seen")

    def __init__(self, cap: int) -> None:
        self.cap, self.values, self.seen = cap, [], 0

    def add(self, value: float) -> None:
        if len(self.values) < self.cap:
            self.values.append(value)
        else:
            self.values[self.seen % self.cap] = value
        self.seen += 1


@dataclass(slots=True)
class _Figures:
    """Totals of one key (a backend, or a route's arm) within one bucket."""

    cap: int
    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    fallbacks: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    generating_s: float = 0.0  # time spent producing completion tokens (tokens/s of answers)
    cost_usd: float = 0.0
    durations: _Samples = field(init=False)
    ttfts: _Samples = field(init=False)

    def __post_init__(self) -> None:
        self.durations, self.ttfts = _Samples(self.cap), _Samples(self.cap)


@dataclass(slots=True)
class _Bucket:
    start: float
    backends: dict[str, _Figures] = field(default_factory=dict)
    arms: dict[tuple[str, str], _Figures] = field(default_factory=dict)
    all: _Figures | None = None


class Series:
    """Per-``step`` buckets of the last ``span`` seconds of finished requests."""

    def __init__(self, *, step: float = 60.0, span: float = 3600.0, samples: int = 128,
                 now: Callable[[], float] = time.time) -> None:
        if step <= 0 or span < step:
            raise ValueError("step must be > 0 and span >= step")
        self.step, self.slots, self.samples, self.now = step, int(span // step), samples, now
        self._buckets: dict[int, _Bucket] = {}  # slot number (start // step) -> bucket

    def _bucket(self) -> _Bucket:
        slot = int(self.now() // self.step)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = _Bucket(start=slot * self.step, all=_Figures(self.samples))
            for old in [s for s in self._buckets if s <= slot - self.slots]:
                del self._buckets[old]  # older than the span
        return bucket

    def record(self, *, route: str, arm: str, backend: str, outcome: str, status: int, duration: float,
               ttft: float | None, prompt_tokens: int, completion_tokens: int, fallbacks: int,
               cost_usd: float = 0.0) -> None:
        """One finished request (``arm``: the split target first chosen; ``backend``: who answered)."""
        bucket = self._bucket()
        assert bucket.all is not None
        for figures in (bucket.all, _get(bucket.backends, backend, self.samples),
                        _get(bucket.arms, (route, arm), self.samples)):
            figures.requests += 1
            if outcome not in _NOT_ERRORS:
                figures.errors += 1
            if status == 429:
                figures.rate_limited += 1
            figures.fallbacks += fallbacks
            figures.prompt_tokens += prompt_tokens
            figures.completion_tokens += completion_tokens
            figures.cost_usd += cost_usd
            figures.durations.add(duration)
            if ttft is not None:
                figures.ttfts.add(ttft)
            if completion_tokens and outcome == "ok":
                figures.generating_s += max(duration - (ttft or 0.0), 0.0)

    def refused(self, *, outcome: str, status: int) -> None:
        """A model request refused before routing (a rate limit, an unknown model, a bad body):
        in the totals, the errors and the 429s, on no backend or arm."""
        bucket = self._bucket()
        assert bucket.all is not None
        bucket.all.requests += 1
        if outcome not in _NOT_ERRORS:
            bucket.all.errors += 1
        if status == 429:
            bucket.all.rate_limited += 1

    def snapshot(self) -> dict[str, object]:
        """The charts' data: one value per bucket, oldest first, ending with the current bucket."""
        last = int(self.now() // self.step)
        slots = range(last - self.slots + 1, last + 1)
        buckets = [self._buckets.get(s) for s in slots]
        names = sorted({name for b in buckets if b is not None for name in b.backends})
        empty = _Figures(0)

        def every(pick: Callable[[_Figures], object]) -> list[object]:
            return [pick(b.all) if b is not None and b.all is not None else pick(empty) for b in buckets]

        return {
            "step_s": self.step,
            "times": [s * self.step for s in slots],
            "requests": every(lambda f: f.requests),
            "errors": every(lambda f: f.errors),
            "backends": {name: {
                "requests": [b.backends[name].requests if b is not None and name in b.backends else 0 for b in buckets],
                "errors": [b.backends[name].errors if b is not None and name in b.backends else 0 for b in buckets],
            } for name in names},
            "ttft_p50_s": every(lambda f: percentile(0.5, f.ttfts.values)),
            "ttft_p95_s": every(lambda f: percentile(0.95, f.ttfts.values)),
            "tokens_per_s": every(lambda f: f.completion_tokens / self.step),
            "fallbacks": every(lambda f: f.fallbacks),
            "rate_limited": every(lambda f: f.rate_limited),
        }

    def arms(self) -> dict[str, dict[str, dict[str, object]]]:
        """Per route and arm, over the whole span: the migration view's figures."""
        last = int(self.now() // self.step)
        merged: dict[tuple[str, str], list[_Figures]] = {}
        for slot, bucket in self._buckets.items():
            if slot > last - self.slots:
                for key, figures in bucket.arms.items():
                    merged.setdefault(key, []).append(figures)
        out: dict[str, dict[str, dict[str, object]]] = {}
        for (route, arm), parts in sorted(merged.items()):
            requests = sum(f.requests for f in parts)
            errors = sum(f.errors for f in parts)
            durations = [v for f in parts for v in f.durations.values]
            ttfts = [v for f in parts for v in f.ttfts.values]
            tokens = sum(f.completion_tokens for f in parts)
            generating = sum(f.generating_s for f in parts)
            out.setdefault(route, {})[arm] = {
                "requests": requests, "errors": errors, "error_rate": errors / requests if requests else None,
                "latency_p50_s": percentile(0.5, durations), "latency_p95_s": percentile(0.95, durations),
                "ttft_p50_s": percentile(0.5, ttfts), "ttft_p95_s": percentile(0.95, ttfts),
                "prompt_tokens": sum(f.prompt_tokens for f in parts), "completion_tokens": tokens,
                "tokens_per_s": tokens / generating if generating > 0 else None,
                "fallbacks": sum(f.fallbacks for f in parts),
                "cost_avoided_usd": sum(f.cost_usd for f in parts),
            }
        return out


def _get(table: dict, key: object, cap: int) -> _Figures:  # type: ignore[type-arg]
    figures = table.get(key)
    if figures is None:
        figures = table[key] = _Figures(cap)
    return figures
