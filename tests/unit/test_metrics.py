"""Metrics: exact sample lines from a per-app registry, bounded labels, multiprocess aggregation."""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from policies.outcome import Outcome
from proxy.telemetry.labels import OUTCOMES, bounded_label, status_class
from proxy.telemetry.metrics import Metrics, clear_multiprocess_dir, mark_process_dead

ROOT = Path(__file__).resolve().parents[2]
RMB = 'backend="ollama",model="llama3",route="default"'
TIMINGS = {  # Ollama's final chunk, nanoseconds
    "load_duration": 2_000_000_000, "prompt_eval_count": 10, "prompt_eval_duration": 50_000_000,
    "eval_count": 27, "eval_duration": 1_000_000_000,
}


class _Outcome(enum.Enum):
    OK = "ok"
    TIMEOUT = "timeout"


def _lines(metrics: Metrics) -> set[str]:
    body, _ = metrics.render()
    return set(body.decode().splitlines())


def _record_one(m: Metrics, **overrides: object) -> None:
    kwargs: dict[str, object] = dict(
        duration=1.5, upstream_wait=1.5 - 2**-10, ttft=0.2, prompt_tokens=1000, completion_tokens=27,
        ollama_timings=TIMINGS, cloud_price=(2.0, 8.0),
    )
    kwargs.update(overrides)
    m.observe_request("default", "llama3", "ollama", "ok", 200, **kwargs)  # type: ignore[arg-type]


def test_observe_request_writes_request_token_and_latency_samples() -> None:
    """One request yields its count, tokens, latency buckets, TTFT, tokens/s and overhead."""
    m = Metrics()
    _record_one(m)
    lines = _lines(m)
    expected = {
        'proxy_requests_total{backend="ollama",model="llama3",outcome="ok",route="default",status_class="2xx"} 1.0',
        'proxy_tokens_total{backend="ollama",kind="prompt",model="llama3",route="default"} 1000.0',
        'proxy_tokens_total{backend="ollama",kind="completion",model="llama3",route="default"} 27.0',
        'proxy_request_duration_seconds_bucket{backend="ollama",le="1.0",model="llama3",route="default"} 0.0',
        'proxy_request_duration_seconds_bucket{backend="ollama",le="2.5",model="llama3",route="default"} 1.0',
        f"proxy_request_duration_seconds_sum{{{RMB}}} 1.5",
        f"proxy_time_to_first_token_seconds_sum{{{RMB}}} 0.2",
        # (27 - 1) tokens over (1.5 - 0.2) s after the first one
        f"proxy_output_tokens_per_second_sum{{{RMB}}} 20.0",
        'proxy_overhead_seconds_bucket{le="0.0005",route="default"} 0.0',
        'proxy_overhead_seconds_bucket{le="0.001",route="default"} 1.0',
        'proxy_overhead_seconds_sum{route="default"} 0.0009765625',
        # 1000 * $2/1M + 27 * $8/1M
        'proxy_cloud_cost_avoided_usd_total{model="llama3",route="default"} 0.002216',
    }
    assert expected <= lines, sorted(expected - lines)


def test_ollama_timings_give_load_cold_start_and_eval_rates() -> None:
    """A 2 s load_duration counts as a cold start; eval rates are tokens per second of eval time."""
    m = Metrics()
    _record_one(m)
    _record_one(m, ollama_timings={**TIMINGS, "load_duration": 20_000_000})  # 20 ms: model was warm
    lines = _lines(m)
    assert 'proxy_ollama_cold_starts_total{backend="ollama",model="llama3"} 1.0' in lines
    assert 'proxy_ollama_load_duration_seconds_count{backend="ollama",model="llama3"} 2.0' in lines
    assert 'proxy_ollama_load_duration_seconds_bucket{backend="ollama",le="0.05",model="llama3"} 1.0' in lines
    assert 'proxy_ollama_prompt_eval_tokens_per_second_sum{backend="ollama",model="llama3"} 400.0' in lines
    assert 'proxy_ollama_eval_tokens_per_second_sum{backend="ollama",model="llama3"} 54.0' in lines


