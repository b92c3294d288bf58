"""The dashboard's last hour, migration view, Ollama figures and usage, in headless Chromium (Debian's)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.ollama import ok, status
from tests.integration.test_dashboard import ARGS, CHROMIUM, _until

playwright_api = pytest.importorskip("playwright.async_api")

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"username": "admin", "password": "s3cret"}


@pytest.fixture
async def migration(start_fake: Any, start_gateway: Any) -> Any:
    """A route moving from a cloud-like arm to Ollama: 3:1 weights, a shadow on a second Ollama."""
    gpu1 = await start_fake(models=["llama3.2:latest", "qwen2.5:7b"], running=["llama3.2:latest"])
    gpu2 = await start_fake(models=["llama3.2:latest", "phi4:14b"])
    gpu1.fake.script("/api/chat", ok("Hello there, operator", delay=0.01), ok("Hi", delay=0.01),
                     status(500, "runner crashed"), ok("Hello there, operator", delay=0.01))
    gateway = await start_gateway({
        "backends": [{"name": "gpu1", "type": "ollama", "url": gpu1.url, "health_interval": 0.2},
                     {"name": "gpu2", "type": "ollama", "url": gpu2.url, "health_interval": 0.2}],
        "routes": [{"name": "chat", "models": ["gpt-4o"], "sticky": [], "retry": {"attempts": 0},
                    "targets": [{"backend": "gpu1", "model": "llama3.2:latest", "weight": 3},
                                {"backend": "gpu1", "model": "qwen2.5:7b", "weight": 1}],
                    "shadow": {"backend": "gpu2", "model": "llama3.2:latest", "share": 1.0}}],
        "metrics": {"cloud_prices": {"gpt-4o": {"input": 2.5, "output": 10.0}}},
        "auth": {"admin": AUTH, "credentials": [{"name": "web-app", "api_key": "sk-web"},
                                                {"name": "batch-jobs", "api_key": "sk-batch"}]},
        "logging": {"requests": False},
    }, health_checks=True, rng=random.Random(7))
    for key, n in (("sk-web", 9), ("sk-batch", 3)):
        async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as client:
            for _ in range(n):
                try:
                    stream = await client.chat.completions.create(
                        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
                    assert [c async for c in stream]
                except openai.InternalServerError:
                    pass
    return gateway, gpu1.fake, gpu2.fake


async def _open(p: Any, url: str, width: int) -> tuple[Any, Any, list[str]]:
    browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
    context = await browser.new_context(viewport={"width": width, "height": 900}, color_scheme="light",
                                        http_credentials=AUTH)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(url + "/dashboard/")
    return browser, page, errors


async def _charts_drawn(page: Any) -> list[dict[str, float]]:
    await playwright_api.expect(page.locator("[data-chart] canvas")).to_have_count(4)
    return await page.eval_on_selector_all(
        "[data-chart] canvas", "cs => cs.map(c => ({w: c.width, h: c.height, cw: c.clientWidth}))")


@pytest.mark.browser
async def test_dashboard_draws_the_last_hour_and_the_migration_side_by_side(migration):
    """Four charts with data, every arm's figures beside its weight, the shadow beside the primary, usage."""
    gateway, _, gpu2 = migration
    async with playwright_api.async_playwright() as p:
        browser, page, errors = await _open(p, gateway.url, 1280)
        try:
            expect = playwright_api.expect
            sizes = await _charts_drawn(page)
            assert all(s["w"] > 0 and s["h"] > 0 for s in sizes), sizes
            # the requests chart has a line per backend and a point with this minute's 12 requests
            legend = page.locator('[data-chart="requests"] .u-legend')
            await expect(legend).to_contain_text("gpu1 requests")
            view = page.locator('#migration [data-route="chat"]')
            await expect(view).to_contain_text("12 requests in the last hour")
            arm_a = view.locator('tr[data-arm="gpu1:llama3.2:latest"]')
            arm_b = view.locator('tr[data-arm="gpu1:qwen2.5:7b"]')
            stats = await page.evaluate("fetch('../admin/stats').then(r => r.json())")
            arms = {a["arm"]: a for a in stats["migration"][0]["arms"]}
            a, b = arms["gpu1:llama3.2:latest"], arms["gpu1:qwen2.5:7b"]
            assert a["requests"] + b["requests"] == 12 and a["errors"] + b["errors"] == 1
            assert (a["weight"], b["weight"]) == (0.75, 0.25)
            await expect(arm_a.locator('[data-field="requests"]')).to_have_text(str(a["requests"]))
            await expect(arm_b.locator('[data-field="requests"]')).to_have_text(str(b["requests"]))
            await expect(arm_a).to_contain_text("75.0%")
            await expect(arm_a.locator('[data-field="share"]')).to_contain_text(f"{a['requests'] / 12 * 100:.1f}%")
            await _until(lambda: len(gpu2.bodies("/api/chat")) == 12, "the twelve shadows to reach gpu2")
            shadow = view.locator('[data-testid="shadows"] tr[data-shadow="gpu2"]')
            await expect(shadow).to_contain_text("ok 12", timeout=10_000)
            await expect(view.locator('[data-testid="shadows"]')).to_contain_text("errors 1")
            credentials = page.locator("#credentials tbody")
            await expect(credentials.locator('tr[data-credential="web-app"] td').nth(1)).to_have_text("9")
            await expect(credentials.locator('tr[data-credential="batch-jobs"] td').nth(1)).to_have_text("3")
            await expect(page.locator("#ollama tbody")).to_contain_text("llama3.2:latest")
            await page.screenshot(path=str(ROOT / "docs" / "dashboard.png"), full_page=True)
            assert errors == []
        finally:
            await browser.close()


