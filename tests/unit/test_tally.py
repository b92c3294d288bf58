"""The tally lands exactly where direct prometheus-client calls would: same exposition, byte for byte."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from proxy.telemetry.tally import Tally

BUCKETS = (0.1, 0.5, 1.0, 2.5)
VALUES = (0.0, 0.05, 0.1, 0.1000001, 0.5, 0.7, 1.0, 2.5, 2.6, 100.0, -1.0)  # bounds, between, beyond


def _metrics(registry: CollectorRegistry) -> tuple[Histogram, Counter, Gauge]:
    return (Histogram("h_seconds", "h", ["route"], buckets=BUCKETS, registry=registry),
            Counter("c", "c", ["route"], registry=registry),
            Gauge("g", "g", ["route"], registry=registry))


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_tallied_observations_expose_exactly_like_direct_ones() -> None:
    direct = CollectorRegistry()
    h, c, g = _metrics(direct)
    tallied = CollectorRegistry()
    tally = Tally()
    tallied.register(tally)  # first: collecting the registry flushes
    th, tc, tg = _metrics(tallied)
    parts = tally.histogram(th.labels("r")), tally.counter(tc.labels("r")), tally.gauge(tg.labels("r"))
    for value in VALUES:
        h.labels("r").observe(value)
        parts[0].observe(value)
    for amount in (1, 2.5, 40):
        c.labels("r").inc(amount)
        parts[1].inc(amount)
    for step in ("inc", "inc", "inc", "dec"):
        getattr(g.labels("r"), step)()
        getattr(parts[2], step)()
    assert _exposition(tallied) == _exposition(direct)
    # a second round on top of the first, collected again
    h.labels("r").observe(0.3)
    parts[0].observe(0.3)
    parts[2].dec()
    g.labels("r").dec()
    assert _exposition(tallied) == _exposition(direct)
    assert tallied.get_sample_value("h_seconds_count", {"route": "r"}) == len(VALUES) + 1


def test_nothing_reaches_the_metric_before_a_flush() -> None:
    registry = CollectorRegistry()
    h, _, _ = _metrics(registry)
    tally = Tally()
    part = tally.histogram(h.labels("r"))
    part.observe(0.2)
    assert registry.get_sample_value("h_seconds_count", {"route": "r"}) == 0.0
    tally.flush()
    assert registry.get_sample_value("h_seconds_count", {"route": "r"}) == 1.0
    tally.flush()  # nothing pending: nothing added twice
    assert registry.get_sample_value("h_seconds_count", {"route": "r"}) == 1.0


def test_a_child_without_the_expected_internals_is_observed_directly() -> None:
    seen: list[float] = []

    class Plain:
        def observe(self, value: float) -> None:
            seen.append(value)

    part = Tally().histogram(Plain())
    part.observe(1.5)
    assert seen == [1.5]
