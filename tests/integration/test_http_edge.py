"""The HTTP/1.1 edge over raw sockets: kept-alive and half-sent heads, the connection limit under
uvloop, parser refusals in OpenAI's JSON shape (and out of the logs), early 413s, Host, Upgrade,
pipelining and ``Connection: close``."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict

from tests.conftest import one_backend_config
from tests.fakes import ollama as o
from tests.integration.test_workers import GatewayProcess

MiB = 1024 * 1024
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Answer:
    status_line: str
    headers: CIMultiDict[str]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split(" ", 2)[1])

    def error(self) -> dict[str, Any]:
        assert self.headers["Content-Type"] == "application/json", self.headers
        body: dict[str, Any] = orjson.loads(self.body)
        assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}, body
        return body["error"]


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One HTTP/1.1 response: its head, then a body framed by Content-Length, chunks, or the close."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict(line.split(": ", 1) for line in head[1:] if line)
    if headers.get("Transfer-Encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        assert await reader.readexactly(2) == b"\r\n"  # no trailers
    elif "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    else:
        body = await reader.read()
    return Answer(head[0], headers, body)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server ends the connection (EOF or reset) within ``seconds``, nothing more sent."""
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def exchange(port: int, raw: bytes) -> tuple[Answer, bool]:
    """Send ``raw`` on a new connection; the first answer, and whether the server then closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        answer = await asyncio.wait_for(read_answer(reader), 5)
        return answer, await closed_within(reader, 3)
    finally:
        writer.close()


async def ask(port: int, raw: bytes) -> Answer:
    """Send ``raw`` on a new connection and read the first answer (the connection may stay open)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await asyncio.wait_for(read_answer(reader), 5)
    finally:
        writer.close()


LIVEZ = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def chat_head(body: bytes, *extra: str) -> bytes:
    lines = ["POST /v1/chat/completions HTTP/1.1", "Host: gw", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sse_text(body: bytes) -> tuple[str, list[str]]:
    """The streamed content, and the raw ``data:`` payloads in order."""
    events = [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]
    text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content") or ""
                   for e in events if e != "[DONE]" and orjson.loads(e).get("choices"))
    return text, events


# -- kept-alive and half-sent heads ----------------------------------------------------------------

async def test_an_unfinished_head_on_a_kept_alive_connection_is_closed_and_frees_its_slot(fake_ollama, start_gateway):
    """Three connections stuck in their second head hold max_connections 3 only until keepalive_timeout."""
    raw = one_backend_config(fake_ollama.url, server={"keepalive_timeout": 1, "header_timeout": 1,
                                                      "max_connections": 3})
    gw = await start_gateway(raw)
    port = port_of(gw.url)
    stuck = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    for _, writer in stuck:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nP")
    for reader, _ in stuck:
        answer = await asyncio.wait_for(read_answer(reader), 5)
        assert (answer.status, answer.error()["code"], answer.headers.get("Connection")) == (400, "invalid_json", None)
    busy, _ = await exchange(port, LIVEZ)
    assert busy.status == 503  # the three are still open, the limit holds
    assert [await closed_within(reader, 3) for reader, _ in stuck] == [True, True, True]
    for _, writer in stuck:
        writer.close()
    answer = await ask(port, LIVEZ)
    assert (answer.status, answer.body) == (200, b'{"status":"ok"}')


