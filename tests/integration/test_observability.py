"""Prometheus samples after real requests through the gateway: outcomes, Ollama timings, routing, labels.

Each test sends requests over real sockets to a fake Ollama and reads the app's own registry
(``generate_latest(gw.metrics.registry)``) or ``GET /metrics``, then asserts on exact sample lines.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest

from tests.fakes import ollama as o
from tests.integration.test_routing import HI, backend, closed_port, routed

ONE_ROUTE = {"targets": [{"backend": "local"}]}


def samples(text: str) -> dict[str, float]:
    """``'name{a="1",b="2"}' -> value`` for every sample line of a Prometheus text exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def scrape(gw: Any) -> dict[str, float]:
    return samples(generate_latest(gw.metrics.registry).decode())


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``check()`` holds: the access log and metrics are written just after the last byte."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def series(name: str, **labels: str) -> str:
    """The sample key as the exposition writes it: labels sorted by name."""
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


RMB = {"route": "chat", "model": "llama3.2", "backend": "local"}


async def test_success_counts_non_stream_and_stream_requests(start_fake, start_gateway):
    """A plain and a streamed answer each count once as ok/2xx, with tokens, latency and (stream) TTFT."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("a b c"))
    gw = await start_gateway(routed([backend("local", local.url)], ONE_ROUTE))
    async with gw.client() as client:
        await client.chat.completions.create(model="llama3.2", messages=HI)
        stream = await client.chat.completions.create(model="llama3.2", messages=HI, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "a b c"
    key = series("proxy_requests_total", **RMB, outcome="ok", status_class="2xx")
    await eventually(lambda: scrape(gw).get(key) == 2.0)
    s = scrape(gw)
    assert s[series("proxy_tokens_total", **RMB, kind="prompt")] == 14.0  # the fake reports 7 per request
    assert s[series("proxy_tokens_total", **RMB, kind="completion")] == 6.0  # 3 words each
    assert s[series("proxy_request_duration_seconds_count", **RMB)] == 2.0
    assert s[series("proxy_time_to_first_token_seconds_count", **RMB)] == 1.0  # only the stream has a first token
    assert s[series("proxy_output_tokens_per_second_count", **RMB)] == 2.0
    assert not any(k.startswith("proxy_requests_total{") and 'outcome="ok"' not in k for k in s)


async def test_ollama_500_counts_as_5xx_with_a_502(start_fake, start_gateway):
    """An Ollama 500 reaches the client as 502 and is counted with outcome 5xx, status class 5xx."""
    local = await start_fake()
    local.fake.script("/api/chat", o.status(500, "CUDA error"))
    gw = await start_gateway(routed([backend("local", local.url)], ONE_ROUTE))
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", json={"model": "llama3.2", "messages": HI}) as resp:
            assert resp.status == 502
    s = scrape(gw)
    assert s[series("proxy_requests_total", **RMB, outcome="5xx", status_class="5xx")] == 1.0
    assert series("proxy_requests_total", **RMB, outcome="ok", status_class="2xx") not in s
    assert s[series("proxy_in_flight_requests", route="chat")] == 0.0


async def test_stream_records_ollama_timings_and_cold_starts(start_fake, start_gateway):
    """A load_duration above 100 ms counts a cold start; prompt-eval and eval rates come from Ollama's timings."""
    local = await start_fake()
    # the fake's final chunk: 7 prompt tokens in 20 ms (350/s), one eval token per word in 200 ms
    local.fake.script("/api/chat", o.ok("a b c d", load_ns=250_000_000), o.ok("a b c d", load_ns=1_500_000))
    gw = await start_gateway(routed([backend("local", local.url)], ONE_ROUTE))
    async with gw.client() as client:
        for _ in range(2):
            stream = await client.chat.completions.create(model="llama3.2", messages=HI, stream=True)
            async for _chunk in stream:
                pass
    bm = {"backend": "local", "model": "llama3.2"}
    await eventually(lambda: scrape(gw).get(series("proxy_ollama_load_duration_seconds_count", **bm)) == 2.0)
    s = scrape(gw)
    assert s[series("proxy_ollama_cold_starts_total", **bm)] == 1.0  # the warm 1.5 ms load is not one
    assert s[series("proxy_ollama_load_duration_seconds_sum", **bm)] == pytest.approx(0.2515)
    assert s[series("proxy_ollama_load_duration_seconds_bucket", **bm, le="0.01")] == 1.0
    assert s[series("proxy_ollama_load_duration_seconds_bucket", **bm, le="0.25")] == 2.0
    assert s[series("proxy_ollama_prompt_eval_tokens_per_second_sum", **bm)] == pytest.approx(700.0)
    assert s[series("proxy_ollama_prompt_eval_tokens_per_second_count", **bm)] == 2.0
    assert s[series("proxy_ollama_eval_tokens_per_second_sum", **bm)] == pytest.approx(40.0)  # 4 / 0.2 s, twice
    assert s[series("proxy_ollama_eval_tokens_per_second_bucket", **bm, le="20.0")] == 2.0
    assert s[series("proxy_ollama_eval_tokens_per_second_bucket", **bm, le="10.0")] == 0.0


