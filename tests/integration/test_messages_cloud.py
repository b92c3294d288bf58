"""The ``anthropic`` backend type: Messages requests falling back from Ollama to an Anthropic-compatible
cloud (the fake Anthropic), relayed unchanged; other doors refused with an error naming the type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from proxy.config import ConfigError, parse_config
from tests.fakes import anthropic as a
from tests.fakes.anthropic import FakeAnthropic
from tests.integration.test_observability import eventually, scrape, series
from tests.integration.test_routing import closed_port

HI = [{"role": "user", "content": "hi"}]
ENV = {"ANTHROPIC_API_KEY": "sk-ant-cloud-0001"}


@pytest.fixture
async def start_anthropic(aiohttp_server: Any) -> Callable[..., Awaitable[tuple[FakeAnthropic, str]]]:
    """Start a FakeAnthropic; returns it and its base url (what ANTHROPIC_BASE_URL would be)."""

    async def start(**kwargs: Any) -> tuple[FakeAnthropic, str]:
        fake = FakeAnthropic(**kwargs)
        server = await aiohttp_server(fake.app)
        return fake, str(server.make_url("")).rstrip("/")

    return start


def cloud_config(cloud_url: str, *, primary: str | None = None, **extra: Any) -> dict[str, Any]:
    """Route ``claude``: a dead (or given) Ollama first, then the Anthropic cloud under the cloud's name."""
    return {"backends": [{"name": "local", "type": "ollama", "url": primary or f"http://127.0.0.1:{closed_port()}"},
                         {"name": "cloud", "type": "anthropic", "url": cloud_url, "api_key": "${ANTHROPIC_API_KEY}"}],
            "routes": [{"name": "claude", "models": ["claude-*"],
                        "targets": [{"backend": "local", "model": "llama3.2"}],
                        "fallback": [{"backend": "cloud", "model": "claude-sonnet-4-5"}]}],
            "logging": {"requests": False}, **extra}


def client(gw: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.url, api_key="sk-client", max_retries=0, timeout=20)


async def test_falls_back_to_the_anthropic_cloud_relaying_the_answer(start_anthropic, start_gateway):
    """Ollama refused: the cloud gets the client's body renamed (without the Ollama extensions), its own key and
    version; the answer is its own."""
    fake, url = await start_anthropic()
    gw = await start_gateway(cloud_config(url), environ=ENV)
    async with client(gw) as c:
        raw = await c.messages.with_raw_response.create(model="claude-opus-x", max_tokens=64000, messages=HI,
                                                         metadata={"user_id": "u1"},
                                                         extra_body={"options": {"num_ctx": 8192}, "keep_alive": "5m"})
    message = await raw.parse()
    assert (message.id, message.model, message.content[0].text) == (  # type: ignore[union-attr]
        "msg_cloud", "claude-sonnet-4-5", "Hello from the cloud")
    assert raw.headers["x-gateway-backend"] == "cloud"
    [(method, path, body, headers)] = fake.requests
    assert (method, path) == ("POST", "/v1/messages")
    assert body == {"model": "claude-sonnet-4-5", "max_tokens": 64000, "messages": HI, "metadata": {"user_id": "u1"}}
    assert headers["x-api-key"] == ENV["ANTHROPIC_API_KEY"] and headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in headers and "sk-client" not in str(headers)


async def test_cloud_stream_is_relayed_as_is(start_anthropic, start_gateway):
    """A streamed fallback: the cloud's event stream reaches the SDK unchanged, ``?beta=true`` passed on."""
    fake, url = await start_anthropic()
    gw = await start_gateway(cloud_config(url), environ=ENV)
    async with client(gw) as c:
        async with c.beta.messages.stream(model="claude-x", max_tokens=10, messages=HI,
                                          betas=["context-management-2025-06-27"]) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
    async with aiohttp.ClientSession() as http:  # what Claude Code sends
        async with http.post(gw.url + "/v1/messages?beta=true&other=1",
                             json={"model": "claude-x", "max_tokens": 5, "messages": HI}) as resp:
            assert (resp.status, (await resp.json())["id"]) == (200, "msg_cloud")
    assert pieces == ["Hello", " from", " the", " cloud"]
    assert (final.id, final.usage.output_tokens) == ("msg_cloud", 4)
    assert fake.queries == ["", "beta=true"] and fake.bodies("/v1/messages")[0]["stream"] is True
    labels = {"route": "claude", "model": "other", "backend": "cloud"}  # the cloud's usage, streamed and whole
    await eventually(lambda: scrape(gw).get(series("proxy_tokens_total", **labels, kind="prompt")) == 22.0)
    assert scrape(gw)[series("proxy_tokens_total", **labels, kind="completion")] == 8.0


async def test_cloud_errors_and_error_events_reach_the_sdk_unchanged(start_anthropic, start_gateway):
    """The cloud's 529 keeps its status and body (OverloadedError); its mid-stream error event makes the stream raise."""
    fake, url = await start_anthropic()
    fake.script("/v1/messages", a.status(529, "Overloaded", type="overloaded_error"), a.ok(fail_after=2))
    gw = await start_gateway(cloud_config(url), environ=ENV)
    async with client(gw) as c:
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            await c.messages.create(model="claude-x", max_tokens=10, messages=HI)
        seen: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as broken:
            async with c.messages.stream(model="claude-x", max_tokens=10, messages=HI) as stream:
                async for text in stream.text_stream:
                    seen.append(text)
    assert overloaded.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert seen == ["Hello", " from"]
    assert broken.value.body == {"type": "error", "error": {"type": "overloaded_error",  # type: ignore[comparison-overlap]
                                                            "message": "Overloaded"}}


