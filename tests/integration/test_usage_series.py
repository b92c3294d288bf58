"""The last hour, the migration view and per-credential usage, exactly, after a known sequence of requests."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client import generate_latest

from proxy.keys import METRICS
from tests.fakes.ollama import ok, status

ADMIN = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}


class _Rolls:
    """The split's dice: each request draws a roll (the arm) and a shadow roll, in that order."""

    def __init__(self, rolls: list[float]) -> None:
        self.rolls = list(rolls)

    def random(self) -> float:
        return self.rolls.pop(0) if self.rolls else 0.0  # retry jitter, after the planned rolls


async def _split_gateway(start_fake: Any, start_gateway: Any, *, shadow: bool = False) -> tuple[Any, Any, Any]:
    a = await start_fake(models=["llama3.2:latest"])
    b = await start_fake(models=["qwen2.5:7b"])
    b.fake.script("/api/chat", ok("one"), ok("two"), status(400, "bad prompt"))
    rolls: list[float] = []
    for arm in "AAAAABBB":  # A: roll 0.1 (< weight 0.5), B: roll 0.9; every shadow roll 0.0 (< share)
        rolls += [0.1 if arm == "A" else 0.9, 0.0]
    route: dict[str, Any] = {"name": "chat", "models": ["gpt-4o"], "sticky": [],
                             "targets": [{"backend": "a", "model": "llama3.2:latest", "weight": 1},
                                         {"backend": "b", "model": "qwen2.5:7b", "weight": 1}]}
    if shadow:
        route["shadow"] = {"backend": "b", "model": "qwen2.5:7b", "share": 1.0}
    gateway = await start_gateway({
        "backends": [{"name": "a", "type": "ollama", "url": a.url}, {"name": "b", "type": "ollama", "url": b.url}],
        "routes": [route],
        "auth": {"admin": {"username": "admin", "password": "s3cret"},
                 "credentials": [{"name": "team-a", "api_key": "sk-team-a"}, {"name": "team-b", "api_key": "sk-team-b"}]},
        "metrics": {"cloud_prices": {"gpt-4o": {"input": 2.5, "output": 10.0}}},
        "logging": {"requests": False},
    }, rng=_Rolls(rolls))
    return gateway, a, b


