"""Figures operators read, checked to the exact number after a known sequence of real requests.

Fallbacks (only real ones, circuit-open skips included), bounded auto-pull work and labels, Ollama's
timings under the model that served, ``name`` vs ``name:latest``, circuit series from the start and
across reloads. Each test reads the app's own registry or the request log.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson

from proxy.background.health import check_all
from proxy.background.pull import AUTO_PULL_BUDGET
from proxy.keys import ACCOUNTING
from tests.fakes import ollama as o
from tests.integration.test_observability import scrape, series
from tests.integration.test_ops_autopull import pull_error
from tests.integration.test_routing import HI, backend, closed_port, routed


def _log(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _with_log(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    return {**raw, "logging": {"requests": True, "format": "json", "file": str(path)}}


def _family(s: dict[str, float], name: str) -> dict[str, float]:
    return {k: v for k, v in s.items() if k.startswith(name + "{")}


async def _chat(gw: Any, model: str, n: int = 1) -> list[Any]:
    async with gw.client() as client:
        out = []
        for _ in range(n):
            try:
                out.append(await client.chat.completions.create(model=model, messages=HI))
            except openai.APIStatusError as exc:
                out.append(exc)
        return out


async def test_failures_with_nowhere_to_go_are_not_fallbacks(fake_ollama, start_gateway):
    """Twenty mistyped models on the default route (no fallback) are twenty 404s and zero fallbacks."""
    gw = await start_gateway({"backends": [backend("local", fake_ollama.url)], "logging": {"requests": False}})
    answers = [await _chat(gw, "zz-" + secrets.token_hex(4)) for _ in range(20)]
    assert all(isinstance(a[0], openai.NotFoundError) for a in answers)
    s = scrape(gw)
    assert _family(s, "proxy_fallbacks_total") == {}
    assert s[series("proxy_requests_total", route="default", model="other", backend="local",
                    outcome="model_not_found", status_class="4xx")] == 20.0


async def test_a_chain_that_fails_everywhere_counts_only_the_moves_it_made(start_fake, start_gateway):
    """Primary and backup both 500: one fallback (primary -> backup), not a second one to nowhere."""
    primary, spare = await start_fake(), await start_fake()
    primary.fake.script("/api/chat", o.status(500, "CUDA error"))
    spare.fake.script("/api/chat", o.status(500, "CUDA error"))
    gw = await start_gateway(routed([backend("primary", primary.url), backend("spare", spare.url)],
                                    {"targets": [{"backend": "primary"}], "fallback": [{"backend": "spare"}]}))
    for _ in range(3):
        assert isinstance((await _chat(gw, "llama3.2"))[0], openai.APIStatusError)
    assert _family(scrape(gw), "proxy_fallbacks_total") == {
        series("proxy_fallbacks_total", route="chat", from_backend="primary", to_backend="spare", reason="5xx"): 3.0}


async def test_a_primary_skipped_with_its_circuit_open_is_a_fallback(start_fake, start_gateway, tmp_path):
    """After the breaker opens, each request skipping the primary counts a circuit_open fallback and logs it."""
    spare = await start_fake()
    log = tmp_path / "requests.jsonl"
    raw = routed([backend("local", f"http://127.0.0.1:{closed_port()}"), backend("cloud", spare.url)],
                 {"targets": [{"backend": "local"}], "fallback": [{"backend": "cloud"}]},
                 breaker={"failures": 1, "cooldown": 600})
    gw = await start_gateway(_with_log(raw, log))
    answers = await _chat(gw, "llama3.2", 6)
    assert [a.choices[0].message.content for a in answers] == ["Hello world"] * 6
    assert gw.backends.breakers["local"].state == "open"
    s = scrape(gw)
    assert _family(s, "proxy_fallbacks_total") == {
        series("proxy_fallbacks_total", route="chat", from_backend="local", to_backend="cloud", reason="connect"): 1.0,
        series("proxy_fallbacks_total", route="chat", from_backend="local", to_backend="cloud",
               reason="circuit_open"): 5.0}
    assert s[series("proxy_circuit_state", backend="local")] == 2.0
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/admin/stats") as resp:
        stats = await resp.json()
    assert stats["routes"]["chat"]["fallbacks"] == 6.0
    assert stats["routes"]["chat"]["fallbacks_by_reason"] == {"connect": 1.0, "circuit_open": 5.0}
    assert stats["backends"]["local"]["circuit"] == "open"
    gw.app[ACCOUNTING].request_log.flush()
    paths = [r["fallback_path"] for r in _log(log) if r["path"] == "/v1/chat/completions"]
    assert paths == [["local:llama3.2", "cloud:llama3.2"]] + [["local:llama3.2 (circuit open)", "cloud:llama3.2"]] * 5


async def test_a_retry_cut_short_by_the_circuit_opening_is_a_fallback_not_a_retry(start_fake, start_gateway):
    """The primary's first 500 opens its breaker: no retry is sent or counted, one circuit_open fallback is."""
    primary, spare = await start_fake(), await start_fake()
    primary.fake.script("/api/chat", o.status(500, "CUDA error"))
    route = {"targets": [{"backend": "primary"}], "fallback": [{"backend": "spare"}],
             "retry": {"attempts": 2, "base_delay": 0.01, "budget": 5}}
    gw = await start_gateway(routed([backend("primary", primary.url), backend("spare", spare.url)], route,
                                    breaker={"failures": 1, "cooldown": 600}))
    assert (await _chat(gw, "llama3.2"))[0].choices[0].message.content == "Hello world"
    assert len(primary.fake.bodies("/api/chat")) == 1
    s = scrape(gw)
    assert _family(s, "proxy_retries_total") == {}
    assert _family(s, "proxy_fallbacks_total") == {
        series("proxy_fallbacks_total", route="chat", from_backend="primary", to_backend="spare",
               reason="circuit_open"): 1.0}


