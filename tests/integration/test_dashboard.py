"""The dashboard in headless Chromium (Debian's), against fake backends through the real gateway."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.ollama import FakeOllama

playwright_api = pytest.importorskip("playwright.async_api")

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


class _LoadedFake(FakeOllama):
    """A fake whose loaded models expire a few minutes from now, as a live Ollama's do."""

    async def _ps(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        expires = (datetime.now(UTC) + timedelta(minutes=4, seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({"models": [
            {"name": m, "model": m, "size": 2_019_393_189, "expires_at": expires, "size_vram": 2_019_393_189,
             "context_length": 4096} for m in self.running]})


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def stack(aiohttp_server: Any, start_fake: Any, start_gateway: Any) -> tuple[Any, FakeOllama, FakeOllama]:
    gpu1 = _LoadedFake(models=["llama3.2:latest", "qwen2.5:7b", "nomic-embed-text:latest"],
                       running=["llama3.2:latest"], version="0.33.1")
    gpu1_url = str((await aiohttp_server(gpu1.app)).make_url("")).rstrip("/")
    gpu2 = await start_fake(models=["llama3.2:latest"])
    gpu2.fake.down = True
    async def cloud_models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})

    cloud = web.Application()
    cloud.router.add_get("/v1/models", cloud_models)
    cloud_url = str((await aiohttp_server(cloud)).make_url("/v1"))
    gateway = await start_gateway({
        "backends": [{"name": "gpu1", "type": "ollama", "url": gpu1_url},
                     {"name": "gpu2", "type": "ollama", "url": gpu2.url},
                     {"name": "cloud", "type": "openai", "url": cloud_url}],
        "routes": [{"name": "chat", "models": ["gpt-4o"],
                    "targets": [{"backend": "gpu1", "model": "llama3.2:latest", "weight": 3},
                                {"backend": "gpu1", "model": "qwen2.5:7b", "weight": 1}],
                    "fallback": [{"backend": "gpu2", "model": "llama3.2:latest"}], "sticky": []},
                   {"name": "local", "models": ["*"], "targets": [{"backend": ["gpu1", "gpu2"]}],
                    "required": False}],
        "metrics": {"cloud_prices": {"gpt-4o": {"input": 2.5, "output": 10.0}}},
        "auth": {"admin": {"username": "admin", "password": "s3cret"}},
        "logging": {"requests": False},
    }, health_checks=True, rng=random.Random(3))  # seeded: the split shares in the screenshot are stable
    async with gateway.client() as client:
        for _ in range(8):
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    return gateway, gpu1, gpu2.fake


@pytest.mark.browser
async def test_dashboard_shows_health_and_models_and_pull_reaches_ollama(stack):
    """The page shows each backend's health and models; Pull and Delete reach the fake Ollama."""
    gateway, gpu1, _ = stack
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light",
                                                http_credentials={"username": "admin", "password": "s3cret"})
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(gateway.url + "/dashboard")
            assert page.url.endswith("/dashboard/")

            expect = playwright_api.expect
            await expect(page.locator('#backends [data-backend="gpu1"] [data-health]')).to_have_attribute("data-health", "up")
            await expect(page.locator('#backends [data-backend="gpu2"] [data-health]')).to_have_attribute("data-health",
                                                                                                "down")
            await expect(page.locator('#backends [data-backend="cloud"] [data-health]')).to_have_attribute("data-health", "up")
            await expect(page.locator('#backends [data-backend="gpu1"]')).to_contain_text("0.33.1")
            await expect(page.locator("#readiness")).to_have_text("ready")
            installed = page.locator("#installed tbody")
            for model in ("llama3.2:latest", "qwen2.5:7b", "nomic-embed-text:latest"):
                await expect(installed).to_contain_text(model)
            await expect(page.locator("#running tbody")).to_contain_text("llama3.2:latest")
            await expect(page.locator("#running tbody")).to_contain_text("in 4m")
            await expect(page.locator("#perf tbody")).to_contain_text("gpt-4o")
            await expect(page.locator("#routes tbody")).to_contain_text("gpu1:llama3.2:latest")

            await page.select_option("#pull-backend", "gpu1")
            await page.fill("#pull-model", "phi4:14b")
            await page.click("#pull-button")
            await _until(lambda: gpu1.bodies("/api/pull") == [{"model": "phi4:14b", "stream": True}],
                         "the fake Ollama to receive the pull")
            await expect(page.locator('[data-pull="gpu1/phi4:14b"]')).to_contain_text("done")
            await expect(installed).to_contain_text("phi4:14b")

            page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await page.click('#installed tr[data-model="qwen2.5:7b"][data-backend="gpu1"] button:text("Delete")')
            await _until(lambda: gpu1.bodies("/api/delete") == [{"model": "qwen2.5:7b"}],
                         "the fake Ollama to receive the delete")
            await expect(page.locator('#installed tr[data-model="qwen2.5:7b"]')).to_have_count(0)
            assert errors == []
        finally:
            await browser.close()


@pytest.mark.browser
async def test_dashboard_without_credentials_gets_a_basic_challenge(stack):
    """Without credentials the browser receives the 401 Basic challenge and no dashboard."""
    gateway, _, _ = stack
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = await browser.new_page()
            challenges: list[Any] = []
            page.on("response", lambda response: challenges.append(response) if response.status == 401 else None)
            with pytest.raises(playwright_api.Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
                await page.goto(gateway.url + "/dashboard/")  # headless Chromium cannot show the prompt
            assert challenges and challenges[0].headers["www-authenticate"].startswith("Basic")
        finally:
            await browser.close()
