"""The fast lane (proxy.fastlane) on the wire: raw HTTP/1.1 on a loopback socket.

The model endpoints are served below aiohttp's web layer; everything else, and any request the
fast lane does not take, is served by aiohttp on the same connection. aiohttp names itself in a
``Server`` header and the fast lane does not, which is how these tests tell who answered.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httptools
import orjson
import pytest

from tests.conftest import one_backend_config
from tests.fakes.ollama import ok

CHAT = orjson.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
STREAM = orjson.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True})
EMBED = orjson.dumps({"model": "nomic-embed-text", "input": "hi"})


def post(path: str, body: bytes, *extra: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: gw", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Answer:
    """One parsed HTTP response."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.done = False

    @property
    def by_aiohttp(self) -> bool:
        return "server" in self.headers

    def json(self) -> Any:
        return orjson.loads(self.body)


class Reader:
    """Reads responses off one connection with httptools, in order."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.answers: list[Answer] = []
        self.parser = httptools.HttpResponseParser(self)
        self.given = 0

    def on_message_begin(self) -> None:
        self.answers.append(Answer())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answers[-1].headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self.answers[-1].status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.answers[-1].body += body

    def on_message_complete(self) -> None:
        self.answers[-1].done = True

    async def next(self, timeout: float = 5.0) -> Answer:
        """The next complete answer."""
        async with asyncio.timeout(timeout):
            while True:
                done = [a for a in self.answers if a.done]
                if len(done) > self.given:
                    self.given += 1
                    return done[self.given - 1]
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("the server closed the connection")
                self.parser.feed_data(data)

    async def closed(self, timeout: float = 5.0) -> bool:
        async with asyncio.timeout(timeout):
            return await self.reader.read(65536) == b""


async def connect(url: str, **kwargs: Any) -> tuple[Reader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    r, w = await asyncio.open_connection(host, int(port), **kwargs)
    return Reader(r), w


async def test_one_connection_serves_fast_requests_then_hands_over_to_aiohttp(gateway):
    """Keep-alive model requests are served by the fast lane; a GET on the same connection hands
    it to aiohttp, which then serves the model requests that follow too."""
    reader, writer = await connect(gateway.url)
    for _ in range(3):
        writer.write(post("/v1/chat/completions", CHAT))
        answer = await reader.next()
        assert answer.status == 200 and not answer.by_aiohttp
        assert answer.json()["choices"][0]["message"]["content"] == "Hello world"
        assert answer.headers["x-request-id"] and answer.headers["content-type"] == "application/json"
    writer.write(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n")
    models = await reader.next()
    assert models.status == 200 and models.by_aiohttp and models.json()["object"] == "list"
    writer.write(post("/v1/chat/completions", CHAT))
    answer = await reader.next()
    assert answer.status == 200 and answer.by_aiohttp
    assert answer.json()["choices"][0]["message"]["content"] == "Hello world"
    writer.close()


async def test_pipelined_requests_are_answered_in_order(gateway):
    """Three requests in one write, the last one for aiohttp: three answers, in order."""
    reader, writer = await connect(gateway.url)
    writer.write(post("/v1/chat/completions", CHAT) + post("/v1/embeddings", EMBED)
                 + b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    chat, embedding, health = [await reader.next() for _ in range(3)]
    assert (chat.status, embedding.status, health.status) == (200, 200, 200)
    assert chat.json()["object"] == "chat.completion" and not chat.by_aiohttp
    assert embedding.json()["object"] == "list" and not embedding.by_aiohttp
    assert health.by_aiohttp
    writer.close()


async def test_a_request_arriving_in_pieces_is_served(gateway):
    """Head and body split over several packets, the split inside the header terminator."""
    reader, writer = await connect(gateway.url)
    raw = post("/v1/chat/completions", CHAT)
    cut = raw.index(b"\r\n\r\n") + 2
    for piece in (raw[:10], raw[10:cut], raw[cut:cut + 5], raw[cut + 5:-7], raw[-7:]):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.02)
    answer = await reader.next()
    assert answer.status == 200 and not answer.by_aiohttp
    writer.close()


@pytest.mark.parametrize("raw", [
    pytest.param(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"%x\r\n%b\r\n0\r\n\r\n" % (len(CHAT), CHAT), id="chunked-body"),
    pytest.param(post("/v1/chat/completions", CHAT, "Expect: 100-continue"), id="expect"),
    pytest.param(post("/v1/chat/completions", CHAT, version="1.0"), id="http-1.0"),
    pytest.param(post("/v1/chat/completions?x=1", CHAT), id="query-string"),
    pytest.param(post("/v1//chat/completions", CHAT), id="other-path"),
])
async def test_requests_the_fast_lane_does_not_take_go_to_aiohttp(gateway, raw):
    """What the fast lane does not handle itself is answered by aiohttp, with its usual behaviour."""
    reader, writer = await connect(gateway.url)
    writer.write(raw)
    answer = await reader.next()
    if answer.status == 100:  # aiohttp's interim answer to Expect: 100-continue
        answer = await reader.next()
    assert answer.by_aiohttp
    if b"//" in raw:
        assert answer.status == 404 and answer.json()["error"]["code"] == "not_found"
    else:
        assert answer.status == 200 and answer.json()["object"] == "chat.completion"
    writer.close()


async def test_connection_close_is_honoured(gateway):
    reader, writer = await connect(gateway.url)
    writer.write(post("/v1/chat/completions", CHAT, "Connection: close"))
    answer = await reader.next()
    assert answer.status == 200 and answer.headers["connection"] == "close"
    assert await reader.closed()
    writer.close()


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(fake_ollama, start_gateway):
    gateway = await start_gateway(one_backend_config(fake_ollama.url, server={"keepalive_timeout": 0.3}))
    reader, writer = await connect(gateway.url)
    writer.write(post("/v1/chat/completions", CHAT))
    assert (await reader.next()).status == 200
    assert await reader.closed(timeout=5.0)
    writer.close()


@pytest.mark.parametrize(("raw", "status"), [
    pytest.param(post("/v1/chat/completions", CHAT, "Authorization: Bearer sk-wrong")[:-20], 401, id="auth"),
    pytest.param(post("/v1/chat/completions", b"x" * 100, "Authorization: Bearer sk-test").replace(
        b"Content-Length: 100", b"Content-Length: 30000000"), 413, id="too-large"),
])
async def test_an_answer_sent_before_the_whole_body_closes_the_connection(fake_ollama, start_gateway, raw, status):
    """A 401 or 413 answered while the body is still on its way: the connection closes, so the
    body's unread rest is never taken for a request."""
    gateway = await start_gateway(one_backend_config(
        fake_ollama.url, auth={"credentials": [{"name": "t", "api_key": "sk-test"}]}))
    reader, writer = await connect(gateway.url)
    writer.write(raw)
    answer = await reader.next()
    assert answer.status == status and answer.headers["connection"] == "close" and not answer.by_aiohttp
    assert answer.json()["error"]["type"]
    assert await reader.closed()
    writer.close()