async def test_a_head_ended_by_leading_blank_lines_does_not_escape_header_timeout(fake_ollama, start_gateway):
    """Blank lines before the request line do not count as a finished head: a slowloris is still cut."""
    gw = await start_gateway(one_backend_config(fake_ollama.url, server={"header_timeout": 0.5}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw.url))
    started = time.monotonic()
    writer.write(b"\r\n\r\nPOST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    hung_up = False
    while not hung_up and time.monotonic() - started < 5:
        hung_up = await closed_within(reader, 0.1)
        if not hung_up and not writer.is_closing():
            writer.write(b"X-Slow: 1\r\n")
    writer.close()
    assert hung_up and time.monotonic() - started < 3


async def test_a_head_whose_last_crlf_arrives_byte_by_byte_is_complete(fake_ollama, start_gateway):
    """header_timeout 1: a head ended one byte per segment is complete; its 2 s stream ends with [DONE]."""
    fake_ollama.fake.script("/api/chat", o.ok("a b c d e f", delay=0.3))  # 7 lines, about 2.1 s
    gw = await start_gateway(one_backend_config(fake_ollama.url, server={"header_timeout": 1}))
    body = orjson.dumps({**CHAT, "stream": True})
    head = chat_head(body)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw.url))
    try:
        writer.write(head[:-4])
        for byte in head[-4:]:
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(bytes([byte]))
        writer.write(body)
        started = time.monotonic()
        answer = await asyncio.wait_for(read_answer(reader), 10)
    finally:
        writer.close()
    assert time.monotonic() - started > 1  # the stream outlived header_timeout
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/event-stream")
    text, events = sse_text(answer.body)
    assert (text, events[-1]) == ("a b c d e f", "[DONE]")


# -- the connection limit, under uvloop --------------------------------------------------------------

async def test_the_connection_limit_answers_503_under_uvloop(start_fake, tmp_path):
    """``python -m proxy`` (on uvloop): a client over max_connections reads the whole 503; no error is logged."""
    pytest.importorskip("uvloop")
    local = await start_fake()
    gateway = GatewayProcess(tmp_path, one_backend_config(local.url, server={"max_connections": 1}))
    try:
        gateway.start()
        await gateway.wait_serving()
        port = gateway.port
        held_reader, held = await asyncio.open_connection("127.0.0.1", port)
        held.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(read_answer(held_reader), 5)).status == 200
        body = orjson.dumps(CHAT)
        answer, closed = await exchange(port, chat_head(body) + body)
        assert answer.status_line == "HTTP/1.1 503 Service Unavailable"
        assert (answer.headers["Retry-After"], answer.headers["Connection"]) == ("1", "close")
        assert answer.error() == {"message": "The gateway has too many open connections; retry shortly.",
                                  "type": "api_error", "param": None, "code": "too_many_connections"}
        assert closed
        held.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")  # the held connection is still served
        assert (await asyncio.wait_for(read_answer(held_reader), 5)).status == 200
        held.close()
        gateway.terminate()
        assert await gateway.wait_exit(10) == 0
    finally:
        gateway.kill()
    records = [orjson.loads(line) for line in gateway.stderr.splitlines() if line.startswith("{")]
    assert any(r["msg"].startswith("serving on http://127.0.0.1:") for r in records)
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == []
    assert "Traceback" not in gateway.stderr


# -- parser refusals -------------------------------------------------------------------------------

BAD_LINE = "The request line is not valid HTTP/1.1."
TOO_LONG = "A request line or header is longer than 16384 bytes."


@pytest.mark.parametrize("raw, status, reason, code, message", [
    (b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17_000 + b"\r\n\r\n",
     431, "Request Header Fields Too Large", "header_too_large", TOO_LONG),
    (b"GET /livez?" + b"q" * 17_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     431, "Request Header Fields Too Large", "header_too_large", TOO_LONG),
    (b"GET /livez HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(128)) + b"\r\n",
     400, "Bad Request", "too_many_headers", "A request may carry at most 128 headers."),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
     400, "Bad Request", "bad_framing", "The request body's framing is not valid HTTP/1.1."),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     400, "Bad Request", "bad_framing", "The request body's framing is not valid HTTP/1.1."),
    (b"GET\r\n\r\n", 400, "Bad Request", "bad_request_line", BAD_LINE),
    (b"GET /livez HTTP/9.9\r\nHost: x\r\n\r\n", 400, "Bad Request", "bad_request_line", BAD_LINE),
    (b"GET /livez HTTP/1.1\nHost: x\n\n", 400, "Bad Request", "bad_request_line", BAD_LINE),
    (b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
     400, "Bad Request", "bad_request", "The request is not valid HTTP/1.1."),
], ids=["long-header", "long-request-line", "129-headers", "bad-chunk", "two-lengths", "no-target",
        "bad-version", "bare-lf", "nul-in-header"])
