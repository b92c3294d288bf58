"""``python -m proxy check``: a real subprocess against fake backends on loopback ports."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, backends: list[dict[str, Any]], routes: list[dict[str, Any]]) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"backends": backends, "routes": routes}))
    return str(path)


async def _check(config: str, *extra: str) -> tuple[int, str]:
    """Run the command without blocking the event loop that serves the fakes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "check", "--config", config, *extra, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def _routes() -> list[dict[str, Any]]:
    return [{"name": "chat", "models": ["gpt-4o"], "targets": [{"backend": "gpu", "model": "llama3.2:3b"}],
             "fallback": [{"backend": "gpu", "model": "qwen2.5:7b"}],
             "shadow": {"backend": "gpu", "model": "phi4:14b", "share": 0.1}},
            {"name": "any", "models": ["*"], "targets": [{"backend": "gpu"}]}]


async def _openai_backend(aiohttp_server: Any, *, status: int = 200) -> str:
    async def models(request: web.Request) -> web.Response:
        if status != 200:
            return web.json_response({"error": {"message": "bad key"}}, status=status)
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1"))


async def test_all_good_exits_zero_and_prints_tables(start_fake, aiohttp_server, tmp_path):
    """Every backend reachable and every needed model present: exit 0 and a readable table."""
    gpu = await start_fake(models=["llama3.2:3b", "qwen2.5:7b", "phi4:14b"])
    cloud = await _openai_backend(aiohttp_server)
    config = _write(tmp_path, [{"name": "gpu", "type": "ollama", "url": gpu.url},
                               {"name": "cloud", "type": "openai", "url": cloud}],
                    [*_routes()[:1], {"name": "cloudy", "models": ["mini"],
                                      "targets": [{"backend": "cloud", "model": "gpt-4o-mini"}]}])
    code, out = await _check(config)
    assert code == 0, out
    assert "Ollama 0.33.0" in out and "all backends reachable, all models present" in out
    for needed in ("llama3.2:3b", "qwen2.5:7b", "phi4:14b", "gpt-4o-mini"):
        assert needed in out
    assert "chat (shadow)" in out and "chat (fallback)" in out


async def test_a_missing_model_exits_non_zero(start_fake, tmp_path):
    """A route's fallback model that the backend does not have is reported MISSING, exit 1."""
    gpu = await start_fake(models=["llama3.2:3b", "phi4:14b"])
    code, out = await _check(_write(tmp_path, [{"name": "gpu", "type": "ollama", "url": gpu.url}], _routes()))
    assert code == 1, out
    line = next(line for line in out.splitlines() if "qwen2.5:7b" in line)
    assert "MISSING" in line and "chat (fallback)" in line
    assert "--pull" in out
    assert gpu.fake.bodies("/api/pull") == []


async def test_an_unreachable_backend_exits_non_zero(unused_tcp_port, tmp_path):
    """A backend nobody listens on is unreachable and its models unknown, exit 1."""
    url = f"http://127.0.0.1:{unused_tcp_port}"
    code, out = await _check(_write(tmp_path, [{"name": "gpu", "type": "ollama", "url": url}], _routes()))
    assert code == 1, out
    assert "unreachable" in next(line for line in out.splitlines() if line.startswith("gpu "))
    assert "unknown" in next(line for line in out.splitlines() if "llama3.2:3b" in line)


async def test_refused_credentials_are_reported_as_such(start_fake, aiohttp_server, tmp_path):
    """A 401 from a backend means the gateway's credentials are wrong: exit 1, 'bad credentials'."""
    gpu = await start_fake(models=["llama3.2:3b"])
    cloud = await _openai_backend(aiohttp_server, status=401)
    config = _write(tmp_path, [{"name": "gpu", "type": "ollama", "url": gpu.url},
                               {"name": "cloud", "type": "openai", "url": cloud, "api_key": "sk-wrong"}],
                    [{"name": "c", "models": ["x"], "targets": [{"backend": "cloud", "model": "gpt-4o-mini"}]}])
    code, out = await _check(config)
    assert code == 1, out
    assert "bad credentials" in next(line for line in out.splitlines() if line.startswith("cloud "))


async def test_pull_pulls_missing_models_with_a_progress_bar(start_fake, tmp_path):
    """--pull pulls each missing model on its Ollama backend, shows progress, and then exits 0."""
    gpu = await start_fake(models=["llama3.2:3b"])
    code, out = await _check(_write(tmp_path, [{"name": "gpu", "type": "ollama", "url": gpu.url}], _routes()),
                             "--pull")
    assert code == 0, out
    assert [b["model"] for b in gpu.fake.bodies("/api/pull")] == ["qwen2.5:7b", "phi4:14b"]
    assert "[###############...............]  50%" in out and "100%" in out
    assert "pulled" in next(line for line in out.splitlines() if "qwen2.5:7b" in line and "chat" in line)


async def test_an_invalid_config_exits_two(tmp_path):
    """A config with problems is reported with its dotted paths, exit 2."""
    path = tmp_path / "bad.yaml"
    path.write_text("backends: [{name: gpu, type: ollama, url: nope}]\n")
    code, out = await _check(str(path))
    assert code == 2 and "backends[0].url" in out
