"""Model discovery over several backends, readiness, and the admin ``/status`` document."""

from __future__ import annotations

import asyncio

import aiohttp

from proxy.background.health import check_all

ADMIN = {"Authorization": aiohttp.encode_basic_auth("admin", "s3cret")}


def _two_backends(a: str, b: str, **extra: object) -> dict[str, object]:
    return {
        "backends": [{"name": "gpu1", "type": "ollama", "url": a}, {"name": "gpu2", "type": "ollama", "url": b}],
        "routes": [
            {"name": "chat", "models": ["gpt-4o", "chat-default", "llama3.2:latest"],
             "targets": [{"backend": "gpu1", "model": "llama3.2:latest"}],
             "fallback": [{"backend": "gpu2", "model": "llama3.2:latest"}]},
            {"name": "any", "models": ["*"], "targets": [{"backend": ["gpu1", "gpu2"]}], "required": False},
        ],
        "logging": {"requests": False},
        "auth": {"admin": {"username": "admin", "password": "s3cret"}},
        **extra,
    }


async def _get(url: str, **kwargs: object) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.json()


async def test_models_merge_routes_and_every_backend_deduplicated(start_fake, start_gateway):
    """/v1/models lists route names and aliases, then each backend's models, each id once."""
    one = await start_fake(models=["llama3.2:latest", "qwen2.5:7b"])
    two = await start_fake(models=["llama3.2:latest", "mistral:7b", "nomic-embed-text:latest"])
    gateway = await start_gateway(_two_backends(one.url, two.url))
    async with gateway.client() as client:
        ids = [m.id for m in (await client.models.list()).data]
    assert ids[:3] == ["gpt-4o", "chat-default", "llama3.2:latest"]
    assert sorted(ids[3:]) == ["mistral:7b", "nomic-embed-text:latest", "qwen2.5:7b"]
    assert len(ids) == len(set(ids))


async def test_models_are_cached_briefly_then_refreshed(start_fake, start_gateway):
    """A model pulled on a backend shows up once the catalog cache (models_cache_ttl) expires."""
    one = await start_fake(models=["llama3.2:latest"])
    two = await start_fake(models=[])
    gateway = await start_gateway(_two_backends(one.url, two.url, ops={"models_cache_ttl": 0.3}))
    async with gateway.client() as client:
        first = {m.id for m in (await client.models.list()).data}
        two.fake.models.append("phi4:14b")
        cached = {m.id for m in (await client.models.list()).data}
        await asyncio.sleep(0.4)
        fresh = {m.id for m in (await client.models.list()).data}
    assert "phi4:14b" not in first and "phi4:14b" not in cached
    assert "phi4:14b" in fresh


async def test_readiness_flips_when_a_backend_dies_and_comes_back(start_fake, start_gateway):
    """/readyz is 200 while a required route has a healthy backend, 503 once both of its backends are down."""
    one, two = await start_fake(), await start_fake()
    gateway = await start_gateway(_two_backends(one.url, two.url))
    await check_all(gateway.backends)
    status, body = await _get(gateway.url + "/readyz")
    assert status == 200 and body["status"] == "ready" and body["warming"] == []
    one.fake.down = True
    await check_all(gateway.backends)
    status, body = await _get(gateway.url + "/readyz")
    assert status == 200, "gpu2 still serves the chat route as its fallback"
    two.fake.down = True
    await check_all(gateway.backends)
    status, body = await _get(gateway.url + "/readyz")
    assert status == 503 and body["status"] == "not_ready"
    assert body["routes"]["chat"]["ready"] is False
    one.fake.down = two.fake.down = False
    await check_all(gateway.backends)
    assert (await _get(gateway.url + "/readyz"))[0] == 200


async def test_status_reports_each_backend_health_circuit_version_and_models(start_fake, start_gateway):
    """/status (admin only) has health, latency, circuit, version, installed and loaded models with expiry."""
    one = await start_fake(models=["llama3.2:latest", "qwen2.5:7b"], running=["llama3.2:latest"], version="0.33.1")
    two = await start_fake()
    two.fake.down = True
    gateway = await start_gateway(_two_backends(one.url, two.url))
    await check_all(gateway.backends)
    status, _ = await _get(gateway.url + "/status")
    assert status == 401
    status, body = await _get(gateway.url + "/status", headers=ADMIN)
    assert status == 200
    gpu1, gpu2 = body["backends"]
    assert gpu1["name"] == "gpu1" and gpu1["up"] is True and gpu1["version"] == "0.33.1"
    assert gpu1["circuit"] == "closed" and isinstance(gpu1["latency_ms"], float)
    assert gpu1["installed"] == ["llama3.2:latest", "qwen2.5:7b"]
    assert gpu1["running"][0]["model"] == "llama3.2:latest"
    assert gpu1["running"][0]["expires_at"] == "2026-11-24T10:05:00Z"
    assert gpu2["up"] is False and "fake is down" in gpu2["error"]
    assert body["pulls"] == [] and body["auto_pull"]["enabled"] is False
