"""What a route adds to requests (Ollama options, keep_alive) and to responses (backend headers)."""

from __future__ import annotations

from tests.integration.test_routing import HI, backend, routed


async def test_route_options_and_keep_alive_are_injected(fake_ollama, start_gateway):
    """A route's ``options`` and ``keep_alive`` reach Ollama when the client did not set them."""
    route = {"targets": [{"backend": "local", "model": "llama3.2:3b"}], "options": {"num_ctx": 8192},
             "keep_alive": "30m"}
    fake_ollama.fake.models.append("llama3.2:3b")
    gw = await start_gateway(routed([backend("local", fake_ollama.url)], route))
    async with gw.client() as client:
        await client.chat.completions.create(model="llama3.2", messages=HI, temperature=0.2)
    sent = fake_ollama.fake.bodies("/api/chat")[0]
    assert sent["model"] == "llama3.2:3b"
    assert sent["options"]["num_ctx"] == 8192
    assert sent["options"]["temperature"] == 0.2
    assert sent["keep_alive"] == "30m"


async def test_client_options_win_over_the_route(fake_ollama, start_gateway):
    """Options and keep_alive the client sends (``extra_body``) are kept, the route fills only the rest."""
    route = {"targets": [{"backend": "local"}], "options": {"num_ctx": 8192, "num_gpu": 99}, "keep_alive": "30m"}
    gw = await start_gateway(routed([backend("local", fake_ollama.url)], route))
    async with gw.client() as client:
        await client.completions.create(model="llama3.2", prompt="hi",
                                        extra_body={"options": {"num_ctx": 1024}, "keep_alive": "5m"})
    sent = fake_ollama.fake.bodies("/api/generate")[0]
    assert sent["options"]["num_ctx"] == 1024
    assert sent["options"]["num_gpu"] == 99
    assert sent["keep_alive"] == "5m"


async def test_responses_name_the_backend_and_model(fake_ollama, start_gateway):
    """``x-gateway-backend`` and ``x-gateway-model`` say which backend and model served the answer."""
    fake_ollama.fake.models.append("llama3.2:3b")
    route = {"targets": [{"backend": "local", "model": "llama3.2:3b"}]}
    gw = await start_gateway(routed([backend("local", fake_ollama.url)], route))
    async with gw.client() as client:
        raw = await client.chat.completions.with_raw_response.create(model="llama3.2", messages=HI)
        streamed = await client.chat.completions.with_raw_response.create(model="llama3.2", messages=HI,
                                                                          stream=True)
        async for _ in streamed.parse():
            pass
    for headers in (raw.headers, streamed.headers):
        assert headers["x-gateway-backend"] == "local"
        assert headers["x-gateway-model"] == "llama3.2:3b"


async def test_backend_headers_can_be_turned_off(fake_ollama, start_gateway):
    """With ``server.backend_headers: false`` responses do not reveal the backend."""
    gw = await start_gateway(routed([backend("local", fake_ollama.url)], {"targets": [{"backend": "local"}]},
                                    server={"backend_headers": False}))
    async with gw.client() as client:
        raw = await client.chat.completions.with_raw_response.create(model="llama3.2", messages=HI)
    assert raw.parse().choices[0].message.content == "Hello world"
    assert "x-gateway-backend" not in raw.headers
    assert "x-gateway-model" not in raw.headers