def test_failed_request_counts_outcome_but_no_tokens_per_second() -> None:
    """An error outcome is counted with its status class; no throughput sample, no cost without a price."""
    m = Metrics()
    m.observe_request("default", "llama3", "ollama", _Outcome.TIMEOUT, 504, duration=30.0, upstream_wait=30.0,
                      completion_tokens=3)
    lines = _lines(m)
    assert 'proxy_requests_total{backend="ollama",model="llama3",outcome="timeout",route="default",' \
           'status_class="5xx"} 1.0' in lines
    assert f"proxy_output_tokens_per_second_count{{{RMB}}} 0.0" in lines
    assert not any(line.startswith("proxy_cloud_cost_avoided_usd_total{") for line in lines)


def test_unknown_outcome_and_status_are_bounded() -> None:
    """Free text in outcome/reason labels collapses to "other"; so do odd status codes."""
    m = Metrics()
    m.observe_request("default", "llama3", "ollama", "weird", 999, duration=0.1, upstream_wait=0.1)
    m.fallback("default", "a", "b", "something the client said")
    m.auth_failure("bad key abc123")
    lines = _lines(m)
    assert 'proxy_requests_total{backend="ollama",model="llama3",outcome="other",route="default",' \
           'status_class="other"} 1.0' in lines
    assert 'proxy_fallbacks_total{from_backend="a",reason="other",route="default",to_backend="b"} 1.0' in lines
    assert 'proxy_auth_failures_total{reason="other"} 1.0' in lines


@pytest.mark.parametrize(("value", "expected"), [
    ("ok", "ok"), (_Outcome.TIMEOUT, "timeout"), ("5xx", "5xx"), ("rejected", "rejected"),
    ("OK", "other"), ("", "other"), ("llama3:latest", "other"),
])
def test_bounded_label_keeps_only_allowed_values(value: object, expected: str) -> None:
    """bounded_label passes allowed values (and Enum values) through and maps the rest to other."""
    assert bounded_label(value, OUTCOMES) == expected


@pytest.mark.parametrize(("status", "expected"), [
    (200, "2xx"), (204, "2xx"), (302, "3xx"), (404, "4xx"), (429, "4xx"), (502, "5xx"), (599, "5xx"),
    (99, "other"), (600, "other"), (0, "other"),
])
def test_status_class(status: int, expected: str) -> None:
    """Status codes map to their class."""
    assert status_class(status) == expected


def test_outcomes_match_the_policies_vocabulary() -> None:
    """OUTCOMES is every policies.Outcome value plus the gateway's own "rejected"."""
    assert OUTCOMES == {o.value for o in Outcome} | {"rejected"}
    m = Metrics()
    m.observe_request("default", "llama3", "ollama", Outcome.SERVER_ERROR, 502, duration=0.1, upstream_wait=0.1)
    assert 'proxy_requests_total{backend="ollama",model="llama3",outcome="5xx",route="default",' \
           'status_class="5xx"} 1.0' in _lines(m)


def test_in_flight_gauge_follows_started_and_finished() -> None:
    """request_started/request_finished move the in-flight gauge of the route."""
    m = Metrics()
    m.request_started("default")
    m.request_started("default")
    m.request_finished("default")
    assert 'proxy_in_flight_requests{route="default"} 1.0' in _lines(m)


