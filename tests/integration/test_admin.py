"""The admin API: behind the admin credential, errors in OpenAI's shape, pulls streamed as NDJSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.fakes.ollama import FakeOllama

ADMIN = {"Authorization": aiohttp.encode_basic_auth("admin", "s3cret")}
WRONG = {"Authorization": aiohttp.encode_basic_auth("admin", "nope")}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def setup(start_fake: Any, start_gateway: Any, aiohttp_server: Any) -> tuple[Any, Any]:
    local = await start_fake(models=["llama3.2:latest", "qwen2.5:7b"], running=["llama3.2:latest"])
    gateway = await start_gateway({
        "backends": [{"name": "local", "type": "ollama", "url": local.url},
                     {"name": "cloud", "type": "openai", "url": local.url + "/v1"}],
        "logging": {"requests": False},
        "auth": {"admin": {"username": "admin", "password": "s3cret"}},
    })
    return gateway, local


ENDPOINTS = [
    ("GET", "/admin/models", None),
    ("POST", "/admin/models/pull", {"backend": "local", "model": "phi4:14b"}),
    ("DELETE", "/admin/models", {"backend": "local", "model": "qwen2.5:7b"}),
    ("POST", "/admin/models/delete", {"backend": "local", "model": "qwen2.5:7b"}),
    ("POST", "/admin/models/warm", {"backend": "local", "model": "llama3.2:latest"}),
    ("GET", "/admin/stats", None),
    ("GET", "/status", None),
    ("GET", "/dashboard/", None),
    ("GET", "/dashboard/app.js", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_admin_paths_need_the_admin_credential(setup, http, method, path, body):
    """Without (or with a wrong) admin credential: 401 with a Basic challenge, and the backend is not touched."""
    gateway, local = setup
    for headers in ({}, WRONG):
        async with http.request(method, gateway.url + path, json=body, headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
            assert (await resp.json())["error"]["code"] == "invalid_api_key"
    assert [r for r in local.fake.requests if r[1] in ("/api/pull", "/api/delete", "/api/generate")] == []


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_admin_paths_answer_200_with_the_admin_credential(setup, http, method, path, body):
    """With the admin credential every admin path answers 200."""
    gateway, _ = setup
    async with http.request(method, gateway.url + path, json=body, headers=ADMIN) as resp:
        assert resp.status == 200, await resp.text()


async def test_list_models_shows_installed_and_running_per_backend(setup, http):
    """GET /admin/models asks each backend now: installed with sizes, running with expiry."""
    gateway, _ = setup
    async with http.get(gateway.url + "/admin/models", headers=ADMIN) as resp:
        local, cloud = (await resp.json())["backends"]
    assert [m["model"] for m in local["installed"]] == ["llama3.2:latest", "qwen2.5:7b"]
    assert local["installed"][0]["size"] == 1000
    assert local["running"] == [{"model": "llama3.2:latest", "size": 1000, "size_vram": 1000,
                                 "expires_at": "2026-11-24T10:05:00Z", "context_length": 4096}]
    assert cloud["type"] == "openai" and cloud["error"] is not None  # the fake has no /v1/models


async def test_pull_streams_ndjson_progress_and_installs_the_model(setup, http):
    """POST /admin/models/pull streams progress lines to the caller, ending in state done."""
    gateway, local = setup
    async with http.post(gateway.url + "/admin/models/pull", json={"backend": "local", "model": "phi4:14b"},
                         headers=ADMIN) as resp:
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        events = [orjson.loads(line) async for line in resp.content if line.strip()]
    assert local.fake.bodies("/api/pull") == [{"model": "phi4:14b", "stream": True}]
    assert [e["percent"] for e in events if e["percent"] is not None][:2] == [50.0, 100.0]
    assert events[-1]["state"] == "done" and events[-1]["status"] == "success"
    assert "phi4:14b" in gateway.backends.health["local"].installed


async def test_a_failed_pull_ends_the_stream_with_an_openai_error_line(setup, http):
    """A pull that fails mid-stream ends with {"error": {...}} in OpenAI's shape."""
    gateway, local = setup

    async def broken(fake: FakeOllama, request: Any, body: dict[str, Any]) -> Any:
        from aiohttp import web

        return web.json_response({"error": "pull model manifest: file does not exist"}, status=500)

    local.fake.pull_behaviour = broken
    async with http.post(gateway.url + "/admin/models/pull", json={"model": "ghost"}, headers=ADMIN) as resp:
        lines = [orjson.loads(line) async for line in resp.content if line.strip()]
    error = lines[-1]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "file does not exist" in error["message"] and error["code"] == "upstream_stream_error"