async def test_a_cloud_refusing_the_gateway_key_is_a_502_not_the_clients_401(start_anthropic, start_gateway):
    """The cloud's 401 is about the gateway's key: the client gets a 502 naming the backend, not its own 401."""
    fake, url = await start_anthropic()
    gw = await start_gateway(cloud_config(url), environ={"ANTHROPIC_API_KEY": ""})
    async with client(gw) as c:
        with pytest.raises(anthropic.InternalServerError) as info:
            await c.messages.create(model="claude-x", max_tokens=10, messages=HI)
    assert info.value.status_code == 502
    assert info.value.body["error"] == {"type": "api_error",  # type: ignore[index]
                                        "message": "backend cloud refused the gateway's credentials"}
    [(_, _, _, headers)] = fake.requests
    assert "x-api-key" not in headers and headers["anthropic-version"] == "2023-06-01"


async def test_a_cloud_stream_cut_short_makes_the_sdk_stream_raise(start_anthropic, start_gateway):
    """The cloud dropping the connection mid-stream ends the relayed stream with Anthropic's error event."""
    fake, url = await start_anthropic()
    fake.script("/v1/messages", a.cut_after_start())
    gw = await start_gateway(cloud_config(url), environ=ENV)
    async with client(gw) as c:
        with pytest.raises(anthropic.APIStatusError):
            async with c.messages.stream(model="claude-x", max_tokens=10, messages=HI) as stream:
                await stream.get_final_message()


async def test_chat_completions_reaching_an_anthropic_backend_get_a_clear_error(start_anthropic, start_gateway):
    """No translation exists from chat completions to Anthropic's API: a 502 naming the backend type, nothing sent."""
    fake, url = await start_anthropic()
    raw = cloud_config(url)
    raw["routes"][0]["targets"] = [{"backend": "cloud"}]
    raw["routes"][0].pop("fallback")
    gw = await start_gateway(raw, environ=ENV)
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.create(model="claude-x", messages=HI)  # type: ignore[arg-type]
    assert info.value.status_code == 502
    assert info.value.body == {  # type: ignore[comparison-overlap]
        "message": "backend cloud is of type anthropic: it serves only Anthropic Messages requests "
                   "(POST /v1/messages); no translation exists for this endpoint",
        "type": "api_error", "param": None, "code": "unsupported_backend"}
    assert info.value.response.headers["x-should-retry"] == "false"
    assert fake.requests == []


async def test_messages_reaching_an_openai_backend_get_a_clear_error(start_openai, start_gateway):
    """No translation exists from Messages to an OpenAI-type backend: a 502 in Anthropic's shape naming it."""
    fake, url = await start_openai()
    gw = await start_gateway({"backends": [{"name": "oai", "type": "openai", "url": url}],
                              "logging": {"requests": False}})
    async with client(gw) as c:
        with pytest.raises(anthropic.InternalServerError) as info:
            await c.messages.create(model="gpt-4o-mini", max_tokens=10, messages=HI)
    assert info.value.body["error"] == {"type": "api_error", "message": (  # type: ignore[index]
        "backend oai is of type openai: no translation exists from Anthropic's Messages API to it "
        "(route Messages requests to ollama or anthropic backends)")}
    assert fake.requests == []


async def test_embeddings_reaching_an_anthropic_backend_are_refused_unsent(start_anthropic, start_gateway):
    """Other doors' calls (here /api/embed for /v1/embeddings) are never sent to an anthropic backend."""
    fake, url = await start_anthropic()
    raw = cloud_config(url)
    raw["routes"][0]["targets"] = [{"backend": "cloud"}]
    raw["routes"][0].pop("fallback")
    gw = await start_gateway(raw, environ=ENV)
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/embeddings", json={"model": "claude-x", "input": "hi"}) as resp:
            status, body = resp.status, await resp.json()
    assert (status, body["error"]["code"]) == (502, "unsupported_backend")
    assert fake.requests == []


@pytest.mark.parametrize(("backend", "problem"), [
    ({"api_key": None}, "backends[0].api_key: is required for an anthropic backend"),
    ({"username": "u", "password": "p"}, "backends[0].username: an anthropic backend takes api_key"),
    ({"api_key": "${MISSING_KEY}"}, "backends[0].api_key: environment variable MISSING_KEY is not set"),
])
def test_anthropic_backend_config_needs_its_key_from_the_environment(backend, problem):
    """An anthropic backend takes api_key (x-api-key), normally ``${ANTHROPIC_API_KEY}``; mistakes name the key."""
    entry = {"name": "cloud", "type": "anthropic", "url": "https://api.anthropic.com", **backend}
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        parse_config({"backends": [entry]}, {})
    assert problem in str(info.value)


def test_anthropic_backend_config_parses():
    """type: anthropic with api_key from the environment is accepted."""
    config = parse_config({"backends": [{"name": "cloud", "type": "anthropic", "url": "https://api.anthropic.com",
                                         "api_key": "${ANTHROPIC_API_KEY}"}]}, ENV)
    assert (config.backends[0].kind, config.backends[0].api_key) == ("anthropic", ENV["ANTHROPIC_API_KEY"])


async def test_an_anthropic_backend_is_health_checked_on_its_models_list(start_anthropic, start_gateway):
    """Health checks ask an Anthropic backend ``GET /v1/models`` (with its key), so it shows up, not down."""
    from proxy.background.health import check_all

    fake, url = await start_anthropic()
    gw = await start_gateway(cloud_config(url), environ={"ANTHROPIC_API_KEY": "sk-ant-cloud"})
    await check_all(gw.backends)
    assert gw.backends.health["cloud"].up is True
    ((method, path, _, headers),) = [r for r in fake.requests if r[1] == "/v1/models"]
    assert (method, headers["x-api-key"]) == ("GET", "sk-ant-cloud")
