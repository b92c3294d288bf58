"""Shared fixtures: fake Ollama servers, the real gateway on a loopback port, and SDK clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from aiohttp import web

from proxy.app import create_app
from proxy.config import Config, parse_config
from proxy.keys import BACKENDS, METRICS, PULLER, TASKS, WARMUP
from proxy.server import start_site
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai import FakeOpenAI


@dataclass
class FakeServer:
    fake: FakeOllama
    url: str


@dataclass
class RunningGateway:
    app: web.Application
    url: str
    config: Config

    @property
    def backends(self) -> Any:
        return self.app[BACKENDS]

    @property
    def metrics(self) -> Any:
        return self.app[METRICS]

    @property
    def tasks(self) -> Any:
        return self.app[TASKS]

    @property
    def warmup(self) -> Any:
        return self.app[WARMUP]

    @property
    def puller(self) -> Any:
        return self.app[PULLER]

    def client(self, api_key: str = "sk-test", **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=20,
                                  **kwargs)


@pytest.fixture
async def start_fake(aiohttp_server: Any) -> Callable[..., Awaitable[FakeServer]]:
    async def start(**kwargs: Any) -> FakeServer:
        fake = FakeOllama(**kwargs)
        server = await aiohttp_server(fake.app)
        return FakeServer(fake=fake, url=str(server.make_url("")).rstrip("/"))

    return start


@pytest.fixture
async def start_openai(aiohttp_server: Any) -> Callable[..., Awaitable[tuple[FakeOpenAI, str]]]:
    """Start a FakeOpenAI; returns it and the base url a backend entry needs (``.../v1``)."""

    async def start(**kwargs: Any) -> tuple[FakeOpenAI, str]:
        fake = FakeOpenAI(**kwargs)
        server = await aiohttp_server(fake.app)
        return fake, str(server.make_url("/v1"))

    return start


@pytest.fixture
async def fake_ollama(start_fake: Callable[..., Awaitable[FakeServer]]) -> FakeServer:
    return await start_fake()


def one_backend_config(url: str, **extra: Any) -> dict[str, Any]:
    """The smallest config: one Ollama backend, every model passed through."""
    return {"backends": [{"name": "local", "type": "ollama", "url": url}], "logging": {"requests": False},
            **extra}


@pytest.fixture
async def start_gateway() -> AsyncIterator[Callable[..., Awaitable[RunningGateway]]]:
    runners: list[web.AppRunner] = []

    async def start(raw: dict[str, Any], *, environ: dict[str, str] | None = None, health_checks: bool = False,
                    rng: Any = None) -> RunningGateway:
        config = parse_config(raw, environ or {})
        app = create_app(config, health_checks=health_checks, rng=rng)
        runner, port = await start_site(app, config, host="127.0.0.1", port=0)
        runners.append(runner)
        return RunningGateway(app=app, url=f"http://127.0.0.1:{port}", config=config)

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def gateway(fake_ollama: FakeServer, start_gateway: Callable[..., Awaitable[RunningGateway]]) -> RunningGateway:
    """The gateway in front of one fake Ollama."""
    return await start_gateway(one_backend_config(fake_ollama.url))
