"""Operational figures: circuit series across reloads, /readyz naming why, /v1/models on a hung backend.

Real gateways on loopback in front of fake backends; the hung backend is a tiny real server whose
``/api/version`` fails at once (so health checks mark it down) and whose ``/api/tags`` never answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from proxy.app import create_app
from proxy.background.health import check_all
from proxy.background.reload import reload_config
from proxy.config import load_config
from proxy.keys import BACKENDS, METRICS
from proxy.server import start_site
from tests.integration.test_observability import samples, series
from tests.integration.test_routing import HI, backend, closed_port

Served = tuple[web.Application, str, Path]


@pytest.fixture
async def serve_file(tmp_path: Path) -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[Served]]]:
    """Start the gateway from a YAML file (so it can be reloaded); returns app, url, path."""
    runners: list[web.AppRunner] = []

    async def start(raw: dict[str, Any]) -> Served:
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(raw))
        config = load_config(str(path), {})
        app = create_app(config, health_checks=False)
        runner, port = await start_site(app, config, host="127.0.0.1", port=0)
        runners.append(runner)
        return app, f"http://127.0.0.1:{port}", path

    yield start
    for runner in runners:
        await runner.cleanup()


def _circuits(app: web.Application) -> dict[str, float]:
    body, _ = app[METRICS].render()
    return {k: v for k, v in samples(body.decode()).items() if k.startswith("proxy_circuit_state{")}


async def test_circuit_series_follow_a_reload(serve_file, start_fake):
    """A reload keeps a kept backend's state, adds the new one at 0 and removes the dropped one's series."""
    a, b, c = await start_fake(), await start_fake(), await start_fake()

    def config(*names_urls: tuple[str, str]) -> dict[str, Any]:
        return {"backends": [backend(n, u) for n, u in names_urls], "logging": {"requests": False},
                "breaker": {"failures": 1, "cooldown": 600},
                "routes": [{"name": "chat", "models": ["llama3.2"], "targets": [{"backend": names_urls[0][0]}]}]}

    app, url, path = await serve_file(config(("a", a.url), ("b", b.url)))
    assert _circuits(app) == {series("proxy_circuit_state", backend="a"): 0.0,
                              series("proxy_circuit_state", backend="b"): 0.0}
    a.fake.down = True  # one failure opens a's breaker
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/chat/completions", json={"model": "llama3.2", "messages": HI}) as resp:
            assert resp.status == 502
    path.write_text(yaml.safe_dump(config(("a", a.url), ("c", c.url))))
    assert await reload_config(app, {})
    assert _circuits(app) == {series("proxy_circuit_state", backend="a"): 2.0,  # still open: state carried over
                              series("proxy_circuit_state", backend="c"): 0.0}


async def test_readyz_names_each_backend_its_state_and_error_without_urls(start_fake, start_gateway):
    """A 503 lists the route's backends: one down with its health error, one up with its circuit open."""
    dead_port = closed_port()
    cloud = await start_fake()
    cloud.fake.down = True  # chat fails, so the breaker opens; health comes back up below
    gw = await start_gateway({
        "backends": [backend("local", f"http://127.0.0.1:{dead_port}"), backend("cloud", cloud.url)],
        "routes": [{"name": "chat", "models": ["llama3.2"], "targets": [{"backend": "local"}],
                    "fallback": [{"backend": "cloud"}]}],
        "breaker": {"failures": 1, "cooldown": 600}, "logging": {"requests": False}})
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", json={"model": "llama3.2", "messages": HI}) as resp:
            assert resp.status == 502
        cloud.fake.down = False
        await check_all(gw.backends)
        async with http.get(gw.url + "/readyz") as resp:
            assert resp.status == 503
            text = await resp.text()
            body = await resp.json()
    assert body["routes"]["chat"]["backends"] == [
        {"name": "local", "state": "down", "circuit": "open", "usable": False,
         "error": "backend local is unreachable (connection refused)"},
        {"name": "cloud", "state": "up", "circuit": "open", "usable": False}]
    assert body["routes"]["chat"]["healthy_backends"] == []
    assert body["reasons"] == [
        "route chat: no usable backend (local: down, circuit open, backend local is unreachable (connection refused); "
        "cloud: circuit open)"]
    assert str(dead_port) not in text and "127.0.0.1" not in text and cloud.url not in text


async def _hung_backend(aiohttp_server: Any) -> tuple[Any, list[str]]:
    """A backend whose version check fails at once and whose tag list never comes."""
    seen: list[str] = []

    async def version(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"error": "runner wedged"}, status=500)

    async def tags(request: web.Request) -> web.Response:
        seen.append(request.path)
        await asyncio.sleep(3600)
        return web.json_response({"models": []})

    app = web.Application()
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    server = await aiohttp_server(app)
    return server, seen


def _two(hung_url: str, good_url: str) -> dict[str, Any]:
    return {"backends": [backend("hung", hung_url), backend("good", good_url)], "logging": {"requests": False},
            "routes": [{"name": "any", "models": ["*"], "targets": [{"backend": ["hung", "good"]}]}]}


async def test_models_never_ask_a_backend_marked_down(aiohttp_server, start_fake, start_gateway):
    """A hung backend the health checks marked down gets no /api/tags from ten /v1/models calls."""
    server, seen = await _hung_backend(aiohttp_server)
    good = await start_fake(models=["llama3.2:latest"])
    gw = await start_gateway(_two(str(server.make_url("")).rstrip("/"), good.url))
    await check_all(gw.backends)
    assert gw.app[BACKENDS].health["hung"].up is False
    assert seen == ["/api/version"]
    async with gw.client() as client:
        lists = await asyncio.wait_for(asyncio.gather(*(client.models.list() for _ in range(10))), 3.0)
    assert all([m.id for m in page.data] == ["llama3.2:latest"] for page in lists)
    assert seen == ["/api/version"]  # not one tag fetch: the caller paid nothing for the hung backend


async def test_concurrent_model_list_misses_share_one_tag_fetch_per_backend(start_fake, start_gateway):
    """Ten concurrent /v1/models on a cold cache: exactly one /api/tags to each backend."""
    one, two = await start_fake(models=["llama3.2:latest"]), await start_fake(models=["qwen2.5:7b"])
    gw = await start_gateway(_two(one.url, two.url))
    async with gw.client() as client:
        lists = await asyncio.gather(*(client.models.list() for _ in range(10)))
    assert all(sorted(m.id for m in page.data) == ["llama3.2:latest", "qwen2.5:7b"] for page in lists)
    for fake in (one.fake, two.fake):
        assert [p for _, p, _, _ in fake.requests] == ["/api/tags"]


async def test_readyz_when_ready_lists_backends_up_and_no_reasons(fake_ollama, start_gateway):
    """A checked, healthy backend: 200, ``reasons`` empty, the backend up with a closed circuit."""
    gw = await start_gateway({"backends": [backend("local", fake_ollama.url)], "logging": {"requests": False}})
    await check_all(gw.backends)
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/readyz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["reasons"] == []
    assert body["routes"]["default"]["backends"] == [{"name": "local", "state": "up", "circuit": "closed",
                                                      "usable": True}]
