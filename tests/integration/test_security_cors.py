"""CORS through the running gateway: off by default, per origin when ``server.cors_origins`` is set."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from proxy.cors import allowed_origin, preflight_headers
from tests.conftest import one_backend_config

APP = "https://app.example"
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
# what openai-node sends from a browser (dangerouslyAllowBrowser), plus the Beta header
SDK_HEADERS = ("authorization, content-type, accept, openai-beta, x-stainless-arch, x-stainless-lang, "
               "x-stainless-os, x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, "
               "x-stainless-runtime-version, x-stainless-timeout")


async def call(url: str, method: str, path: str, headers: dict[str, str], json: Any = None) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url + path, headers=headers, json=json) as resp:
            return resp.status, resp.headers, await resp.read()


def preflight(origin: str, requested: str = SDK_HEADERS) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": requested}


def cors_headers(headers: Any) -> set[str]:
    return {k.lower() for k in headers if k.lower().startswith("access-control-")}


@pytest.fixture
async def cors_gateway(fake_ollama, start_gateway):
    raw = one_backend_config(fake_ollama.url, server={"cors_origins": [APP, "http://localhost:5173"]},
                             auth={"credentials": [{"name": "web", "api_key": "${WEB_KEY}"}]})
    return await start_gateway(raw, environ={"WEB_KEY": "sk-web-0001"})


async def test_cors_is_off_by_default(gateway):
    """Without cors_origins neither a preflight nor a request gets any Access-Control-* header."""
    code, headers, _ = await call(gateway.url, "OPTIONS", "/v1/chat/completions", preflight(APP))
    assert code >= 400 and cors_headers(headers) == set()
    code, headers, _ = await call(gateway.url, "POST", "/v1/chat/completions", {"Origin": APP}, CHAT)
    assert code == 200 and cors_headers(headers) == set()


async def test_preflight_from_an_allowed_origin_allows_the_sdk_headers(cors_gateway):
    """An allowed origin's preflight is a 204 allowing POST and every header the OpenAI SDK sends,
    without a credential (browsers send none with a preflight)."""
    code, headers, _ = await call(cors_gateway.url, "OPTIONS", "/v1/chat/completions", preflight(APP))
    assert code == 204
    assert headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {h.strip() for h in SDK_HEADERS.split(",")}
    assert "Origin" in headers["Vary"]


async def test_preflight_from_another_origin_gets_no_cors_headers(cors_gateway):
    """Another origin (or a look-alike) gets no Access-Control-* header, so the browser refuses."""
    for origin in ("https://evil.example", "https://app.example.evil.com", "http://app.example", "null"):
        code, headers, _ = await call(cors_gateway.url, "OPTIONS", "/v1/chat/completions", preflight(origin))
        assert cors_headers(headers) == set(), origin
        assert code >= 400


async def test_unknown_request_headers_are_not_echoed(cors_gateway):
    """Only headers the gateway accepts are allowed; an unknown one is left out of the answer."""
    _, headers, _ = await call(cors_gateway.url, "OPTIONS", "/v1/chat/completions",
                               preflight(APP, "authorization, x-evil-header"))
    assert headers["Access-Control-Allow-Headers"] == "authorization"


async def test_responses_to_an_allowed_origin_carry_cors_headers_even_errors_and_streams(cors_gateway):
    """A 200, a streamed 200 and a 401 all carry Allow-Origin for the allowed origin and expose
    X-Request-ID; another origin's request is answered without them."""
    auth = {"Origin": APP, "Authorization": "Bearer sk-web-0001"}
    code, headers, _ = await call(cors_gateway.url, "POST", "/v1/chat/completions", auth, CHAT)
    assert code == 200 and headers["Access-Control-Allow-Origin"] == APP
    assert "X-Request-ID" in headers["Access-Control-Expose-Headers"]
    code, headers, body = await call(cors_gateway.url, "POST", "/v1/chat/completions", auth, {**CHAT, "stream": True})
    assert code == 200 and body.endswith(b"data: [DONE]\n\n") and headers["Access-Control-Allow-Origin"] == APP
    code, headers, _ = await call(cors_gateway.url, "POST", "/v1/chat/completions", {"Origin": APP}, CHAT)
    assert code == 401 and headers["Access-Control-Allow-Origin"] == APP  # the page can read the error
    code, headers, _ = await call(cors_gateway.url, "POST", "/v1/chat/completions",
                                  {"Origin": "https://evil.example", "Authorization": "Bearer sk-web-0001"}, CHAT)
    assert code == 200 and cors_headers(headers) == set()


async def test_wildcard_origin_allows_any_origin(fake_ollama, start_gateway):
    """``cors_origins: ["*"]`` answers every origin with ``*``."""
    gw = await start_gateway(one_backend_config(fake_ollama.url, server={"cors_origins": ["*"]}))
    code, headers, _ = await call(gw.url, "OPTIONS", "/v1/models", preflight("https://any.example"))
    assert code == 204 and headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("origin, origins, expected", [
    (APP, (APP,), APP), (APP + "/", (APP,), APP + "/"), (APP, (APP + "/",), APP), ("https://x", (APP,), None),
    (None, (APP,), None), ("", (APP,), None), (APP, (), None), ("https://x", ("*",), "*"),
])
def test_allowed_origin_table(origin, origins, expected):
    """Exact origin match (a trailing slash aside), ``*`` for any, nothing when none is configured."""
    assert allowed_origin(origin, origins) == expected


def test_preflight_without_a_method_is_not_answered():
    """A preflight must name the method it asks about."""
    assert preflight_headers(APP, None, "authorization", (APP,)) is None