async def test_parser_refusals_are_openai_shaped_http11_answers(gateway, raw, status, reason, code, message):
    """What aiohttp's parser refuses is answered in HTTP/1.1 with OpenAI's error JSON, then the connection closes."""
    answer, closed = await exchange(port_of(gateway.url), raw)
    assert answer.status_line == f"HTTP/1.1 {status} {reason}"
    assert answer.headers["Connection"] == "close"
    assert answer.error() == {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    assert closed
    assert (await ask(port_of(gateway.url), LIVEZ)).status == 200


async def test_a_bad_chunk_arriving_after_its_head_fails_the_request_at_once(gateway, caplog):
    """A chunk size that does not parse, sent after the head, is a 400 ``bad_framing`` at once, not at body_timeout."""
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway.url))
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is reading the body by now
        started = time.monotonic()
        writer.write(b"zz\r\nmodel\r\n0\r\n\r\n")
        answer = await asyncio.wait_for(read_answer(reader), 5)
        closed = await closed_within(reader, 3)
    finally:
        writer.close()
    assert time.monotonic() - started < 3  # body_timeout is 60 s
    assert (answer.status_line, answer.headers["Connection"], closed) == ("HTTP/1.1 400 Bad Request", "close", True)
    assert answer.error() == {"message": "The request body's framing is not valid HTTP/1.1.",
                              "type": "invalid_request_error", "param": None, "code": "bad_framing"}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_chunked_body_split_across_reads_is_read_whole(gateway):
    """A valid chunked body arriving in pieces, a chunk header cut in two, is answered normally."""
    body = orjson.dumps(CHAT)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway.url))
    try:
        pieces = [b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                  b"%x\r" % len(body[:10]), b"\n" + body[:10] + b"\r\n",
                  b"%x\r\n" % len(body[10:]) + body[10:] + b"\r\n0\r", b"\n\r\n"]
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        answer = await asyncio.wait_for(read_answer(reader), 5)
    finally:
        writer.close()
    assert answer.status == 200
    assert orjson.loads(answer.body)["choices"][0]["message"]["content"] == "Hello world"


async def test_128_headers_are_accepted(gateway):
    """aiohttp's limit is 128 header lines: Host and 127 more are served."""
    raw = b"GET /livez HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(127)) + b"\r\n"
    answer = await ask(port_of(gateway.url), raw)
    assert (answer.status, answer.body) == (200, b'{"status":"ok"}')


