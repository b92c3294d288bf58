"""HTTPS towards clients (``server.tls``), mutual TLS (``client_ca``) and the certificate reload on
SIGHUP, against a private CA made at test time with the ``openssl`` command."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest

from proxy.app import create_app
from proxy.config import ConfigError, load_config, parse_config
from proxy.server import Serving, start_site, warn_if_exposed
from proxy.tls import ServerTLS
from tests.conftest import one_backend_config
from tests.fakes import ollama as o
from tests.integration.test_workers import GatewayProcess

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

HI = [{"role": "user", "content": "hi"}]
EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", *EC, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_leaf(d: Path, name: str, ca: str, *, cn: str, usage: str, serial: int) -> None:
    _openssl("req", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    (d / f"{name}.cnf").write_text(f"subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                   f"keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-set_serial",
             str(serial), "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.cnf", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Server CA with two server certificates (serials 1001, 1002), a client CA with a client
    certificate, and an unrelated CA with a client certificate of its own."""
    d = tmp_path_factory.mktemp("server-pki")
    for ca in ("server-ca", "client-ca", "other-ca"):
        _make_ca(d, ca)
    _make_leaf(d, "server-a", "server-ca", cn="gateway-a", usage="serverAuth", serial=1001)
    _make_leaf(d, "server-b", "server-ca", cn="gateway-b", usage="serverAuth", serial=1002)
    _make_leaf(d, "client", "client-ca", cn="alice", usage="clientAuth", serial=2001)
    _make_leaf(d, "stranger", "other-ca", cn="mallory", usage="clientAuth", serial=3001)
    return d


def der(pem: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.read_text())


def client_context(pki: Path, cert: str | None = None) -> ssl.SSLContext:
    """Trusts the server CA; presents ``cert`` (a name in ``pki``) when given."""
    ctx = ssl.create_default_context(cafile=str(pki / "server-ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
    return ctx


def sdk(url: str, ctx: ssl.SSLContext | None) -> openai.AsyncOpenAI:
    http = httpx2.AsyncClient(verify=ctx) if ctx is not None else httpx2.AsyncClient()
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0, timeout=10, http_client=http)


def tls_section(pki: Path, *, client_ca: bool = False) -> dict[str, str]:
    section = {"cert_file": str(pki / "server-a.pem"), "key_file": str(pki / "server-a.key")}
    if client_ca:
        section["client_ca"] = str(pki / "client-ca.pem")
    return section


@pytest.fixture
async def start_tls_gateway() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Start the app with ``server.tls`` on a loopback port; returns its https:// url."""
    servings: list[Serving] = []

    async def start(raw: dict[str, Any]) -> str:
        config = parse_config(raw, {})
        assert config.server.tls is not None
        tls = ServerTLS(config.server.tls)
        serving, port = await start_site(create_app(config, health_checks=False), config, host="127.0.0.1",
                                         port=0, tls=tls.context)
        servings.append(serving)
        return f"https://127.0.0.1:{port}"

    yield start
    for serving in servings:
        await serving.cleanup()


async def peer_certificate(port: int, ctx: ssl.SSLContext) -> bytes:
    """The DER certificate a new TLS connection to ``port`` is shown."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    try:
        cert: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return cert
    finally:
        writer.close()


async def tls_exchange(port: int, ctx: ssl.SSLContext) -> bytes:
    """A TLS connection that sends a request for /livez and reads until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    try:
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# -- HTTPS -----------------------------------------------------------------------------------------

async def test_the_openai_sdk_talks_to_the_gateway_over_https(fake_ollama, start_tls_gateway, pki):
    """With ``server.tls`` the SDK, trusting the private CA, gets a chat completion and a stream over HTTPS."""
    fake_ollama.fake.script("/api/chat", o.ok("Hello over TLS"), o.ok("one two three", delay=0.05))
    url = await start_tls_gateway(one_backend_config(fake_ollama.url, server={"tls": tls_section(pki)}))
    async with sdk(url, client_context(pki)) as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=HI)
        assert answer.choices[0].message.content == "Hello over TLS"
        stream = await client.chat.completions.create(model="llama3.2", messages=HI, stream=True)
        pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
    assert "".join(p or "" for p in pieces) == "one two three"
    assert der(pki / "server-a.pem") == await peer_certificate(port_of(url), client_context(pki))