async def test_fallback_is_counted_with_its_reason(start_fake, start_gateway):
    """A refused primary counts one fallback (reason connect) and the request as ok on the backup."""
    backup = await start_fake()
    gw = await start_gateway(routed([backend("dead", f"http://127.0.0.1:{closed_port()}"),
                                     backend("backup", backup.url)],
                                    {"targets": [{"backend": "dead"}], "fallback": [{"backend": "backup"}]}))
    async with gw.client() as client:
        await client.chat.completions.create(model="llama3.2", messages=HI)
    s = scrape(gw)
    assert s[series("proxy_fallbacks_total", route="chat", from_backend="dead", to_backend="backup",
                    reason="connect")] == 1.0
    assert s[series("proxy_requests_total", route="chat", model="llama3.2", backend="backup", outcome="ok",
                    status_class="2xx")] == 1.0
    assert not any('backend="dead"' in k for k in s if k.startswith("proxy_requests_total"))


async def test_split_arm_counter_matches_where_requests_went(start_fake, start_gateway):
    """Each request of a 50/50 split counts once on the arm that served it."""
    a, b = await start_fake(), await start_fake()
    route = {"targets": [{"backend": "a", "weight": 1}, {"backend": "b", "weight": 1}], "sticky": []}
    gw = await start_gateway(routed([backend("a", a.url), backend("b", b.url)], route), rng=random.Random(7))
    async with gw.client() as client:
        for _ in range(20):
            await client.chat.completions.create(model="llama3.2", messages=HI)
    s = scrape(gw)
    served_a, served_b = len(a.fake.bodies("/api/chat")), len(b.fake.bodies("/api/chat"))
    assert served_a and served_b and served_a + served_b == 20
    assert s[series("proxy_split_arm_total", route="chat", arm="a:*")] == served_a
    assert s[series("proxy_split_arm_total", route="chat", arm="b:*")] == served_b


async def test_in_flight_gauge_rises_during_a_stream_and_returns_to_zero(start_fake, start_gateway):
    """GET /metrics shows 1 request in flight while a stream runs and 0 once it and an error ended."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("a b c d e", delay=0.1), o.status(500))
    gw = await start_gateway(routed([backend("local", local.url)], ONE_ROUTE))
    gauge = series("proxy_in_flight_requests", route="chat")
    async with aiohttp.ClientSession() as http:
        async def metric() -> dict[str, float]:
            async with http.get(gw.url + "/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                return samples(await resp.text())

        body = {"model": "llama3.2", "messages": HI, "stream": True}
        async with http.post(gw.url + "/v1/chat/completions", json=body) as resp:
            await resp.content.readline()  # the first SSE event is out: the request is mid-stream
            assert (await metric())[gauge] == 1.0
            rest = await resp.read()
        assert rest.rstrip().endswith(b"data: [DONE]")
        async with http.post(gw.url + "/v1/chat/completions", json={**body, "stream": False}) as resp:
            assert resp.status == 502
        await eventually(lambda: scrape(gw)[gauge] == 0.0)
        assert (await metric())[gauge] == 0.0


async def test_client_disconnect_mid_stream_releases_the_in_flight_gauge(start_fake, start_gateway):
    """A client leaving mid-stream is counted as client_disconnect (499) and leaves nothing in flight."""
    local = await start_fake()
    local.fake.script("/api/chat", o.stream_forever(delay=0.05))
    gw = await start_gateway(routed([backend("local", local.url)], ONE_ROUTE))
    async with aiohttp.ClientSession() as http:
        body = {"model": "llama3.2", "messages": HI, "stream": True}
        async with http.post(gw.url + "/v1/chat/completions", json=body) as resp:
            await resp.content.readline()
            assert scrape(gw)[series("proxy_in_flight_requests", route="chat")] == 1.0
    key = series("proxy_requests_total", **RMB, outcome="client_disconnect", status_class="4xx")
    await eventually(lambda: scrape(gw).get(key) == 1.0)
    assert scrape(gw)[series("proxy_in_flight_requests", route="chat")] == 0.0
    await eventually(lambda: local.fake.disconnects == 1)  # and Ollama was told to stop


async def test_overhead_histogram_counts_every_request(start_fake, start_gateway):
    """The gateway's own time is observed once per request and is below the total request time."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("hi", delay=0.05))
    gw = await start_gateway(routed([backend("local", local.url)], ONE_ROUTE))
    async with gw.client() as client:
        for _ in range(3):
            await client.chat.completions.create(model="llama3.2", messages=HI)
    s = scrape(gw)
    assert s[series("proxy_overhead_seconds_count", route="chat")] == 3.0
    assert s[series("proxy_overhead_seconds_bucket", route="chat", le="+Inf")] == 3.0
    assert 0.0 <= s[series("proxy_overhead_seconds_sum", route="chat")] < s[
        series("proxy_request_duration_seconds_sum", **RMB)]
    assert s[series("proxy_request_duration_seconds_sum", **RMB)] >= 0.15  # three 50 ms upstream waits