async def test_a_stream_to_a_slow_reader_is_complete_and_the_connection_is_reused(fake_ollama, start_gateway):
    """A long SSE answer the client does not read for a while: writing waits, nothing is lost, and
    the connection serves the next request afterwards."""
    words = "".join(f"w{i:04d}{'x' * 19_995} " for i in range(300))  # 6 MB: more than the socket buffers hold
    fake_ollama.fake.script("/api/chat", ok(words))
    gateway = await start_gateway(one_backend_config(fake_ollama.url))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = gateway.url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    reader, writer = await _from_socket(sock)
    writer.write(post("/v1/chat/completions", STREAM))
    await asyncio.sleep(0.5)  # the gateway fills the socket buffers and has to wait
    answer = await reader.next(timeout=30)
    assert answer.status == 200 and answer.headers["transfer-encoding"] == "chunked"
    events = [line[6:] for line in answer.body.split(b"\n\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content") or ""
                   for e in events[:-1] if orjson.loads(e)["choices"])
    assert text == words
    fake_ollama.fake.script("/api/chat", ok())
    writer.write(post("/v1/chat/completions", CHAT))
    assert (await reader.next()).json()["choices"][0]["message"]["content"] == "Hello world"
    writer.close()


async def _from_socket(sock: socket.socket) -> tuple[Reader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection(sock=sock)
    return Reader(r), w


@pytest.mark.parametrize(("server", "by_aiohttp"), [
    ({}, False),
    ({"fast_lane": False}, True),
    ({"cors_origins": ["https://app.example"]}, True),
])
async def test_fast_lane_switch_and_cors(fake_ollama, start_gateway, server, by_aiohttp):
    """``server.fast_lane: false`` and CORS (a middleware the fast lane does not run) keep every
    request in aiohttp's web layer; the answers are the same either way."""
    gateway = await start_gateway(one_backend_config(fake_ollama.url, server=server))
    reader, writer = await connect(gateway.url)
    writer.write(post("/v1/chat/completions", CHAT, "Origin: https://app.example"))
    answer = await reader.next()
    assert answer.status == 200 and answer.by_aiohttp is by_aiohttp
    assert answer.json()["choices"][0]["message"] == {"role": "assistant", "content": "Hello world",
                                                      "refusal": None}
    if "cors_origins" in server:
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
    writer.close()


@pytest.mark.parametrize("fast_lane", [True, False])
async def test_non_ascii_route_and_model_names_work_in_both_lanes(fake_ollama, start_gateway, fast_lane):
    """Names from the config and the client are Unicode; both lanes send them as UTF-8 headers."""
    gateway = await start_gateway(one_backend_config(
        fake_ollama.url, server={"fast_lane": fast_lane},
        routes=[{"name": "modèles-模型", "models": ["modèle-ü"], "targets": [{"backend": "local", "model": "llama3.2"}]}]))
    async with gateway.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="modèle-ü", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-gateway-route"] == "modèles-模型"  # httpx decodes header values as UTF-8
    assert raw.parse().model == "modèle-ü"


async def test_a_413_reaches_a_client_still_uploading_its_body(fake_ollama, start_gateway):
    """The client keeps sending a body the gateway refused: the answer is not lost to a reset (the
    connection half-closes and drops the rest for a moment), then the connection closes."""
    gateway = await start_gateway(one_backend_config(fake_ollama.url, server={"max_body_mb": 1}))
    host, port = gateway.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    total = 8 * 1024 * 1024
    await loop.sock_sendall(sock, b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
                                  b"Content-Length: %d\r\n\r\n" % total)
    await asyncio.sleep(0.2)  # the 413 is on its way back before most of the body is sent
    chunk = b"x" * 65536
    for _ in range(total // len(chunk)):
        await loop.sock_sendall(sock, chunk)
    received = b""
    async with asyncio.timeout(10):
        while data := await loop.sock_recv(sock, 65536):
            received += data
    sock.close()
    assert received.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in received
    assert orjson.loads(received.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "invalid_request_error"
