"""Ollama's model-changing calls in front (pull, push, create, copy, delete): the admin credential only,
the backend they go to, progress streamed in Ollama's shape, pulls shared with the gateway's puller."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.integration.test_native import call, lines
from tests.integration.test_routing import backend

ENV = {"ADMIN_PW": "admin-password-0002", "APP_KEY": "sk-app-0001"}
ADMIN = {"Authorization": "Basic " + base64.b64encode(f"admin:{ENV['ADMIN_PW']}".encode()).decode()}
CLIENT = {"Authorization": f"Bearer {ENV['APP_KEY']}"}


def admin_config(backends: list[dict[str, Any]], routes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {"backends": backends, "logging": {"requests": False},
                           "auth": {"credentials": [{"name": "app", "api_key": "${APP_KEY}"}],
                                    "admin": {"username": "admin", "password": "${ADMIN_PW}"}}}
    if routes is not None:
        raw["routes"] = routes
    return raw


@pytest.fixture
async def one(fake_ollama, start_gateway):
    return await start_gateway(admin_config([backend("local", fake_ollama.url)]), environ=ENV)


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/pull", {"model": "phi4:14b"}), ("POST", "/api/push", {"model": "llama3.2"}),
    ("POST", "/api/create", {"model": "mine", "from": "llama3.2"}),
    ("POST", "/api/copy", {"source": "llama3.2", "destination": "mine"}),
    ("DELETE", "/api/delete", {"model": "llama3.2:latest"}),
])
async def test_client_credentials_are_refused(one, fake_ollama, method, path, body):
    status, _, raw = await call(one.url, path, body, method=method, headers=CLIENT)
    assert (status, orjson.loads(raw)) == (403, {"error": f"{path} needs the admin credential."})
    assert [r for r in fake_ollama.fake.requests if r[1] == path] == []


async def test_delete_and_copy_pass_through(one, fake_ollama):
    status, _, raw = await call(one.url, "/api/copy", {"source": "llama3.2", "destination": "mine:v1"}, headers=ADMIN)
    assert (status, raw) == (200, b"")
    status, _, raw = await call(one.url, "/api/delete", {"model": "mine:v1"}, method="DELETE", headers=ADMIN)
    assert (status, raw) == (200, b"")
    status, _, raw = await call(one.url, "/api/delete", {"model": "mine:v1"}, method="DELETE", headers=ADMIN)
    assert (status, orjson.loads(raw)) == (404, {"error": "model 'mine:v1' not found"})
    assert fake_ollama.fake.bodies("/api/copy") == [{"source": "llama3.2", "destination": "mine:v1"}]
    status, _, raw = await call(one.url, "/api/copy", {"source": "llama3.2"}, headers=ADMIN)
    assert (status, orjson.loads(raw)) == (400, {"error": "Missing required parameter: 'destination'."})


async def test_create_and_push_stream_progress_or_answer_once(one, fake_ollama):
    status, headers, raw = await call(one.url, "/api/create", {"model": "mine", "from": "llama3.2",
                                                                "system": "Be brief."}, headers=ADMIN)
    assert (status, headers["Content-Type"]) == (200, "application/x-ndjson")
    assert [line["status"] for line in lines(raw)] == ["reading model metadata", "creating system layer",
                                                       "writing manifest", "success"]
    assert fake_ollama.fake.bodies("/api/create") == [{"model": "mine", "from": "llama3.2", "system": "Be brief."}]
    status, _, raw = await call(one.url, "/api/push", {"model": "mine", "stream": False}, headers=ADMIN)
    assert (status, orjson.loads(raw)) == (200, {"status": "success"})
    status, _, raw = await call(one.url, "/api/push", {"model": "nope"}, headers=ADMIN)
    assert (status, orjson.loads(raw)) == (404, {"error": "model 'nope' not found"})


async def test_concurrent_pulls_share_one_backend_pull(one, fake_ollama):
    results = await asyncio.gather(*(call(one.url, "/api/pull", {"model": "phi4:14b"}, headers=ADMIN)
                                     for _ in range(3)))
    assert [status for status, _, _ in results] == [200] * 3
    assert all(lines(raw)[-1] == {"status": "success"} for _, _, raw in results)
    assert fake_ollama.fake.bodies("/api/pull") == [{"model": "phi4:14b", "stream": True}]


async def test_an_insecure_pull_goes_straight_to_the_backend(one, fake_ollama):
    status, _, raw = await call(one.url, "/api/pull", {"name": "phi4:14b", "insecure": True, "stream": False},
                                headers=ADMIN)
    assert (status, orjson.loads(raw)) == (200, {"status": "success"})
    assert fake_ollama.fake.bodies("/api/pull") == [{"model": "phi4:14b", "insecure": True, "stream": False}]


async def test_a_failed_pull_is_an_error_status_or_a_last_error_line(one, fake_ollama):
    async def refused(fake: Any, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"error": "pull model manifest: file does not exist"}, status=500)

    fake_ollama.fake.pull_behaviour = refused
    status, _, raw = await call(one.url, "/api/pull", {"model": "nope:1b"}, headers=ADMIN)
    assert (status, orjson.loads(raw)) == (502, {"error": "backend local failed: pull model manifest: file does not "
                                                          "exist"})

    async def midway(fake: Any, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b'{"status": "pulling manifest"}\n{"error": "disk full"}\n')
        return resp

    fake_ollama.fake.pull_behaviour = midway
    status, _, raw = await call(one.url, "/api/pull", {"model": "big:70b"}, headers=ADMIN)
    assert status == 200
    assert lines(raw) == [{"status": "pulling manifest"}, {"error": "pulling big:70b on local failed: disk full"}]


async def test_the_backend_is_named_by_header_or_found_by_route(start_fake, start_openai, start_gateway):
    gpu1, gpu2 = await start_fake(), await start_fake()
    _, cloud_url = await start_openai()
    gw = await start_gateway(admin_config(
        [backend("gpu1", gpu1.url), backend("gpu2", gpu2.url), backend("cloud", cloud_url, "openai")],
        [{"name": "big", "models": ["big*"], "targets": [{"backend": "gpu2"}]},
         {"name": "rest", "models": ["*"], "targets": [{"backend": ["gpu1", "gpu2"]}]}]), environ=ENV)
    status, _, raw = await call(gw.url, "/api/delete", {"model": "llama3.2"}, method="DELETE", headers=ADMIN)
    assert (status, orjson.loads(raw)) == (400, {"error": "Several Ollama backends could hold 'llama3.2' (gpu1, gpu2): "
                                                          "name one in the X-Gateway-Backend header."})
    status, _, _ = await call(gw.url, "/api/copy", {"source": "llama3.2", "destination": "big:copy"},
                              headers={**ADMIN, "X-Gateway-Backend": "gpu1"})
    assert (status, len(gpu1.fake.bodies("/api/copy")), len(gpu2.fake.bodies("/api/copy"))) == (200, 1, 0)
    status, _, _ = await call(gw.url, "/api/create", {"model": "big-one", "from": "llama3.2", "stream": False},
                              headers=ADMIN)
    assert (status, len(gpu2.fake.bodies("/api/create"))) == (200, 1)  # the route of big* reaches gpu2 only
    status, _, raw = await call(gw.url, "/api/pull", {"model": "x"}, headers={**ADMIN, "X-Gateway-Backend": "cloud"})
    assert (status, orjson.loads(raw)) == (400, {"error": "Backend 'cloud' is not an Ollama backend; its models "
                                                          "are managed elsewhere."})
    status, _, raw = await call(gw.url, "/api/pull", {"model": "x"}, headers={**ADMIN, "X-Gateway-Backend": "gpu9"})
    assert (status, orjson.loads(raw)) == (404, {"error": "Unknown backend 'gpu9' in the X-Gateway-Backend header."})


async def test_an_open_gateway_leaves_admin_calls_open(gateway, fake_ollama):
    """No ``auth`` section at all: the gateway is open, Ollama's admin calls included."""
    status, _, raw = await call(gateway.url, "/api/pull", {"model": "phi4:14b", "stream": False})
    assert (status, orjson.loads(raw)) == (200, {"status": "success"})
    assert "phi4:14b" in fake_ollama.fake.models
