"""Exact figures from the pure pieces: latency buckets and quantiles, circuit series removal, model spellings."""

from __future__ import annotations

import pytest

from policies.names import model_spellings
from proxy.telemetry.families import LATENCY_BUCKETS
from proxy.telemetry.labels import FALLBACK_REASONS
from proxy.telemetry.metrics import Metrics


def _record(m: Metrics, seconds: float, n: int) -> None:
    for _ in range(n):
        m.observe_request("chat", "llama3.2", "local", "ok", 200, duration=seconds, upstream_wait=seconds,
                          ttft=seconds)


def test_p50_of_four_millisecond_requests_reads_about_four_milliseconds() -> None:
    """Ten 4 ms requests: p50 interpolates inside the 2.5-5 ms bucket (3.75 ms), not inside 0-50 ms (25 ms)."""
    m = Metrics()
    _record(m, 0.004, 10)
    row = m.snapshot()["models"]["llama3.2"]
    assert row["latency_p50_s"] == pytest.approx(0.00375)
    assert row["latency_p95_s"] == pytest.approx(0.004875)


def test_latency_and_ttft_buckets_run_from_half_a_millisecond_to_five_minutes() -> None:
    """Every latency histogram (total, TTFT, shadow) exposes the same bounds, 0.5 ms first and 300 s last."""
    assert LATENCY_BUCKETS[0] == 0.0005 and LATENCY_BUCKETS[-1] == 300.0
    m = Metrics()
    _record(m, 0.0012, 1)
    m.shadow("chat", "local", "ok", duration=0.0012)
    body = m.render()[0].decode()
    for family, labels in (("proxy_request_duration_seconds", 'backend="local",le="{}",model="llama3.2",route="chat"'),
                           ("proxy_time_to_first_token_seconds", 'backend="local",le="{}",model="llama3.2",route="chat"'),
                           ("proxy_shadow_duration_seconds", 'backend="local",le="{}",route="chat"')):
        assert f"{family}_bucket{{{labels.format('0.001')}}} 0.0" in body
        assert f"{family}_bucket{{{labels.format('0.0025')}}} 1.0" in body
        bounds = [line for line in body.splitlines() if line.startswith(family + "_bucket")]
        assert len(bounds) == len(LATENCY_BUCKETS) + 1  # and +Inf


def test_circuit_open_is_a_bounded_fallback_reason() -> None:
    """``circuit_open`` is kept as a reason; anything else a caller passes is ``other``."""
    assert "circuit_open" in FALLBACK_REASONS
    m = Metrics()
    m.fallback("chat", "local", "cloud", "circuit_open")
    m.fallback("chat", "local", "cloud", "whatever")
    body = m.render()[0].decode()
    assert 'proxy_fallbacks_total{from_backend="local",reason="circuit_open",route="chat",to_backend="cloud"} 1.0' in body
    assert 'proxy_fallbacks_total{from_backend="local",reason="other",route="chat",to_backend="cloud"} 1.0' in body


def test_a_removed_backend_loses_its_circuit_series_and_can_come_back() -> None:
    """``circuit(name, None)`` drops the series; a backend re-added later gets a fresh one."""
    m = Metrics()
    m.circuit("gpu1", "open")
    m.circuit("gpu2", "closed")
    m.circuit("gpu1", None)
    body = m.render()[0].decode()
    assert 'proxy_circuit_state{backend="gpu1"}' not in body
    assert 'proxy_circuit_state{backend="gpu2"} 0.0' in body
    m.circuit("gpu1", "half_open")
    assert 'proxy_circuit_state{backend="gpu1"} 1.0' in m.render()[0].decode()


@pytest.mark.parametrize(("name", "spellings"), [
    ("llama3.2", ("llama3.2", "llama3.2:latest")),
    ("llama3.2:latest", ("llama3.2:latest", "llama3.2")),
    ("llama3.2:3b", ("llama3.2:3b", "llama3.2:3b")),
    ("hf.co/org/model", ("hf.co/org/model", "hf.co/org/model:latest")),
    ("registry.local:5000/team/model", ("registry.local:5000/team/model", "registry.local:5000/team/model:latest")),
    ("registry.local:5000/team/model:q4", ("registry.local:5000/team/model:q4",) * 2),
    (":latest", (":latest", ":latest")),
    ("", ("", "")),
])
def test_model_spellings(name: str, spellings: tuple[str, str]) -> None:
    """``name`` and ``name:latest`` are each other's spelling; another tag or a registry port is not a tag."""
    assert model_spellings(name) == spellings