async def test_a_hundred_unknown_names_make_a_bounded_number_of_pulls_and_series(start_fake, start_gateway):
    """100 random llama3.1* names: AUTO_PULL_BUDGET (3) pulls, one auto-pull series, every name labelled other."""
    local = await start_fake(models=[])
    local.fake.pull_behaviour = pull_error("pull model manifest: file does not exist")
    gw = await start_gateway({
        "backends": [backend("local", local.url)], "logging": {"requests": False},
        "ops": {"auto_pull": {"enabled": True, "models": ["llama3.1*"], "timeout": 10}}})
    names = [f"llama3.1-{secrets.token_hex(4)}" for _ in range(100)]
    async with gw.client() as client:
        async def ask(name: str) -> Any:
            try:
                return await client.chat.completions.create(model=name, messages=HI)
            except openai.APIStatusError as exc:
                return exc
        answers = await asyncio.gather(*(ask(n) for n in names[:50]))  # concurrent ...
        answers += [await ask(n) for n in names[50:]]  # ... then one after another
        again = await ask(names[0])  # a name whose pull failed is not pulled again
    assert all(isinstance(a, openai.NotFoundError) for a in [*answers, again])
    assert AUTO_PULL_BUDGET == 3
    assert len(local.fake.bodies("/api/pull")) == 3
    assert "not tried again" in again.body["message"]
    s = scrape(gw)
    assert _family(s, "proxy_auto_pulls_total") == {
        series("proxy_auto_pulls_total", backend="local", model="other", outcome="error"): 3.0}
    assert not any(n in k for k in s for n in names)
    assert s[series("proxy_requests_total", route="default", model="other", backend="local",
                    outcome="model_not_found", status_class="4xx")] == 101.0