async def _eight_requests(gateway: Any) -> None:
    """5 streams to arm A as team-a, then 3 to arm B as team-b (the third one refused by the backend)."""
    for key, n in (("sk-team-a", 5), ("sk-team-b", 3)):
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
        async with client:
            for i in range(n):
                try:
                    stream = await client.chat.completions.create(
                        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
                    assert [c async for c in stream]
                except openai.BadRequestError:
                    assert (key, i) == ("sk-team-b", 2)


async def _stats(gateway: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/admin/stats", headers=ADMIN) as resp:
            assert resp.status == 200
            return await resp.json()


async def test_series_and_migration_view_count_five_requests_to_a_and_three_to_b_with_one_error(start_fake, start_gateway):
    """5 requests to arm A and 3 to arm B (one refused): the current minute and the migration view say exactly that."""
    gateway, _, _ = await _split_gateway(start_fake, start_gateway)
    await _eight_requests(gateway)
    stats = await _stats(gateway)

    series = stats["series"]
    assert series["step_s"] == 60.0
    assert len(series["times"]) == 60
    assert series["times"] == sorted(series["times"])
    assert series["requests"][-1] == 8 and sum(series["requests"]) == 8
    assert series["errors"][-1] == 1 and sum(series["errors"]) == 1
    assert series["backends"] == {
        "a": {"requests": [0] * 59 + [5], "errors": [0] * 60},
        "b": {"requests": [0] * 59 + [3], "errors": [0] * 59 + [1]},
    }
    assert series["fallbacks"][-1] == 0 and series["rate_limited"][-1] == 0
    # the fake counts a token per word: 5 x "Hello world" on A, "one" and "two" on B
    assert series["tokens_per_s"][-1] == pytest.approx(12 / 60)
    assert series["ttft_p50_s"][-1] is not None and series["ttft_p95_s"][-1] >= series["ttft_p50_s"][-1]
    assert series["ttft_p50_s"][:-1] == [None] * 59

    [view] = stats["migration"]
    assert view["route"] == "chat" and view["requests"] == 8 and view["shadow"] is None
    arm_a, arm_b = view["arms"]
    assert (arm_a["arm"], arm_a["backends"], arm_a["weight"], arm_a["share"]) == ("a:llama3.2:latest", ["a"], 0.5, 5 / 8)
    assert (arm_b["arm"], arm_b["backends"], arm_b["weight"], arm_b["share"]) == ("b:qwen2.5:7b", ["b"], 0.5, 3 / 8)
    assert (arm_a["requests"], arm_a["errors"], arm_a["error_rate"]) == (5, 0, 0.0)
    assert (arm_b["requests"], arm_b["errors"], arm_b["error_rate"]) == (3, 1, 1 / 3)
    assert (arm_a["prompt_tokens"], arm_a["completion_tokens"]) == (35, 10)
    assert (arm_b["prompt_tokens"], arm_b["completion_tokens"]) == (14, 2)
    # cost avoided: the cloud price of the tokens served locally ($2.5 / $10 per million)
    assert arm_a["cost_avoided_usd"] == pytest.approx((35 * 2.5 + 10 * 10.0) / 1e6)
    assert arm_b["cost_avoided_usd"] == pytest.approx((14 * 2.5 + 2 * 10.0) / 1e6)
    for arm in (arm_a, arm_b):
        assert 0 < arm["latency_p50_s"] <= arm["latency_p95_s"]
        assert arm["tokens_per_s"] > 0
    # the lifetime split counter agrees
    assert stats["routes"]["chat"]["split_shares"] == {"a:llama3.2:latest": 5 / 8, "b:qwen2.5:7b": 3 / 8}


async def test_credential_usage_is_counted_per_configured_credential(start_fake, start_gateway):
    """Requests and tokens per credential name, in /metrics and /admin/stats."""
    gateway, _, _ = await _split_gateway(start_fake, start_gateway)
    await _eight_requests(gateway)
    stats = await _stats(gateway)
    assert stats["credentials"] == {
        "team-a": {"requests": 5.0, "prompt_tokens": 35.0, "completion_tokens": 10.0},
        "team-b": {"requests": 3.0, "prompt_tokens": 14.0, "completion_tokens": 2.0},
    }
    text = generate_latest(gateway.app[METRICS].registry).decode()
    assert 'proxy_credential_requests_total{credential="team-a"} 5.0' in text
    assert 'proxy_credential_requests_total{credential="team-b"} 3.0' in text
    assert 'proxy_credential_tokens_total{credential="team-a",kind="completion"} 10.0' in text
    assert 'proxy_credential_tokens_total{credential="team-b",kind="prompt"} 14.0' in text


async def test_bad_keys_add_no_credential_series(start_fake, start_gateway):
    """A hundred unknown keys are refused and never become a credential label."""
    gateway, _, _ = await _split_gateway(start_fake, start_gateway)
    async with aiohttp.ClientSession() as session:
        for i in range(100):
            async with session.post(gateway.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": []},
                                    headers={"Authorization": f"Bearer sk-guess-{i}"}) as resp:
                assert resp.status == 401
    text = generate_latest(gateway.app[METRICS].registry).decode()
    assert "proxy_credential_requests_total{" not in text
    assert (await _stats(gateway))["credentials"] == {}


async def test_shadow_results_reach_the_migration_view(start_fake, start_gateway):
    """With a shadow on every request, the route's view lists the shadow's requests, outcomes and tokens."""
    gateway, _, b = await _split_gateway(start_fake, start_gateway, shadow=True)
    b.fake.script("/api/chat", ok("one"))
    await _eight_requests(gateway)
    for _ in range(200):  # shadows run in the background
        shadows = (await _stats(gateway))["migration"][0]["shadows"]
        if shadows and shadows[0]["requests"] == 8:
            break
        await asyncio.sleep(0.05)
    [view] = (await _stats(gateway))["migration"]
    assert view["shadow"] == "b:qwen2.5:7b"
    [shadow] = view["shadows"]
    assert (shadow["route"], shadow["backend"], shadow["requests"], shadow["outcomes"]) == ("chat", "b", 8.0, {"ok": 8.0})
    assert (shadow["prompt_tokens"], shadow["completion_tokens"]) == (56.0, 8.0)
    assert shadow["duration_mean_s"] > 0


async def test_rate_limited_and_unknown_model_requests_reach_the_last_hour(start_fake, start_gateway):
    """Refused before routing: a 429 from the credential's limit and a 404 count as requests and errors, on no backend."""
    fake = await start_fake(models=["llama3.2:latest"])
    gateway = await start_gateway({
        "backends": [{"name": "a", "type": "ollama", "url": fake.url}],
        "routes": [{"name": "chat", "models": ["gpt-4o"], "targets": [{"backend": "a", "model": "llama3.2:latest"}]}],
        "auth": {"admin": {"username": "admin", "password": "s3cret"},
                 "credentials": [{"name": "slow", "api_key": "sk-slow", "requests_per_minute": 1}]},
        "logging": {"requests": False},
    })
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-slow", max_retries=0) as client:
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    series = (await _stats(gateway))["series"]
    assert (series["requests"][-1], series["errors"][-1], series["rate_limited"][-1]) == (2, 1, 1)
    assert series["backends"] == {"a": {"requests": [0] * 59 + [1], "errors": [0] * 60}}
    assert (await _stats(gateway))["credentials"] == {
        "slow": {"requests": 2.0, "prompt_tokens": 7.0, "completion_tokens": 2.0}}


async def test_a_fallback_is_counted_once_in_the_minute_and_on_the_arm(start_fake, start_gateway):
    """The primary answers 500, the fallback answers: one request, one fallback, answered by b, no error."""
    a = await start_fake(models=["llama3.2:latest"])
    b = await start_fake(models=["llama3.2:latest"])
    a.fake.script("/api/chat", status(500, "runner crashed"))
    gateway = await start_gateway({
        "backends": [{"name": "a", "type": "ollama", "url": a.url}, {"name": "b", "type": "ollama", "url": b.url}],
        "routes": [{"name": "chat", "models": ["gpt-4o"], "retry": {"attempts": 0},
                    "targets": [{"backend": "a", "model": "llama3.2:latest"}],
                    "fallback": [{"backend": "b", "model": "llama3.2:latest"}]}],
        "auth": {"admin": {"username": "admin", "password": "s3cret"}},
        "logging": {"requests": False},
    })
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="-", max_retries=0) as client:
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    stats = await _stats(gateway)
    series = stats["series"]
    assert (series["requests"][-1], series["errors"][-1], series["fallbacks"][-1]) == (1, 0, 1)
    assert series["backends"] == {"b": {"requests": [0] * 59 + [1], "errors": [0] * 60}}
    assert stats["migration"] == []  # one target, no shadow: nothing to compare


def test_series_memory_is_bounded_by_the_span():
    """An hour of buckets at most, whatever the traffic; old minutes drop out of the charts."""
    from proxy.telemetry.series import Series

    clock = [0.0]
    series = Series(step=60.0, span=3600.0, samples=4, now=lambda: clock[0])
    for minute in range(200):
        clock[0] = minute * 60.0
        for _ in range(10):
            series.record(route="r", arm="x", backend="a", outcome="ok", status=200, duration=0.1, ttft=0.05,
                          prompt_tokens=1, completion_tokens=2, fallbacks=0)
    assert len(series._buckets) == 60
    assert all(len(b.all.durations.values) == 4 for b in series._buckets.values())
    snap = series.snapshot()
    assert snap["requests"] == [10] * 60 and snap["times"][0] == 140 * 60.0
    assert series.arms()["r"]["x"]["requests"] == 600


@pytest.mark.parametrize(("q", "values", "expected"), [
    (0.5, [], None), (0.5, [3.0], 3.0), (0.95, [3.0], 3.0), (0.5, [4.0, 1.0, 3.0, 2.0], 2.5),
    (0.95, [float(v) for v in range(1, 21)], 19.05), (0.0, [2.0, 1.0], 1.0), (1.0, [2.0, 1.0], 2.0),
])
def test_percentile_interpolates_between_the_closest_ranks(q, values, expected):
    """The per-minute TTFT and per-arm latency percentiles, exactly."""
    from proxy.telemetry.series import percentile

    assert percentile(q, values) == (pytest.approx(expected) if expected is not None else None)
