"""SSRF through the running gateway: image URLs in chat messages with ``image_fetch`` on and off.

The app takes an injected resolver (``create_app(image_resolver=...)``), so DNS names that resolve
to private addresses are tested end to end, not only against the fetcher. Every refusal is a 400
naming the image's path in ``param``, made before any connection: the image server's request log
and the fake Ollama stay empty.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy.app import create_app
from proxy.config import parse_config
from proxy.imagefetch import Resolver
from proxy.server import start_site
from tests.conftest import one_backend_config


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


PNG = _png()
PARAM = "messages[0].content[1].image_url.url"
SEEN = web.AppKey("seen", list)
LOOPBACK_OPEN = ["10.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]


def image_server_app() -> web.Application:
    """A PNG, a redirector, an HTML page, a big image and a slow one; records every request path."""
    app = web.Application()
    app[SEEN] = []

    async def png(request: web.Request) -> web.StreamResponse:
        request.app[SEEN].append(request.path_qs)
        if request.path == "/html":
            return web.Response(body=b"<html></html>", content_type="text/html")
        if request.path == "/big":
            return web.Response(body=PNG + b"\0" * 50_000, content_type="image/png")
        if request.path == "/slow":
            await asyncio.sleep(2)
        if request.path == "/r":
            raise web.HTTPFound(request.query["to"])
        return web.Response(body=PNG, content_type="image/png")

    app.router.add_get("/{name}", png)
    return app


def resolver(mapping: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in mapping:
            raise OSError(f"unknown host {host}")
        return list(mapping[host])

    return resolve


def chat_with_image(url: object) -> dict[str, Any]:
    return {"model": "llama3.2", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}


@pytest.fixture
async def images(aiohttp_server: Any) -> Any:
    return await aiohttp_server(image_server_app())


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Start the gateway with an ``image_fetch`` section and an injected resolver; returns its URL."""
    runners: list[web.AppRunner] = []

    async def go(ollama_url: str, image_fetch: dict[str, Any] | None, mapping: dict[str, list[str]] | None = None) -> str:
        raw = one_backend_config(ollama_url, **({"image_fetch": image_fetch} if image_fetch is not None else {}))
        config = parse_config(raw, {})
        app = create_app(config, health_checks=False, image_resolver=resolver(mapping or {}))
        runner, port = await start_site(app, config, host="127.0.0.1", port=0)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield go
    for runner in runners:
        await runner.cleanup()


async def post(url: str, body: object) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions", json=body) as resp:
            return resp.status, orjson.loads(await resp.read())


async def test_image_urls_are_refused_when_image_fetch_is_off(fake_ollama, start, images):
    """Off by default: an http(s) image URL is a 400 that says so, and nothing is fetched."""
    gw = await start(fake_ollama.url, None)
    code, body = await post(gw, chat_with_image(str(images.make_url("/cat.png"))))
    assert code == 400 and body["error"]["param"] == PARAM
    assert "image_fetch is disabled" in body["error"]["message"]
    assert images.app[SEEN] == [] and fake_ollama.fake.requests == []


async def test_allowed_image_is_fetched_and_sent_to_ollama_as_base64(fake_ollama, start, images):
    """An allowed host is fetched (via the pinned address) and reaches Ollama in ``images``."""
    gw = await start(fake_ollama.url, {"enabled": True, "allow_hosts": ["images.test"],
                                       "deny_networks": LOOPBACK_OPEN}, {"images.test": ["127.0.0.1"]})
    code, body = await post(gw, chat_with_image(f"http://images.test:{images.port}/cat.png"))
    assert code == 200, body
    sent = fake_ollama.fake.bodies("/api/chat")[0]["messages"][0]
    assert sent["images"] == [base64.b64encode(PNG).decode()] and sent["content"] == "what is this?"