async def test_cloud_cost_avoided_uses_the_configured_price(start_fake, start_gateway):
    """Tokens served locally are priced at ``metrics.cloud_prices`` (USD per 1M input/output tokens)."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("a b c"))
    raw = routed([backend("local", local.url)], ONE_ROUTE,
                 metrics={"cloud_prices": {"llama3.2": {"input": 2.5, "output": 10.0}}})
    gw = await start_gateway(raw)
    async with gw.client() as client:
        await client.chat.completions.create(model="llama3.2", messages=HI)
        await client.chat.completions.create(model="llama3.2", messages=HI)
    # per request: 7 prompt tokens * 2.5 + 3 completion tokens * 10 = 47.5 USD per 1M
    assert scrape(gw)[series("proxy_cloud_cost_avoided_usd_total", route="chat", model="llama3.2")] == \
        pytest.approx(2 * 47.5e-6)


async def test_unknown_model_names_do_not_become_labels(fake_ollama, start_gateway):
    """A random model through the default pass-through route is counted under model="other"."""
    name = "zz-" + secrets.token_hex(6)
    fake_ollama.fake.script("/api/chat", o.ok("hi"))
    gw = await start_gateway({"backends": [backend("local", fake_ollama.url)], "logging": {"requests": False},
                              "metrics": {"cloud_prices": {name: {"input": 1, "output": 1}}}})
    async with gw.client() as client:
        answer = await client.chat.completions.create(model=name, messages=HI)
    assert answer.choices[0].message.content == "hi"
    assert fake_ollama.fake.bodies("/api/chat")[0]["model"] == name  # passed through to Ollama as is
    text = generate_latest(gw.metrics.registry).decode()
    assert name not in text
    s = samples(text)
    assert s[series("proxy_requests_total", route="default", model="other", backend="local", outcome="ok",
                    status_class="2xx")] == 1.0


async def test_fallback_after_retries_names_the_backend_it_moved_to(start_fake, start_gateway):
    """Retries on the primary do not confuse the fallback's ``to_backend``: it is the backup."""
    primary, backup = await start_fake(), await start_fake()
    primary.fake.script("/api/chat", o.status(500, "CUDA error"))
    route = {"targets": [{"backend": "primary"}], "fallback": [{"backend": "backup"}],
             "retry": {"attempts": 2, "base_delay": 0.01, "budget": 5}}
    gw = await start_gateway(routed([backend("primary", primary.url), backend("backup", backup.url)], route))
    async with gw.client() as client:
        await client.chat.completions.create(model="llama3.2", messages=HI)
    assert len(primary.fake.bodies("/api/chat")) == 3  # tried, retried twice, then fell back
    s = scrape(gw)
    assert s[series("proxy_retries_total", route="chat", backend="primary", reason="5xx")] == 2.0
    assert s[series("proxy_fallbacks_total", route="chat", from_backend="primary", to_backend="backup",
                    reason="5xx")] == 1.0
    assert not any('to_backend="primary"' in k for k in s)