def test_routing_backend_and_access_events() -> None:
    """Each event method writes its own series."""
    m = Metrics()
    m.fallback("default", "ollama", "cloud", _Outcome.TIMEOUT)
    m.retry("default", "ollama", "connect")
    m.circuit("ollama", "half_open")
    m.circuit("cloud", 2)
    m.backend_up("ollama", False)
    m.split_arm("ab", "small")
    m.shadow("default", "cloud", "ok", duration=0.75, prompt_tokens=5, completion_tokens=7)
    m.shadow("default", "cloud", "error", duration=0.1)
    m.auto_pull("ollama", "llama3", "ok")
    m.auth_failure("invalid")
    m.auth_failure("admin")
    m.rate_limited("app")
    expected = {
        'proxy_fallbacks_total{from_backend="ollama",reason="timeout",route="default",to_backend="cloud"} 1.0',
        'proxy_retries_total{backend="ollama",reason="connect",route="default"} 1.0',
        'proxy_circuit_state{backend="ollama"} 1.0',
        'proxy_circuit_state{backend="cloud"} 2.0',
        'proxy_backend_up{backend="ollama"} 0.0',
        'proxy_split_arm_total{arm="small",route="ab"} 1.0',
        'proxy_shadow_requests_total{backend="cloud",outcome="ok",route="default"} 1.0',
        'proxy_shadow_requests_total{backend="cloud",outcome="error",route="default"} 1.0',
        'proxy_shadow_duration_seconds_sum{backend="cloud",route="default"} 0.85',
        'proxy_shadow_tokens_total{backend="cloud",kind="completion",route="default"} 7.0',
        'proxy_auto_pulls_total{backend="ollama",model="llama3",outcome="ok"} 1.0',
        'proxy_auth_failures_total{reason="invalid"} 1.0',
        'proxy_auth_failures_total{reason="admin"} 1.0',
        'proxy_rate_limited_total{credential="app"} 1.0',
    }
    lines = _lines(m)
    assert expected <= lines, sorted(expected - lines)


def test_circuit_rejects_unknown_state() -> None:
    """A state that is not 0/1/2 or a known name is a programming error."""
    with pytest.raises(ValueError, match="circuit state"):
        Metrics().circuit("ollama", "ajar")


def test_render_returns_prometheus_text_content_type() -> None:
    """render() gives the body and the content type to send as a header."""
    body, content_type = Metrics().render()
    assert content_type.startswith("text/plain; version=")
    assert b"# TYPE proxy_requests_total counter" in body


def test_two_metrics_in_one_process_do_not_collide() -> None:
    """Each Metrics has its own registry: no duplicate-timeseries error, no shared values."""
    first, second = Metrics(), Metrics()
    _record_one(first)
    assert any(line.startswith("proxy_requests_total{") for line in _lines(first))
    assert not any(line.startswith("proxy_requests_total{") for line in _lines(second))


def test_sample_names_cover_every_rendered_metric() -> None:
    """sample_names() lists what render() emits (ignoring the library's _created series)."""
    m = Metrics()
    _record_one(m)
    m.fallback("default", "a", "b", "5xx")
    m.request_started("default")
    rendered = {line.split("{")[0].split(" ")[0] for line in _lines(m) if not line.startswith("#")}
    assert {name for name in rendered if not name.endswith("_created")} <= Metrics.sample_names()
    assert "proxy_requests_total" in Metrics.sample_names()


def test_snapshot_summarises_models_routes_and_backends() -> None:
    """snapshot() gives per-model requests, errors, latency, TTFT, tokens/s, cost; routes; backends."""
    m = Metrics()
    for _ in range(3):
        _record_one(m)
    m.observe_request("default", "llama3", "ollama", "5xx", 502, duration=0.1, upstream_wait=0.1)
    m.fallback("default", "ollama", "cloud", "5xx")
    for arm in ("a", "a", "a", "b"):
        m.split_arm("ab", arm)
    m.circuit("ollama", "open")
    m.backend_up("ollama", True)
    snap = m.snapshot()
    llama = snap["models"]["llama3"]
    assert (llama["requests"], llama["errors"], llama["error_rate"]) == (4.0, 1.0, 0.25)
    assert llama["latency_mean_s"] == pytest.approx(1.15)
    assert 1.0 <= llama["latency_p50_s"] <= 2.5
    assert llama["ttft_mean_s"] == pytest.approx(0.2)
    assert llama["tokens_per_s_mean"] == pytest.approx(20.0)
    assert llama["cost_avoided_usd"] == pytest.approx(3 * 0.002216)
    assert (llama["prompt_tokens"], llama["completion_tokens"]) == (3000.0, 81.0)
    assert snap["routes"]["default"]["fallbacks_by_reason"] == {"5xx": 1.0}
    assert snap["routes"]["ab"]["split_shares"] == {"a": 0.75, "b": 0.25}
    assert snap["backends"]["ollama"] == {"circuit": "open", "up": True}
    json.dumps(snap)  # ready for a JSON endpoint


