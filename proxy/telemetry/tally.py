"""Per-request observations kept in plain Python, applied to prometheus-client metrics in one go.

A ``Histogram.observe`` takes two locks and walks the buckets in Python; a fast request makes about
ten observations and increments. Here an observation is one ``bisect`` and two additions to lists
owned by the event loop's thread, and ``Tally.flush`` adds the totals to the real metric children:
one locked increment per bucket that moved, whatever the traffic since the last flush.

``Tally`` is also a collector: registered in a registry *before* the metrics, it flushes whenever
that registry is collected (``/metrics``, the dashboard, ``get_sample_value`` in tests), so what is
read is always up to date. With ``--workers N`` a scrape reads every worker's files, so each worker
also flushes on a timer (``proxy.app``) and at exit.

The bucket totals go to the child's ``_sum`` and ``_buckets`` values, which prometheus-client has
kept under those names for years; if a future version drops them, ``histogram()`` hands back the
child itself and every observation goes through ``observe`` as before (``tests/unit/test_metrics``
compares both paths' exposition).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

__all__ = ["Tally"]


class _Histogram:
    __slots__ = ("child", "bounds", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds = tuple(child._upper_bounds)  # ends with +Inf: every value has a bucket
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value, like observe()
        self.total += value

    def flush(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        child = self.child
        child._sum.inc(self.total)
        for i, n in enumerate(counts):
            if n:
                child._buckets[i].inc(n)
        self.counts = [0] * len(counts)
        self.total = 0.0


class _Counter:
    __slots__ = ("child", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.total = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.total += amount

    def flush(self) -> None:
        if self.total:
            self.child.inc(self.total)
            self.total = 0.0


class _Gauge:
    """Up and down counts (requests in flight): the current value is set on flush."""

    __slots__ = ("child", "value", "moved")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.value = 0.0
        self.moved = False

    def inc(self) -> None:
        self.value += 1
        self.moved = True

    def dec(self) -> None:
        self.value -= 1
        self.moved = True

    def flush(self) -> None:
        if self.moved:
            self.moved = False
            self.child.set(self.value)


class Tally:
    """Accumulators for metric children; ``flush`` applies them. Use from one thread (the loop's)."""

    def __init__(self) -> None:
        self._parts: list[_Histogram | _Counter | _Gauge] = []

    def histogram(self, child: Any) -> Any:
        """Something with ``observe(value)`` that lands in ``child`` (a Histogram's labelled child)."""
        if not all(hasattr(child, name) for name in ("_upper_bounds", "_sum", "_buckets")):
            return child
        part = _Histogram(child)
        self._parts.append(part)
        return part

    def counter(self, child: Any) -> _Counter:
        part = _Counter(child)
        self._parts.append(part)
        return part

    def gauge(self, child: Any) -> _Gauge:
        part = _Gauge(child)
        self._parts.append(part)
        return part

    def flush(self) -> None:
        for part in self._parts:
            part.flush()

    # the collector protocol: no metrics of its own, a flush before the others are read
    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        self.flush()
        return []
