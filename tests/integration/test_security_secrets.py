"""No configured secret ever leaves the gateway: not in logs (caplog and the request log file),
responses (errors included), /metrics, /status, the admin API or the dashboard."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest

from proxy.auth import hash_secret
from proxy.config import ConfigError, parse_config
from tests.fakes.ollama import error_line_after, status
from tests.fakes.openai import FakeOpenAI
from tests.fakes.openai import status as openai_status

SECRETS = {
    "OLLAMA_PW": "ollama-basic-pw-7d1e",
    "CLOUD_KEY": "sk-cloud-bearer-93f0",
    "CLIENT_KEY": "sk-client-plain-51aa",
    "ADMIN_KEY": "adm-admin-key-c0de",
}
HASHED_KEY = "sk-client-hashed-e4b2"
WRONG_KEY = "sk-presented-wrong-0bad"  # what an attacker sends must not be logged either
ALL = (*SECRETS.values(), HASHED_KEY, WRONG_KEY)


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(ollama_url: str, cloud_url: str, log_file: str) -> dict[str, Any]:
    return {
        "backends": [
            {"name": "gpu", "type": "ollama", "url": ollama_url, "username": "gw", "password": "${OLLAMA_PW}"},
            {"name": "dead", "type": "ollama", "url": f"http://127.0.0.1:{closed_port()}",
             "username": "gw", "password": "${OLLAMA_PW}"},
            {"name": "cloud", "type": "openai", "url": cloud_url, "api_key": "${CLOUD_KEY}"},
        ],
        "routes": [
            {"name": "local", "models": ["llama3.2"], "targets": [{"backend": "gpu"}]},
            {"name": "down", "models": ["broken"], "targets": [{"backend": "dead"}]},
            {"name": "cloud", "models": ["gpt-4o-mini"], "targets": [{"backend": "cloud"}]},
        ],
        "auth": {"credentials": [{"name": "app", "api_key": "${CLIENT_KEY}"},
                                 {"name": "hashed-app", "api_key_hash": hash_secret(HASHED_KEY)}],
                 "admin": {"api_key": "${ADMIN_KEY}"}},
        "logging": {"requests": True, "file": log_file, "format": "json", "level": "debug"},
    }


STATUSES: list[int] = []


async def fetch(session: aiohttp.ClientSession, method: str, url: str, key: str | None, **kw: Any) -> bytes:
    """Status line, headers and body of one exchange, as bytes to search."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with session.request(method, url, headers=headers, **kw) as resp:
        STATUSES.append(resp.status)
        return f"{resp.status} {dict(resp.headers)}\n".encode() + await resp.read()


async def test_no_secret_appears_in_logs_responses_metrics_or_dashboard(
        start_fake, start_gateway, aiohttp_server, tmp_path, caplog):
    """Success, wrong keys, backend 401s, unreachable backends, mid-stream errors and every admin
    page: the captured logs, the request log and every response body and header stay secret-free."""
    caplog.set_level(logging.DEBUG)
    STATUSES.clear()
    ollama = await start_fake()
    cloud = FakeOpenAI()
    cloud_server = await aiohttp_server(cloud.app)
    log_file = tmp_path / "requests.log"
    gw = await start_gateway(config(ollama.url, str(cloud_server.make_url("/v1")), str(log_file)),
                             environ=SECRETS, health_checks=True)
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    seen: list[bytes] = []
    async with aiohttp.ClientSession() as s:
        base = gw.url
        for key in (SECRETS["CLIENT_KEY"], HASHED_KEY):
            seen.append(await fetch(s, "POST", base + "/v1/chat/completions", key, json={**chat, "model": "llama3.2"}))
        seen.append(await fetch(s, "POST", base + "/v1/chat/completions", SECRETS["CLIENT_KEY"],
                                json={**chat, "model": "gpt-4o-mini"}))
        seen.append(await fetch(s, "POST", base + "/v1/chat/completions", WRONG_KEY, json={**chat, "model": "llama3.2"}))
        seen.append(await fetch(s, "GET", base + "/metrics", WRONG_KEY))
        seen.append(await fetch(s, "GET", base + "/metrics", SECRETS["CLIENT_KEY"]))
        ollama.fake.script("/api/chat", status(401, "unauthorized"), status(403, "forbidden"),
                           status(500, "boom"), error_line_after(1, "runner crashed"))
        for _ in range(3):
            seen.append(await fetch(s, "POST", base + "/v1/chat/completions", SECRETS["CLIENT_KEY"],
                                    json={**chat, "model": "llama3.2"}))
        seen.append(await fetch(s, "POST", base + "/v1/chat/completions", SECRETS["CLIENT_KEY"],
                                json={**chat, "model": "llama3.2", "stream": True}))
        cloud.script("/v1/chat/completions", openai_status(401, "Incorrect API key provided", type="invalid_request_error",
                                                           error_code="invalid_api_key"))
        seen.append(await fetch(s, "POST", base + "/v1/chat/completions", SECRETS["CLIENT_KEY"],
                                json={**chat, "model": "gpt-4o-mini"}))
        seen.append(await fetch(s, "POST", base + "/v1/chat/completions", SECRETS["CLIENT_KEY"],
                                json={**chat, "model": "broken"}))
        seen.append(await fetch(s, "GET", base + "/v1/models", SECRETS["CLIENT_KEY"]))
        for path in ("/metrics", "/status", "/admin/stats", "/admin/models", "/dashboard", "/readyz"):
            seen.append(await fetch(s, "GET", base + path, SECRETS["ADMIN_KEY"]))
    answers = b"\n".join(seen).decode()
    assert {200, 401, 502} <= set(STATUSES)  # the scenarios really happened
    assert "proxy_requests_total" in answers
    logs = caplog.text + log_file.read_text() + repr(gw.config) + str(gw.config)
    assert '"credential":"app"' in log_file.read_text()
    for secret in ALL:
        assert secret not in answers, secret
        assert secret not in logs, secret
    # the backends' Authorization headers are not echoed back in any form either
    assert "Basic Z3c6" not in answers + logs  # base64 of "gw:"


@pytest.mark.parametrize("url", [
    "http://gw:hunter2-secret@ollama.internal:11434",
    "https://gw:hunter2-secret@ollama.internal",
])
def test_config_error_for_a_url_with_credentials_does_not_echo_the_password(url):
    """A backend URL with userinfo is rejected, and the error does not repeat the password."""
    with pytest.raises(ConfigError) as info:
        parse_config({"backends": [{"name": "x", "type": "ollama", "url": url}]}, {})
    assert "credentials" in str(info.value) and "hunter2-secret" not in str(info.value)


def test_config_error_for_a_non_http_url_with_credentials_does_not_echo_the_password():
    """A URL with userinfo and a wrong scheme is refused for its credentials, without repeating them."""
    with pytest.raises(ConfigError) as info:
        parse_config({"backends": [{"name": "x", "type": "ollama", "url": "ftp://gw:hunter2-secret@h"}]}, {})
    assert "hunter2-secret" not in str(info.value)


def test_env_url_with_credentials_is_rejected_without_echoing_it():
    """OLLAMA_BASE_URL with userinfo is refused and its password not repeated."""
    with pytest.raises(ConfigError) as info:
        parse_config({}, {"OLLAMA_BASE_URL": "http://u:hunter2-secret@localhost:11434"})
    assert "hunter2-secret" not in str(info.value)