async def test_an_oversized_bearer_secret_never_reaches_a_log(gateway, caplog):
    """A 20 KiB Authorization header gets a 431; no part of its secret is in any log record or the answer."""
    caplog.set_level(logging.DEBUG)
    for name in ("aiohttp", "proxy", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    secret = "".join(f"SeCrEt{i:05d}" for i in range(20 * 1024 // 11))
    assert len(secret) >= 20 * 1024 - 11
    raw = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n"
           "Content-Length: 2\r\n\r\n{}").encode()
    answer, closed = await exchange(port_of(gateway.url), raw)
    assert (answer.status, answer.error()["code"], closed) == (431, "header_too_large", True)
    logged = caplog.text + "".join(f"{r.getMessage()} {r.args!r} {r.exc_info!r} {r.exc_text}" for r in caplog.records)
    assert "SeCrEt" not in logged and "SeCrEt" not in answer.body.decode()
    assert [r.levelname for r in caplog.records if r.name == "proxy.connection"] == ["INFO"]


# -- early answers: 413 ----------------------------------------------------------------------------

def upload_until_closed(port: int, head: bytes, seconds: float) -> tuple[int, bytes, float | None]:
    """Send ``head`` then zeros as fast as possible until the server ends the connection.

    Returns the bytes of body the client handed to its kernel, what it read, and when (seconds after
    the head) the connection ended, ``None`` if it was still open after ``seconds``.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    received: list[bytes] = []

    def read() -> None:
        try:
            while data := sock.recv(65536):
                received.append(data)
        except OSError:
            pass

    reader = threading.Thread(target=read)
    reader.start()
    chunk = bytes(256 * 1024)
    sent = 0
    ended: float | None = None
    sock.settimeout(0.2)
    started = time.monotonic()
    try:
        sock.sendall(head)
        while time.monotonic() - started < seconds:
            try:
                sent += sock.send(chunk)
            except TimeoutError:
                continue
    except OSError:  # reset or broken pipe: the server has closed
        ended = time.monotonic() - started
    reader.join(seconds)
    sock.close()
    reader.join()
    return sent, b"".join(received), ended


async def test_after_a_413_the_server_stops_reading_a_huge_upload_and_closes(fake_ollama, start_gateway):
    """A declared 4 GiB body over max_body_mb 1: a 413, then the server reads at most ~16 MiB and hangs up in ~3 s."""
    gw = await start_gateway(one_backend_config(fake_ollama.url, server={"max_body_mb": 1}))
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4294967296\r\n\r\n")
    sent, received, ended = await asyncio.to_thread(upload_until_closed, port_of(gw.url), head, 15.0)
    assert ended is not None and ended < 5
    assert sent < 100 * MiB, sent
    assert received.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n"), received[:100]
    reader = asyncio.StreamReader()
    reader.feed_data(received)
    reader.feed_eof()
    answer = await read_answer(reader)
    assert answer.headers["Connection"] == "close"
    assert answer.error() == {"message": "Request body is larger than the limit of 1048576 bytes.",
                              "type": "invalid_request_error", "param": None, "code": "request_too_large"}
    assert fake_ollama.fake.bodies("/api/chat") == []


async def test_a_client_sending_a_whole_8_mib_body_over_the_limit_reads_the_413(fake_ollama, start_gateway):
    """An 8 MiB body over max_body_mb 1, sent whole before reading, gets all of the 413 and a close, not a reset."""
    gw = await start_gateway(one_backend_config(fake_ollama.url, server={"max_body_mb": 1}))
    body = b"x" * (8 * MiB)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw.url))
    try:
        writer.write(chat_head(body) + body)
        await writer.drain()
        answer = await asyncio.wait_for(read_answer(reader), 10)
        assert await closed_within(reader, 5)
    finally:
        writer.close()
    assert (answer.status_line, answer.headers["Connection"]) == ("HTTP/1.1 413 Request Entity Too Large", "close")
    assert answer.error()["code"] == "request_too_large"


# -- Host, Upgrade, pipelining, Connection: close --------------------------------------------------

HOST = "A request must carry exactly one Host header."


@pytest.mark.parametrize("raw", [
    b"GET /v1/models HTTP/1.1\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
], ids=["no-host", "two-hosts"])
async def test_an_http11_request_without_exactly_one_host_is_a_400(gateway, raw):
    """HTTP/1.1 without a Host header, or with two, is a 400 naming the Host header."""
    answer, closed = await exchange(port_of(gateway.url), raw)
    assert answer.status_line == "HTTP/1.1 400 Bad Request"
    assert answer.error() == {"message": HOST, "type": "invalid_request_error", "param": None,
                              "code": "bad_host_header"}
    assert closed


async def test_http10_without_host_is_served(gateway):
    """HTTP/1.0 has no Host requirement: the request is answered (and the connection closed)."""
    answer, closed = await exchange(port_of(gateway.url), b"GET /livez HTTP/1.0\r\n\r\n")
    assert (answer.status, answer.body, closed) == (200, b'{"status":"ok"}', True)


async def test_an_upgrade_to_websocket_on_a_model_path_is_answered_as_plain_http(gateway, caplog):
    """``Upgrade: websocket`` is ignored: the chat is answered, the connection stays HTTP, no error is logged."""
    caplog.set_level(logging.DEBUG)
    body = orjson.dumps(CHAT)
    upgrade = chat_head(body, "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway.url))
    try:
        writer.write(upgrade + body)
        first = await asyncio.wait_for(read_answer(reader), 5)
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        second = await asyncio.wait_for(read_answer(reader), 5)
    finally:
        writer.close()
    assert first.status == 200 and "Upgrade" not in first.headers
    assert orjson.loads(first.body)["choices"][0]["message"]["content"] == "Hello world"
    assert (second.status, second.body) == (200, b'{"status":"ok"}')
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_pipelined_requests_are_answered_in_order(gateway, fake_ollama):
    """Three requests in one write, the first the slowest, come back in the order sent."""
    fake_ollama.fake.script("/api/chat", o.slow(0.3, o.ok("first")), o.ok("second"))
    one = orjson.dumps(CHAT)
    raw = (chat_head(one, "X-Request-ID: r1") + one + chat_head(one, "X-Request-ID: r2") + one
           + b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Request-ID: r3\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway.url))
    try:
        writer.write(raw)
        answers = [await asyncio.wait_for(read_answer(reader), 5) for _ in range(3)]
    finally:
        writer.close()
    assert [(a.status, a.headers["X-Request-ID"]) for a in answers] == [(200, "r1"), (200, "r2"), (200, "r3")]
    assert [orjson.loads(a.body)["choices"][0]["message"]["content"] for a in answers[:2]] == ["first", "second"]
    assert answers[2].body == b'{"status":"ok"}'


async def test_a_streamed_answer_to_connection_close_says_so_and_closes(gateway, fake_ollama):
    """A stream asked for with ``Connection: close`` carries ``Connection: close``; the connection ends after it."""
    fake_ollama.fake.script("/api/chat", o.ok("one two", delay=0.05))
    body = orjson.dumps({**CHAT, "stream": True})
    answer, closed = await exchange(port_of(gateway.url), chat_head(body, "Connection: close") + body)
    headers = answer.headers
    assert (answer.status, headers["Connection"], headers["Transfer-Encoding"]) == (200, "close", "chunked")
    text, events = sse_text(answer.body)
    assert (text, events[-1], closed) == ("one two", "[DONE]", True)


@pytest.mark.parametrize("after", [b"GARBAGE\r\n\r\n", b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01"],
                         ids=["garbage", "another-request", "tls-bytes"])
async def test_bytes_after_a_connection_close_request_do_not_spoil_its_answer(gateway, after):
    """Whatever follows a ``Connection: close`` request in the same write is ignored: a 200, then the close."""
    body = orjson.dumps(CHAT)
    answer, closed = await exchange(port_of(gateway.url), chat_head(body, "Connection: close") + body + after)
    assert (answer.status, answer.headers["Connection"], closed) == (200, "close", True)
    assert orjson.loads(answer.body)["choices"][0]["message"]["content"] == "Hello world"


async def test_a_malformed_request_pipelined_behind_a_good_one_spoils_only_itself(gateway):
    """A good request and garbage in one write: the good one is answered, then the garbage gets a 400 and the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway.url))
    try:
        writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        first = await asyncio.wait_for(read_answer(reader), 5)
        second = await asyncio.wait_for(read_answer(reader), 5)
        closed = await closed_within(reader, 3)
    finally:
        writer.close()
    assert (first.status, first.body) == (200, b'{"status":"ok"}')
    assert (second.status_line, second.error()["code"]) == ("HTTP/1.1 400 Bad Request", "bad_request_line")
    assert closed


async def test_pipelined_answers_nobody_reads_stop_the_reading(start_fake, start_gateway):
    """1,000 pipelined requests whose 64 KiB answers are never read: the gateway stops taking new
    requests once the socket's buffers are full (write back-pressure), instead of queueing every answer."""
    from tests.fakes import ollama as o

    local = await start_fake()
    local.fake.script("/api/chat", *[o.ok("x" * 65536)] * 1000)
    gw = await start_gateway(one_backend_config(local.url))
    body = b'{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}'
    one = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw.url))
    try:
        writer.write(one * 1000)  # sent (into the kernel's buffers) without ever reading an answer
        await asyncio.sleep(2.0)
        served = len(local.fake.bodies("/api/chat"))
        assert 0 < served < 500, served  # a few MB of answers fill the buffers; then the gateway waits
    finally:
        writer.transport.abort()
