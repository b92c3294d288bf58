"""A request is validated once, before routing: nothing reaches a backend, an image server or a shadow
for a body the gateway refuses."""

from __future__ import annotations

from typing import Any

import asyncio

import aiohttp

from tests.integration.test_routing import backend, routed
from tests.integration.test_security_ssrf import LOOPBACK_OPEN, SEEN, chat_with_image, image_server_app, resolver

BAD = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}


async def _post(url: str, body: dict[str, Any], path: str = "/v1/chat/completions") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(url + path, json=body) as resp:
        return resp.status, await resp.json()


async def test_an_openai_backend_never_receives_a_body_the_gateway_refuses(start_openai, start_gateway):
    """With the cloud as the only target, a wrong-typed field is still a 400 from the gateway, and the cloud gets nothing."""
    cloud, url = await start_openai()
    gw = await start_gateway(routed([backend("cloud", url, "openai")], {"targets": [{"backend": "cloud"}]}))
    code, body = await _post(gw.url, BAD)
    assert (code, body["error"]["param"]) == (400, "temperature")
    code, body = await _post(gw.url, {"model": "llama3.2", "input": 3}, "/v1/embeddings")
    assert (code, body["error"]["param"]) == (400, "input")
    assert cloud.requests == []


async def test_a_refused_body_is_not_shadowed(start_fake, start_gateway):
    """A 400 starts no shadow copy: the shadow backend receives no request."""
    primary, candidate = await start_fake(), await start_fake()
    raw = routed([backend("primary", primary.url), backend("candidate", candidate.url)],
                 {"targets": [{"backend": "primary"}], "shadow": {"backend": "candidate", "share": 1.0}})
    gw = await start_gateway(raw)
    code, _ = await _post(gw.url, BAD)
    assert code == 400
    code, _ = await _post(gw.url, {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
    assert code == 200
    for _ in range(50):  # the valid request's shadow arrives in the background
        if candidate.fake.requests:
            break
        await asyncio.sleep(0.02)
    assert [p for _, p, _, _ in candidate.fake.requests] == ["/api/chat"]
    assert [p for _, p, _, _ in primary.fake.requests] == ["/api/chat"]


async def test_images_are_fetched_only_for_a_valid_body(fake_ollama, aiohttp_server):
    """With image fetching on, a body with an invalid field fetches no image; a valid one fetches it once."""
    from proxy.app import create_app
    from proxy.config import parse_config
    from proxy.server import start_site
    from tests.conftest import one_backend_config

    images = await aiohttp_server(image_server_app())
    raw = one_backend_config(fake_ollama.url, image_fetch={"enabled": True, "allow_hosts": ["images.test"],
                                                            "deny_networks": LOOPBACK_OPEN})
    config = parse_config(raw, {})
    app = create_app(config, health_checks=False, image_resolver=resolver({"images.test": ["127.0.0.1"]}))
    serving, port = await start_site(app, config, host="127.0.0.1", port=0)
    try:
        url = f"http://127.0.0.1:{port}"
        body = chat_with_image(f"http://images.test:{images.port}/cat.png")
        code, answer = await _post(url, {**body, "temperature": "hot"})
        assert (code, answer["error"]["param"]) == (400, "temperature")
        assert images.app[SEEN] == [] and fake_ollama.fake.requests == []
        code, _ = await _post(url, body)
        assert code == 200
        assert images.app[SEEN] == ["/cat.png"]
        sent = fake_ollama.fake.bodies("/api/chat")[0]["messages"][0]
        assert len(sent["images"]) == 1 and sent["images"][0] != "iVBORw0KGgo="
    finally:
        await serving.cleanup()