@pytest.mark.browser
async def test_dashboard_at_420_px_has_no_overflow(migration):
    """At 420 px the charts fit and nothing outside a scrolling table is wider than the window."""
    gateway, _, _ = migration
    async with playwright_api.async_playwright() as p:
        browser, page, errors = await _open(p, gateway.url, 420)
        try:
            await playwright_api.expect(page.locator('#migration [data-route="chat"]')).to_contain_text(
                "12 requests in the last hour")
            sizes = await _charts_drawn(page)
            assert all(0 < s["cw"] <= 420 for s in sizes), sizes
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 420
            wide = await page.evaluate("""() => [...document.querySelectorAll('body *')]
                .filter(e => !e.closest('.table-wrap') && e.getBoundingClientRect().right > window.innerWidth + 0.5)
                .map(e => e.tagName + '.' + e.className)""")
            assert wide == []
            assert errors == []
        finally:
            await browser.close()


@pytest.mark.browser
async def test_a_down_backend_still_lists_what_it_had_installed(migration):
    """gpu2 goes down: its card says down, its installed models stay listed, and the not-ready reasons show."""
    gateway, _, gpu2 = migration
    async with playwright_api.async_playwright() as p:
        browser, page, errors = await _open(p, gateway.url, 1280)
        try:
            expect = playwright_api.expect
            await expect(page.locator('#installed tr[data-backend="gpu2"][data-model="phi4:14b"]')).to_have_count(1)
            gpu2.down = True
            await expect(page.locator('#backends [data-backend="gpu2"] [data-health]')).to_have_attribute(
                "data-health", "down", timeout=10_000)
            await expect(page.locator('#installed tr[data-backend="gpu2"][data-model="phi4:14b"]')).to_have_count(1)
            assert errors == []
        finally:
            await browser.close()


@pytest.mark.browser
async def test_the_not_ready_pill_says_why(start_fake, start_gateway):
    """A required route whose only backend is down: the pill reads not ready and the reasons are spelled out."""
    down = await start_fake(models=["llama3.2:latest"])
    down.fake.down = True
    gateway = await start_gateway({
        "backends": [{"name": "gpu1", "type": "ollama", "url": down.url, "health_interval": 0.2}],
        "routes": [{"name": "chat", "models": ["gpt-4o"], "targets": [{"backend": "gpu1", "model": "llama3.2"}],
                    "required": True}],
        "auth": {"admin": AUTH}, "logging": {"requests": False},
    }, health_checks=True)
    async with playwright_api.async_playwright() as p:
        browser, page, errors = await _open(p, gateway.url, 420)
        try:
            expect = playwright_api.expect
            await expect(page.locator("#readiness")).to_have_text("not ready")
            reasons = page.locator("#reasons li")
            await expect(reasons).not_to_have_count(0)
            text = await reasons.first.text_content()
            assert "chat" in text and "gpu1" in text
            assert "gpu1" in (await page.locator("#readiness").get_attribute("title"))
        finally:
            await browser.close()