def test_multiprocess_dir_requires_the_environment_at_import_time(tmp_path: Path) -> None:
    """Asking for multiprocess mode when prometheus_client was imported without it fails loudly."""
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(multiprocess_dir=str(tmp_path))


_WORKER = """
import os, sys
from proxy.telemetry.metrics import Metrics
m = Metrics(multiprocess_dir=os.environ["PROMETHEUS_MULTIPROC_DIR"])
for _ in range(int(sys.argv[1])):
    m.observe_request("default", "llama3", "ollama", "ok", 200, duration=0.5, upstream_wait=0.25,
                      prompt_tokens=10, completion_tokens=20)
m.request_started("default")  # still in flight when the worker exits
m.circuit("ollama", sys.argv[2])
m.flush()  # what the app does every second and at exit
print(os.getpid())
"""

_SCRAPER = """
import json, os
from proxy.telemetry.metrics import Metrics
m = Metrics(multiprocess_dir=os.environ["PROMETHEUS_MULTIPROC_DIR"])
print(json.dumps({"body": m.render()[0].decode(), "snapshot": m.snapshot()}))
"""


def _run(script: str, mp_dir: Path, *args: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_multiprocess_scrape_sums_all_workers(tmp_path: Path) -> None:
    """Two worker processes record requests; a third process renders their sum; dead workers' gauges go."""
    mp_dir = tmp_path / "prom"
    clear_multiprocess_dir(str(mp_dir))
    pid_a = int(_run(_WORKER, mp_dir, "2", "open"))
    int(_run(_WORKER, mp_dir, "3", "closed"))

    scraped = json.loads(_run(_SCRAPER, mp_dir))
    lines = set(scraped["body"].splitlines())
    assert 'proxy_requests_total{backend="ollama",model="llama3",outcome="ok",route="default",' \
           'status_class="2xx"} 5.0' in lines
    assert f"proxy_request_duration_seconds_count{{{RMB}}} 5.0" in lines
    assert 'proxy_tokens_total{backend="ollama",kind="completion",model="llama3",route="default"} 100.0' in lines
    assert 'proxy_in_flight_requests{route="default"} 2.0' in lines  # livesum
    assert 'proxy_circuit_state{backend="ollama"} 2.0' in lines  # livemax: the worst worker
    assert scraped["snapshot"]["models"]["llama3"]["requests"] == 5.0

    mark_process_dead(pid_a, str(mp_dir))
    lines = set(json.loads(_run(_SCRAPER, mp_dir))["body"].splitlines())
    assert 'proxy_in_flight_requests{route="default"} 1.0' in lines
    assert 'proxy_circuit_state{backend="ollama"} 0.0' in lines
    assert f"proxy_request_duration_seconds_count{{{RMB}}} 5.0" in lines  # counters survive the worker


def test_clear_multiprocess_dir_removes_stale_files(tmp_path: Path) -> None:
    """Stale *.db files from a previous run are removed, other files are left alone."""
    (tmp_path / "counter_123.db").write_bytes(b"x")
    (tmp_path / "keep.txt").write_text("x")
    clear_multiprocess_dir(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