async def test_a_successful_auto_pull_is_labelled_with_the_installed_name(start_fake, start_gateway):
    """A pull that succeeds makes the name installed, so its series names it."""
    local = await start_fake(models=[])
    gw = await start_gateway({
        "backends": [backend("local", local.url)], "logging": {"requests": False},
        "ops": {"auto_pull": {"enabled": True, "models": ["llama3.1*"], "timeout": 10}}})
    assert (await _chat(gw, "llama3.1:8b"))[0].choices[0].message.content == "Hello world"
    assert _family(scrape(gw), "proxy_auto_pulls_total") == {
        series("proxy_auto_pulls_total", backend="local", model="llama3.1:8b", outcome="ok"): 1.0}


async def test_ollama_timings_are_labelled_with_the_model_that_served(start_fake, start_gateway):
    """An alias (gpt-4o-mini) served by llama3.1:8b: request series say the alias, Ollama's say llama3.1:8b."""
    local = await start_fake(models=["llama3.1:8b"])
    local.fake.script("/api/chat", o.ok("a b c", load_ns=250_000_000))
    gw = await start_gateway({
        "backends": [backend("local", local.url)], "logging": {"requests": False},
        "routes": [{"name": "chat", "models": ["gpt-4o-mini"], "targets": [{"backend": "local", "model": "llama3.1:8b"}]}]})
    async with gw.client() as client:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
        async for _chunk in stream:
            pass
    s = scrape(gw)
    bm = {"backend": "local", "model": "llama3.1:8b"}
    assert s[series("proxy_ollama_load_duration_seconds_count", **bm)] == 1.0
    assert s[series("proxy_ollama_cold_starts_total", **bm)] == 1.0
    assert s[series("proxy_ollama_eval_tokens_per_second_count", **bm)] == 1.0
    assert s[series("proxy_ollama_prompt_eval_tokens_per_second_count", **bm)] == 1.0
    assert not any('model="gpt-4o-mini"' in k for k in s if k.startswith("proxy_ollama_"))
    assert s[series("proxy_requests_total", route="chat", model="gpt-4o-mini", backend="local", outcome="ok",
                    status_class="2xx")] == 1.0


async def test_a_name_installed_as_name_latest_is_its_own_label(start_fake, start_gateway):
    """llama3.2 (installed as llama3.2:latest) is labelled llama3.2, llama3.2:latest as written, junk as other."""
    local = await start_fake(models=["llama3.2:latest"])
    gw = await start_gateway({"backends": [backend("local", local.url)], "logging": {"requests": False}})
    await check_all(gw.backends)  # what the background checks find: the installed list
    await _chat(gw, "llama3.2", 2)
    await _chat(gw, "llama3.2:latest")
    await _chat(gw, "llama3.2:3b")  # another tag: not installed
    s = scrape(gw)
    common = {"route": "default", "backend": "local"}
    assert _family(s, "proxy_requests_total") == {
        series("proxy_requests_total", **common, model="llama3.2", outcome="ok", status_class="2xx"): 2.0,
        series("proxy_requests_total", **common, model="llama3.2:latest", outcome="ok", status_class="2xx"): 1.0,
        series("proxy_requests_total", **common, model="other", outcome="model_not_found", status_class="4xx"): 1.0}


async def test_every_backend_has_a_closed_circuit_series_from_the_start(start_fake, start_gateway):
    """Before any request, proxy_circuit_state is 0 for each configured backend, on /metrics too."""
    a, b = await start_fake(), await start_fake()
    gw = await start_gateway(routed([backend("gpu1", a.url), backend("cloud", b.url)],
                                    {"targets": [{"backend": "gpu1"}], "fallback": [{"backend": "cloud"}]}))
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    assert 'proxy_circuit_state{backend="gpu1"} 0.0' in text
    assert _family(scrape(gw), "proxy_circuit_state") == {
        series("proxy_circuit_state", backend="gpu1"): 0.0, series("proxy_circuit_state", backend="cloud"): 0.0}
