"""Hot reload: a valid file is adopted, a bad one is refused, and requests in flight are unharmed."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml
from aiohttp import web

from proxy.app import create_app
from proxy.config import load_config
from proxy.keys import BACKENDS, CONFIG, TASKS
from proxy.background.reload import reload_config
from proxy.server import start_site
from tests.fakes import ollama as o
from tests.integration.test_routing import HI

ROOT = Path(__file__).resolve().parents[2]


def _config(target: str, *urls: str, **extra: Any) -> dict[str, Any]:
    """Backends ``a`` (and ``b``) and one route sending ``llama3.2`` to ``target``."""
    return {"backends": [{"name": name, "url": url} for name, url in zip("ab", urls)],
            "routes": [{"name": "chat", "models": ["llama3.2"], "targets": [{"backend": target}]}],
            "logging": {"requests": False, "format": "text"}, **extra}


Served = tuple[web.Application, str, Path]


@pytest.fixture
async def serve_file(tmp_path: Path) -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[Served]]]:
    """Start the gateway from a YAML file (so it has a ``source`` to reload); returns app, url, path."""
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


def _client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0, timeout=20)


async def _served_by(url: str) -> str:
    async with _client(url) as client:
        raw = await client.chat.completions.with_raw_response.create(model="llama3.2", messages=HI)
    return raw.headers["x-gateway-backend"]


async def _drained(app: web.Application) -> None:
    async with asyncio.timeout(5):
        while any(t.get_name() == "reload-drain" for t in app[TASKS].running):
            await asyncio.sleep(0.05)


async def test_valid_reload_switches_routes_and_closes_old_sessions(start_fake, serve_file):
    """After a reload the new route is used at once and the replaced backends' sessions get closed."""
    a, b = await start_fake(), await start_fake()
    app, url, path = await serve_file(_config("a", a.url, b.url))
    assert await _served_by(url) == "a"
    old = dict(app[BACKENDS].upstreams)
    path.write_text(yaml.safe_dump(_config("b", a.url, b.url)))
    assert await reload_config(app, {}) is True
    assert await _served_by(url) == "b"
    await _drained(app)
    assert all(upstream.pool.closed for upstream in old.values())


@pytest.mark.parametrize("text, where", [
    ("routes: [}", "is not valid YAML"),
    (yaml.safe_dump({**_config("a", "http://127.0.0.1:1"), "breakr": {}}), "breakr: unknown key"),
    (yaml.safe_dump(_config("nope", "http://127.0.0.1:1")), "routes[0].targets[0].backend: unknown backend"),
    (yaml.safe_dump(_config("a", "https://127.0.0.1:1") | {"backends": [
        {"name": "a", "url": "https://127.0.0.1:1", "ca_bundle": "/nonexistent/ca.pem"}]}), "ca.pem"),
], ids=["yaml", "unknown-key", "unknown-backend", "unreadable-ca-bundle"])
async def test_invalid_file_keeps_the_running_config(start_fake, serve_file, caplog, text, where):
    """A file that does not parse, or whose backends cannot be opened, is logged and ignored."""
    a = await start_fake()
    app, url, path = await serve_file(_config("a", a.url))
    before = app[CONFIG].current
    path.write_text(text)
    with caplog.at_level(logging.ERROR, logger="proxy.background.reload"):
        assert await reload_config(app, {}) is False
    assert where in caplog.text
    assert app[CONFIG].current is before
    assert await _served_by(url) == "a"


async def test_stream_in_flight_during_reload_completes(start_fake, serve_file):
    """A stream that started before the reload finishes on the old backend, whose session closes only after."""
    a, b = await start_fake(), await start_fake()
    a.fake.script("/api/chat", o.ok("one two three four five six", delay=0.1))
    app, url, path = await serve_file(_config("a", a.url, b.url))
    async with _client(url) as client:
        stream = await client.chat.completions.create(model="llama3.2", messages=HI, stream=True)
        pieces = [(await anext(stream)).choices[0].delta.content or ""]
        old = dict(app[BACKENDS].upstreams)
        path.write_text(yaml.safe_dump(_config("b", a.url, b.url)))
        assert await reload_config(app, {}) is True
        assert await _served_by(url) == "b"
        assert not old["a"].pool.closed
        pieces += [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(pieces) == "one two three four five six"
    await _drained(app)
    assert old["a"].pool.closed


async def test_sighup_reloads_a_running_gateway_process(start_fake, tmp_path):
    """``kill -HUP`` makes a real ``python -m proxy --config FILE`` process adopt the edited file."""
    a, b = await start_fake(), await start_fake()
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_config("a", a.url, b.url)))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "--config", str(path), "--port", "0", cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    drain: asyncio.Task[None] | None = None
    try:
        url, drain = await _serving_url(proc)
        assert await _served_by(url) == "a"
        path.write_text(yaml.safe_dump(_config("b", a.url, b.url)))
        proc.send_signal(signal.SIGHUP)
        async with asyncio.timeout(10):
            while await _served_by(url) != "b":
                await asyncio.sleep(0.1)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await drain


async def _serving_url(proc: asyncio.subprocess.Process) -> tuple[str, asyncio.Task[None]]:
    """Read the process's log until it says where it serves (bounded), then keep draining it."""
    assert proc.stderr is not None
    seen = []
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stderr.readline()).decode()
            if not line:
                raise AssertionError("the gateway exited:\n" + "".join(seen))
            seen.append(line)
            match = re.search(r"serving on (http://[\d.]+:\d+)", line)
            if match:
                break
    return match.group(1), asyncio.get_running_loop().create_task(_drain(proc.stderr))


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def test_reload_without_a_file_is_refused(start_fake, start_gateway):
    """A gateway started from built-in defaults has no file to re-read: reload is a logged no-op."""
    a = await start_fake()
    gw = await start_gateway(_config("a", a.url))
    assert await reload_config(gw.app, {}) is False
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/healthz") as resp:
            assert resp.status == 200


async def test_reloads_are_in_the_audit_trail(start_fake, serve_file, caplog):
    """An adopted reload and a rejected one each leave one proxy.audit record with their outcome."""
    a, b = await start_fake(), await start_fake()
    app, url, path = await serve_file(_config("a", a.url, b.url))
    caplog.set_level(logging.INFO, logger="proxy.audit")
    path.write_text(yaml.safe_dump(_config("b", a.url, b.url)))
    assert await reload_config(app, {}) is True
    path.write_text("routes: [}")
    assert await reload_config(app, {}) is False
    records = [r.audit for r in caplog.records if r.name == "proxy.audit"]  # type: ignore[attr-defined]
    assert [(r["action"], r["who"], r["outcome"]) for r in records] == [("reload", "signal", "ok"),
                                                                          ("reload", "signal", "rejected")]
    await _drained(app)