@pytest.mark.parametrize("how", ["DELETE /admin/models", "POST /admin/models/delete"])
async def test_delete_removes_the_model_and_a_missing_one_is_a_404(setup, http, how):
    """Delete reaches Ollama's /api/delete; deleting it again is model_not_found in OpenAI's shape."""
    gateway, local = setup
    method, path = how.split()
    body = {"backend": "local", "model": "qwen2.5:7b"}
    async with http.request(method, gateway.url + path, json=body, headers=ADMIN) as resp:
        assert resp.status == 200 and (await resp.json())["deleted"] is True
    assert local.fake.bodies("/api/delete") == [{"model": "qwen2.5:7b"}]
    assert "qwen2.5:7b" not in local.fake.models and "qwen2.5:7b" not in gateway.backends.health["local"].installed
    async with http.request(method, gateway.url + path, json=body, headers=ADMIN) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "model_not_found"


async def test_warm_loads_the_model_now(setup, http):
    """POST /admin/models/warm sends the prompt-less load request, with an optional keep_alive."""
    gateway, local = setup
    async with http.post(gateway.url + "/admin/models/warm", headers=ADMIN,
                         json={"backend": "local", "model": "qwen2.5:7b", "keep_alive": "1h"}) as resp:
        assert (await resp.json())["loaded"] is True
    assert local.fake.bodies("/api/generate") == [{"model": "qwen2.5:7b", "keep_alive": "1h"}]


async def test_stats_summarise_the_metrics(setup, http):
    """GET /admin/stats has per-model requests after traffic (unchecked model names count as "other")."""
    gateway, _ = setup
    async with gateway.client() as client:
        await client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    async with http.get(gateway.url + "/admin/stats", headers=ADMIN) as resp:
        stats = await resp.json()
    assert stats["enabled"] is True and sum(m["requests"] for m in stats["models"].values()) == 1
    assert {"latency_p95_s", "ttft_mean_s", "tokens_per_s_mean", "cost_avoided_usd"} <= set(stats["models"]["other"])


@pytest.mark.parametrize(("body", "status", "code", "param"), [
    ({"backend": "local"}, 400, "missing_field", "model"),
    ({"backend": "local", "model": 7}, 400, "invalid_type", "model"),
    ({"backend": "mars", "model": "x"}, 404, "not_found", "backend"),
    ({"backend": "cloud", "model": "x"}, 400, "invalid_value", "backend"),
])
async def test_bad_admin_requests_are_openai_errors(setup, http, body, status, code, param):
    """Bad bodies are 4xx in OpenAI's error shape, naming the parameter."""
    gateway, _ = setup
    async with http.post(gateway.url + "/admin/models/warm", json=body, headers=ADMIN) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert error["code"] == code and error["param"] == param


async def test_changes_must_be_json_so_a_cross_site_form_cannot_forge_them(setup, http):
    """A text/plain POST (what an HTML form can send cross-site) is refused with 415."""
    gateway, local = setup
    async with http.post(gateway.url + "/admin/models/pull", data='{"model": "x"}',
                         headers={**ADMIN, "Content-Type": "text/plain"}) as resp:
        assert resp.status == 415
    assert local.fake.bodies("/api/pull") == []


async def test_dashboard_redirects_to_its_folder_and_serves_static_files(setup, http):
    """/dashboard redirects to /dashboard/; the page and its assets are served with a strict CSP."""
    gateway, _ = setup
    async with http.get(gateway.url + "/dashboard", headers=ADMIN, allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "dashboard/"
    async with http.get(gateway.url + "/dashboard/", headers=ADMIN) as resp:
        assert resp.content_type == "text/html" and "default-src 'self'" in resp.headers["Content-Security-Policy"]
        assert "<script src=\"app.js\"" in await resp.text()
    async with http.get(gateway.url + "/dashboard/style.css", headers=ADMIN) as resp:
        assert resp.content_type == "text/css"
    async with http.get(gateway.url + "/dashboard/../../etc/passwd", headers=ADMIN) as resp:
        assert resp.status == 404
