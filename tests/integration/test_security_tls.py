"""Outbound TLS and credentials against real HTTPS fakes on 127.0.0.1, with a CA made at test time.

The CA and the server certificate come from the ``openssl`` command line (no test-only Python
dependency): verification fails without the CA (a 502 naming the backend), succeeds with
``ca_bundle``, and is skipped, with a warning, under ``tls_verify: false``.
"""

from __future__ import annotations

import base64
import logging
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.fakes.ollama import FakeOllama
from tests.fakes.openai import FakeOpenAI

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
ENV = {"OLLAMA_PW": "remote-ollama-pw-0001", "CLOUD_KEY": "sk-cloud-key-0002"}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a server certificate for IP 127.0.0.1 signed by it (EC keys: fast)."""
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Gateway Test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                               "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def server_ssl(pki: dict[str, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki["cert"], pki["key"])
    return ctx


def record_authorization(app: web.Application, seen: list[str | None]) -> None:
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        return await handler(request)

    app.middlewares.append(record)


@pytest.fixture
async def https_ollama(aiohttp_server: Any, pki: dict[str, Path]) -> tuple[FakeOllama, str, list[str | None]]:
    """A FakeOllama served over HTTPS on 127.0.0.1 that records the Authorization headers it gets."""
    fake, seen = FakeOllama(), []
    record_authorization(fake.app, seen)
    server = await aiohttp_server(fake.app, ssl=server_ssl(pki))
    url = str(server.make_url("")).rstrip("/")
    assert url.startswith("https://127.0.0.1:")
    return fake, url, seen


def tls_config(url: str, **backend: Any) -> dict[str, Any]:
    return {"backends": [{"name": "remote-gpu", "type": "ollama", "url": url, **backend}],
            "logging": {"requests": False}}


async def post(url: str, body: object = CHAT) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions", json=body) as resp:
            return resp.status, dict(resp.headers), await resp.read()


async def test_unknown_ca_fails_verification_with_502_naming_the_backend(https_ollama, start_gateway, caplog):
    """Default verification against the system store refuses the test CA: 502 naming the backend only."""
    fake, url, _ = https_ollama
    gw = await start_gateway(tls_config(url, username="gw", password="${OLLAMA_PW}"), environ=ENV)
    code, headers, raw = await post(gw.url)
    assert code == 502 and headers.get("x-should-retry") == "false"
    error = orjson.loads(raw)["error"]
    assert error["code"] == "upstream_unavailable" and "remote-gpu" in error["message"]
    assert "certificate" in error["message"].lower() or "tls" in error["message"].lower(), error["message"]
    text = raw.decode() + caplog.text
    assert url.split("//")[1] not in raw.decode() and ENV["OLLAMA_PW"] not in text
    assert fake.requests == []  # nothing was sent over the unverified connection


async def test_ca_bundle_makes_verification_succeed_and_sends_basic_auth(https_ollama, start_gateway, pki):
    """With ``ca_bundle`` the private CA is trusted; Basic credentials from the environment go along."""
    fake, url, seen = https_ollama
    gw = await start_gateway(tls_config(url, ca_bundle=str(pki["ca"]), username="gw", password="${OLLAMA_PW}"),
                             environ=ENV)
    code, _, raw = await post(gw.url)
    assert code == 200, raw
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == "Hello world"
    assert seen[-1] == "Basic " + base64.b64encode(f"gw:{ENV['OLLAMA_PW']}".encode()).decode()


async def test_ca_bundle_does_not_trust_a_certificate_for_another_name(aiohttp_server, start_gateway, pki):
    """The CA is trusted, but a URL naming ``localhost`` does not match the cert's IP 127.0.0.1."""
    fake = FakeOllama()
    server = await aiohttp_server(fake.app, ssl=server_ssl(pki))
    gw = await start_gateway(tls_config(f"https://localhost:{server.port}", ca_bundle=str(pki["ca"])))
    code, _, raw = await post(gw.url)
    assert code == 502 and "remote-gpu" in orjson.loads(raw)["error"]["message"]
    assert fake.requests == []


async def test_tls_verify_false_connects_and_logs_a_warning(https_ollama, start_gateway, caplog):
    """``tls_verify: false`` is an explicit opt-out: the request works and a warning names the backend."""
    _, url, _ = https_ollama
    caplog.set_level(logging.WARNING, logger="proxy.upstream.backend")
    gw = await start_gateway(tls_config(url, tls_verify=False))
    code, _, raw = await post(gw.url)
    assert code == 200, raw
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("TLS verification is OFF" in m and "remote-gpu" in m for m in warnings), warnings


async def test_cloud_backend_gets_bearer_key_from_env_over_verified_tls(aiohttp_server, start_gateway, pki):
    """An OpenAI-compatible backend over HTTPS (custom CA) receives ``Authorization: Bearer <env key>``."""
    cloud = FakeOpenAI()
    server = await aiohttp_server(cloud.app, ssl=server_ssl(pki))
    raw = {"backends": [{"name": "cloud", "type": "openai", "url": str(server.make_url("/v1")),
                         "api_key": "${CLOUD_KEY}", "ca_bundle": str(pki["ca"])}],
           "routes": [{"name": "chat", "models": ["gpt-4o-mini"], "targets": [{"backend": "cloud"}]}],
           "logging": {"requests": False}}
    gw = await start_gateway(raw, environ=ENV)
    code, _, body = await post(gw.url, {**CHAT, "model": "gpt-4o-mini"})
    assert code == 200, body
    assert cloud.requests[-1][3]["Authorization"] == "Bearer " + ENV["CLOUD_KEY"]
    assert ENV["CLOUD_KEY"] not in body.decode()


async def test_https_to_a_plain_http_port_is_a_502_tls_handshake_failure(fake_ollama, start_gateway):
    """An https:// URL whose server speaks plain HTTP fails the handshake: a 502 naming the backend."""
    gw = await start_gateway(tls_config(fake_ollama.url.replace("http://", "https://")))
    code, _, raw = await post(gw.url)
    error = orjson.loads(raw)["error"]
    assert code == 502 and "remote-gpu" in error["message"] and "TLS" in error["message"]