async def test_plain_http_to_the_tls_port_fails_cleanly(fake_ollama, start_tls_gateway, pki, caplog):
    """A plain-HTTP request to the HTTPS port gets no HTTP answer, only a quick close; nothing is logged as an error."""
    caplog.set_level(logging.DEBUG)
    url = await start_tls_gateway(one_backend_config(fake_ollama.url, server={"tls": tls_section(pki)}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    try:
        received = await asyncio.wait_for(reader.read(), 5)
    except ConnectionError:
        received = b""
    writer.close()
    assert time.monotonic() - started < 3
    assert not received.startswith(b"HTTP/")
    async with sdk(url.replace("https://", "http://"), None) as client:
        with pytest.raises(openai.APIConnectionError):
            await client.models.list()
    assert b"HTTP/1.1 200 OK" in await tls_exchange(port_of(url), client_context(pki))  # still serving TLS
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_failed_handshakes_do_not_use_up_max_connections(fake_ollama, start_tls_gateway, pki):
    """max_connections 2: five failed TLS handshakes in a row leave both slots free for real clients."""
    url = await start_tls_gateway(one_backend_config(fake_ollama.url, server={"tls": tls_section(pki),
                                                                              "max_connections": 2}))
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            pass
        writer.close()
    await asyncio.sleep(0.1)
    answers = await asyncio.gather(*(tls_exchange(port_of(url), client_context(pki)) for _ in range(2)))
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 2


async def test_a_connection_that_never_starts_its_handshake_is_closed_within_header_timeout(
        fake_ollama, start_tls_gateway, pki):
    """header_timeout 0.5 bounds the TLS handshake too: a silent TCP client is disconnected in about that time."""
    url = await start_tls_gateway(one_backend_config(fake_ollama.url, server={"tls": tls_section(pki),
                                                                              "header_timeout": 0.5}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    started = time.monotonic()
    try:
        received = await asyncio.wait_for(reader.read(), 10)
    except ConnectionError:
        received = b""
    writer.close()
    assert received == b"" and time.monotonic() - started < 3


# -- mutual TLS ------------------------------------------------------------------------------------

async def test_mutual_tls_serves_a_client_certificate_signed_by_client_ca(fake_ollama, start_tls_gateway, pki):
    """With ``client_ca`` a client presenting a certificate from that CA gets its chat completion."""
    url = await start_tls_gateway(one_backend_config(fake_ollama.url, server={"tls": tls_section(pki, client_ca=True)}))
    async with sdk(url, client_context(pki, "client")) as client:
        answer = await client.chat.completions.create(model="llama3.2", messages=HI)
    assert answer.choices[0].message.content == "Hello world"


def attempt(port: int, ctx: ssl.SSLContext) -> str:
    """One TLS connection asking for /livez: the answer's status line, or how it failed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        except ssl.SSLError as exc:
            return f"handshake failed: {type(exc).__name__}"
        with sock:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = sock.recv(65536)
            return answer.split(b"\r\n", 1)[0].decode() if answer else "closed without an answer"


def limited_to(ctx: ssl.SSLContext, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


# TLS 1.2: the server checks the client's certificate before its last handshake message, so the
# client's handshake fails; TLS 1.3: the client's handshake is done before the server's check, and
# the connection is then closed without an answer (asyncio sends no alert before closing)
REFUSED = {ssl.TLSVersion.TLSv1_2: "handshake failed: SSLEOFError",
           ssl.TLSVersion.TLSv1_3: "closed without an answer"}


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
@pytest.mark.parametrize("cert", [None, "stranger"], ids=["no-certificate", "other-ca"])
async def test_mutual_tls_refuses_clients_without_a_certificate_from_client_ca(
        fake_ollama, start_tls_gateway, pki, cert, version):
    """Without a client certificate, or with one from another CA, the handshake fails and no request is served."""
    url = await start_tls_gateway(one_backend_config(fake_ollama.url, server={"tls": tls_section(pki, client_ca=True)}))
    assert await asyncio.to_thread(attempt, port_of(url), limited_to(client_context(pki, cert), version)) == \
        REFUSED[version]
    async with sdk(url, client_context(pki, cert)) as client:
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(model="llama3.2", messages=HI)
    assert fake_ollama.fake.bodies("/api/chat") == []
    good = limited_to(client_context(pki, "client"), version)
    assert await asyncio.to_thread(attempt, port_of(url), good) == "HTTP/1.1 200 OK"


# -- reload on SIGHUP ------------------------------------------------------------------------------

class TLSGatewayProcess(GatewayProcess):
    """``python -m proxy`` serving HTTPS (its start-up line says ``https://``)."""

    _SERVING = re.compile(r"serving on https://\S+ \(pid (\d+)\)")

    @property
    def worker_pids(self) -> list[int]:
        return [int(pid) for pid in self._SERVING.findall(self.stderr)]

    async def wait_log(self, text: str, count: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.stderr.count(text) < count:
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.stderr}"
            await asyncio.sleep(0.05)


BAD_KEY = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"


def install(pki: Path, name: str, cert: Path, key: Path, key_text: str | None = None) -> None:
    """Replace the served files with ``name``'s certificate and key (or ``key_text``), each atomically."""
    for source, target, text in ((pki / f"{name}.pem", cert, None), (pki / f"{name}.key", key, key_text)):
        scratch = target.with_suffix(".new")
        scratch.write_text(text if text is not None else source.read_text())
        os.replace(scratch, target)


async def test_sighup_swaps_the_certificate_without_dropping_a_stream(start_fake, tmp_path, pki):
    """SIGHUP: an open stream completes, new connections get the new certificate; a bad key is refused, the old kept."""
    local = await start_fake()
    local.fake.script("/api/chat", o.ok("a b c d e f", delay=0.3))  # 7 lines, about 2 s
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    install(pki, "server-a", cert, key)
    raw = one_backend_config(local.url, server={"tls": {"cert_file": str(cert), "key_file": str(key)}})
    gateway = TLSGatewayProcess(tmp_path, raw)
    ctx = client_context(pki)
    try:
        gateway.start()
        await gateway.wait_serving()
        assert await peer_certificate(gateway.port, ctx) == der(pki / "server-a.pem")
        async with sdk(f"https://127.0.0.1:{gateway.port}", ctx) as client:
            stream = await client.chat.completions.create(model="llama3.2", messages=HI, stream=True)
            pieces = []
            async for chunk in stream:
                if chunk.choices:
                    pieces.append(chunk.choices[0].delta.content or "")
                if len(pieces) == 1:  # under way: swap the certificate now
                    install(pki, "server-b", cert, key)
                    assert gateway.proc is not None
                    gateway.proc.send_signal(signal.SIGHUP)
                    await gateway.wait_log("TLS certificate reloaded")
                    assert await peer_certificate(gateway.port, ctx) == der(pki / "server-b.pem")
        assert "".join(pieces) == "a b c d e f"
        install(pki, "server-a", cert, key, key_text=BAD_KEY)
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGHUP)
        await gateway.wait_log("TLS reload rejected, keeping the certificate in use")
        assert await peer_certificate(gateway.port, ctx) == der(pki / "server-b.pem")
        assert b"HTTP/1.1 200 OK" in await tls_exchange(gateway.port, ctx)
        # plain HTTP to the port: under uvloop too, a failed handshake is no error in the log (checked below)
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert not (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/")
        except ConnectionError:
            pass
        writer.close()
        gateway.terminate()
        assert await gateway.wait_exit(10) == 0
    finally:
        gateway.kill()
    records = [orjson.loads(line) for line in gateway.stderr.splitlines() if line.startswith("{")]
    errors = [r["msg"] for r in records if r["level"] == "ERROR"]
    assert len(errors) == 2 and errors[0].startswith("config reload rejected") and \
        errors[1].startswith("TLS reload rejected, keeping the certificate in use: cannot load the certificate")
    assert "not a key" not in gateway.stderr and "Traceback" not in gateway.stderr


# -- start-up checks -------------------------------------------------------------------------------

def test_credentials_in_clear_text_beyond_loopback_log_a_warning(caplog):
    """Credentials, no ``server.tls``, listening on 0.0.0.0: one warning that the keys cross in clear text."""
    caplog.set_level(logging.WARNING, logger="proxy.server")
    config = parse_config({"auth": {"credentials": [{"name": "a", "api_key": "sk-a"}]}}, {})
    assert warn_if_exposed(config, "0.0.0.0") is True
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [(
        "WARNING", "the gateway listens on 0.0.0.0 without TLS: clients' API keys and passwords cross the network "
                   "in clear text. Configure server.tls (or terminate TLS in front).")]


@pytest.mark.parametrize("broken, message", [
    ("missing-cert", "cannot read {cert}: No such file or directory"),
    ("missing-key", "cannot read {key}: No such file or directory"),
    ("not-pem", "cannot load the certificate {cert} with the key {key} (a PEM certificate chain and its matching "
                "private key, unencrypted)"),
    ("wrong-key", "cannot load the certificate {cert} with the key {key} (a PEM certificate chain and its matching "
                  "private key, unencrypted)"),
    ("missing-client-ca", "cannot read {ca}: No such file or directory"),
])
def test_server_tls_files_that_do_not_load_are_a_config_error(tmp_path, pki, broken, message):
    """``load_config`` refuses ``server.tls`` files it cannot read or use, naming ``server.tls`` and the file."""
    cert, key, ca = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "client-ca.pem"
    shutil.copy(pki / "server-a.pem", cert)
    shutil.copy(pki / "server-a.key", key)
    shutil.copy(pki / "client-ca.pem", ca)
    if broken == "missing-cert":
        cert.unlink()
    elif broken == "missing-key":
        key.unlink()
    elif broken == "not-pem":
        cert.write_text("this is not a certificate\n")
    elif broken == "wrong-key":
        shutil.copy(pki / "server-b.key", key)
    else:
        ca.unlink()
    path = tmp_path / "gateway.yaml"
    path.write_text(orjson.dumps({"server": {"tls": {"cert_file": str(cert), "key_file": str(key),
                                                     "client_ca": str(ca)}}}).decode())
    with pytest.raises(ConfigError) as refused:
        load_config(str(path), {})
    assert refused.value.problems == (("server.tls", message.format(cert=cert, key=key, ca=ca)),)