@pytest.mark.parametrize("url, code", [
    ("http://127.0.0.1:{port}/cat.png", "image_address_denied"),
    ("http://[::1]:{port}/cat.png", "image_address_denied"),
    ("http://[::ffff:127.0.0.1]:{port}/cat.png", "image_address_denied"),
    ("http://[::127.0.0.1]:{port}/cat.png", "image_address_denied"),  # IPv4-compatible
    ("http://[::ffff:0:7f00:1]:{port}/cat.png", "image_address_denied"),  # IPv4-translated
    ("http://[::ffff:0:a9fe:a9fe]/latest/meta-data/", "image_address_denied"),  # translated 169.254.169.254
    ("http://v4compat.test:{port}/cat.png", "image_address_denied"),  # DNS -> ::10.0.0.1
    ("http://169.254.169.254/latest/meta-data/", "image_address_denied"),
    ("http://10.0.0.1/cat.png", "image_address_denied"),
    ("http://192.168.1.1/cat.png", "image_address_denied"),
    ("http://0.0.0.0:{port}/cat.png", "image_address_denied"),
    ("http://loopback.test:{port}/cat.png", "image_address_denied"),  # DNS -> 127.0.0.1
    ("http://metadata.test/computeMetadata/v1/", "image_address_denied"),  # DNS -> 169.254.169.254
    ("http://mixed.test:{port}/cat.png", "image_address_denied"),  # one public, one private answer
    ("http://v6private.test/cat.png", "image_address_denied"),  # DNS -> fd00::1
    ("http://nowhere.test/cat.png", "image_resolve_failed"),
    ("http://user:pw@images.test/cat.png", "invalid_image_url"),
    ("file:///etc/passwd", None),
    ("gopher://127.0.0.1:6379/_INFO", None),
])
async def test_private_and_metadata_addresses_are_refused_with_default_deny_list(fake_ollama, start, images, url, code):
    """With every host allowed, the default deny list refuses loopback, private, link-local and
    metadata addresses, literal or after DNS; the image server is never contacted."""
    mapping = {"loopback.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"],
               "mixed.test": ["93.184.216.34", "10.1.2.3"], "v6private.test": ["fd00::1"],
               "v4compat.test": ["::10.0.0.1"]}
    gw = await start(fake_ollama.url, {"enabled": True, "allow_hosts": ["*"]}, mapping)
    status, body = await post(gw, chat_with_image(url.format(port=images.port)))
    assert status == 400, body
    error = body["error"]
    assert error["param"] == PARAM and error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code
    assert "127.0.0.1" not in error["message"] or url.startswith("http://127.0.0.1")
    assert images.app[SEEN] == [] and fake_ollama.fake.requests == []


@pytest.mark.parametrize("target, code", [
    ("http://10.0.0.5/cat.png", "image_address_denied"),
    ("http://169.254.169.254/latest/meta-data/iam/", "image_address_denied"),
    ("http://internal.test/cat.png", "image_address_denied"),  # DNS -> 192.168.1.20
    ("http://elsewhere.example/cat.png", "image_host_not_allowed"),
])
async def test_redirects_are_vetted_on_every_hop(fake_ollama, start, images, target, code):
    """An allowed first hop that redirects to a private or unlisted host is refused at that hop."""
    mapping = {"images.test": ["127.0.0.1"], "internal.test": ["192.168.1.20"]}
    gw = await start(fake_ollama.url, {"enabled": True, "allow_hosts": ["*.test", "10.0.0.5", "169.254.169.254"],
                                       "deny_networks": LOOPBACK_OPEN}, mapping)
    status, body = await post(gw, chat_with_image(f"http://images.test:{images.port}/r?to={target}"))
    assert status == 400 and body["error"]["code"] == code and body["error"]["param"] == PARAM
    assert len(images.app[SEEN]) == 1  # the first hop only
    assert fake_ollama.fake.requests == []


@pytest.mark.parametrize("path, settings, code", [
    ("/html", {}, "unsupported_image_type"),
    ("/big", {"max_bytes": 10_000}, "image_too_large"),
    ("/slow", {"timeout": 0.3}, "image_fetch_timeout"),
])
async def test_size_type_and_time_limits_apply_through_the_gateway(fake_ollama, start, images, path, settings, code):
    """A non-image, an image over max_bytes and a slow server are 400s naming the image."""
    gw = await start(fake_ollama.url, {"enabled": True, "allow_hosts": ["images.test"],
                                       "deny_networks": LOOPBACK_OPEN, **settings}, {"images.test": ["127.0.0.1"]})
    status, body = await post(gw, chat_with_image(f"http://images.test:{images.port}{path}"))
    assert status == 400 and body["error"]["code"] == code and body["error"]["param"] == PARAM
    assert fake_ollama.fake.requests == []


async def test_host_outside_allow_hosts_is_refused_before_dns(fake_ollama, start, images):
    """A host not in allow_hosts is refused without being resolved or contacted."""
    gw = await start(fake_ollama.url, {"enabled": True, "allow_hosts": ["images.test"]})
    status, body = await post(gw, chat_with_image("http://evil.example/cat.png"))
    assert status == 400 and body["error"]["code"] == "image_host_not_allowed"


async def test_gateway_carries_on_after_refusals(fake_ollama, start, images):
    """Many refused fetches in parallel do not disturb a normal request."""
    gw = await start(fake_ollama.url, {"enabled": True, "allow_hosts": ["*"]}, {})
    bad = [post(gw, chat_with_image(f"http://10.0.0.{i}/x.png")) for i in range(20)]
    results = await asyncio.gather(*bad, post(gw, {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}))
    assert [r[0] for r in results] == [400] * 20 + [200]
