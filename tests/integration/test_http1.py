"""The backend HTTP/1.1 client (``proxy.upstream.http1``) against real servers on loopback.

An aiohttp server for the well-behaved cases; a raw asyncio server for what aiohttp would never
send (an answer delimited by closing the connection, garbage, a keep-alive connection closed the
moment a second request arrives).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from proxy.upstream.http1_connection import _HIGH_WATER, ConnectionClosed, InvalidAnswer
from proxy.upstream.http1_pool import Pool

HEADERS = b"Content-Type: application/json\r\n"


def _pool(url: str, limit: int = 8, keepalive: float = 30.0) -> Pool:
    return Pool(url, headers=HEADERS, tls=None, limit=limit, connect_timeout=2.0, keepalive=keepalive)


@pytest.fixture
async def serve_app(aiohttp_server) -> Callable[[web.Application], Awaitable[str]]:
    async def start(app: web.Application) -> str:
        server = await aiohttp_server(app)
        return str(server.make_url("")).rstrip("/")

    return start


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., Awaitable[tuple[str, list[int]]]]]:
    """Start a raw TCP server: ``answer(request_number_on_this_connection, raw_request)`` returns the
    bytes to send back (or a list of parts, sent a moment apart) and whether to close afterwards. Also
    returns how many connections arrived."""
    servers: list[asyncio.Server] = []

    async def start(answer: Callable[[int, bytes], tuple[bytes | list[bytes], bool]]) -> tuple[str, list[int]]:
        connections = [0]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections[0] += 1
            number = 0
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    raw = head + await reader.readexactly(length)
                    number += 1
                    data, close = answer(number, raw)
                    for i, part in enumerate([data] if isinstance(data, bytes) else data):
                        if i:
                            await asyncio.sleep(0.05)
                        writer.write(part)
                        await writer.drain()
                    if close:
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}", connections

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def _ports_app() -> web.Application:
    """Answers with the client's source port: equal ports mean one reused connection."""
    app = web.Application()

    async def port(request: web.Request) -> web.Response:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return web.json_response({"port": peer[1] if peer else None, "body": body.decode(),
                                  "host": request.headers.get("Host"), "type": request.headers.get("Content-Type")})

    app.router.add_route("*", "/port", port)
    return app


async def test_connections_are_reused_and_requests_carry_the_prebuilt_headers(serve_app) -> None:
    url = await serve_app(_ports_app())
    pool = _pool(url)
    answers = []
    for i in range(3):
        resp = await pool.request("POST", "/port", b'{"n":%d}' % i)
        assert resp.status == 200
        answers.append(json.loads(await resp.read()))
    assert len({a["port"] for a in answers}) == 1
    assert [a["body"] for a in answers] == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert answers[0]["host"] == url.removeprefix("http://")
    assert answers[0]["type"] == "application/json"
    resp = await pool.request("GET", "/port", None)
    assert json.loads(await resp.read())["port"] == answers[0]["port"]
    assert pool.in_use == 0
    await pool.close()
    assert pool.closed


async def test_a_base_path_in_the_url_prefixes_every_request(serve_app) -> None:
    app = web.Application()

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=request.path)

    app.router.add_get("/{tail:.*}", echo)
    url = await serve_app(app)
    pool = _pool(url + "/v1/")
    assert await (await pool.request("GET", "/models", None)).read() == b"/v1/models"


async def test_closing_an_unfinished_answer_drops_the_connection(serve_app) -> None:
    seen_disconnect = asyncio.Event()
    app = _ports_app()

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            for _ in range(200):
                await resp.write(b'{"token":"x"}\n')
                await asyncio.sleep(0.01)
        except (ConnectionError, asyncio.CancelledError):
            seen_disconnect.set()
            raise
        return resp

    app.router.add_post("/stream", stream)
    url = await serve_app(app)
    pool = _pool(url)
    first = json.loads(await (await pool.request("GET", "/port", None)).read())["port"]
    resp = await pool.request("POST", "/stream", b"{}")
    assert (await resp.chunk()).startswith(b'{"token"')
    resp.close()
    await asyncio.wait_for(seen_disconnect.wait(), 5)
    assert pool.in_use == 0
    # the streaming connection was the reused one; the next request needs (and gets) a new one
    again = json.loads(await (await pool.request("GET", "/port", None)).read())["port"]
    assert again != first


async def test_an_idempotent_request_on_a_reused_connection_closed_unanswered_is_sent_once_more(raw_server) -> None:
    """A GET may be repeated (RFC 9110 9.2.2): the pool resends it once, on a new connection."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    seen: list[bytes] = []

    def answer(number: int, raw: bytes) -> tuple[bytes, bool]:
        seen.append(raw.split(b"\r\n", 1)[0])
        return (ok, False) if number == 1 else (b"", True)  # a second request on a connection: hang up

    url, connections = await raw_server(answer)
    pool = _pool(url)
    assert await (await pool.request("GET", "/a", None)).read() == b"ok"
    assert await (await pool.request("GET", "/a", None)).read() == b"ok"
    assert seen == [b"GET /a HTTP/1.1"] * 3
    assert connections[0] == 2


async def test_a_post_the_backend_read_before_hanging_up_is_not_sent_again(raw_server) -> None:
    """The backend read the whole POST on a reused connection, then closed it unanswered: it may have
    run it, so the caller gets ConnectionClosed and the backend saw the request exactly once."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    bodies: list[bytes] = []

    def answer(number: int, raw: bytes) -> tuple[bytes, bool]:
        bodies.append(raw.split(b"\r\n\r\n", 1)[1])
        return (ok, False) if number == 1 else (b"", True)

    url, connections = await raw_server(answer)
    pool = _pool(url)
    assert await (await pool.request("POST", "/a", b'{"n":1}')).read() == b"ok"
    with pytest.raises(ConnectionClosed) as caught:
        await pool.request("POST", "/a", b'{"n":2}')
    assert caught.value.started is False
    assert bodies == [b'{"n":1}', b'{"n":2}']
    assert connections[0] == 1
    assert pool.in_use == 0


async def test_a_connection_the_backend_closed_while_idle_is_not_written_to(raw_server) -> None:
    """Closed by the backend after its answer, seen before the next write: the next POST goes out
    once, on a new connection."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    bodies: list[bytes] = []

    def answer(number: int, raw: bytes) -> tuple[bytes, bool]:
        bodies.append(raw.split(b"\r\n\r\n", 1)[1])
        return ok, True  # keep-alive allowed by the answer, then the backend hangs up while idle

    url, connections = await raw_server(answer)
    pool = _pool(url)
    assert await (await pool.request("POST", "/a", b'{"n":1}')).read() == b"ok"
    await asyncio.sleep(0.1)  # the close reaches the pool while the connection is idle
    assert await (await pool.request("POST", "/a", b'{"n":2}')).read() == b"ok"
    assert bodies == [b'{"n":1}', b'{"n":2}']
    assert connections[0] == 2


async def test_a_new_connection_closed_before_any_answer_is_not_retried(raw_server) -> None:
    url, connections = await raw_server(lambda number, raw: (b"", True))
    pool = _pool(url)
    with pytest.raises(ConnectionClosed) as caught:
        await pool.request("POST", "/a", b"{}")
    assert caught.value.started is False
    assert connections[0] == 1
    assert pool.in_use == 0


async def test_an_answer_cut_mid_body_raises_and_an_answer_ended_by_close_is_complete(raw_server) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    url, _ = await raw_server(lambda number, raw: (cut, True))
    resp = await _pool(url).request("POST", "/a", b"{}")
    with pytest.raises(ConnectionClosed) as caught:
        await resp.read()
    assert caught.value.started is True

    unframed = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
    url, connections = await raw_server(lambda number, raw: (unframed, True))
    pool = _pool(url)
    assert await (await pool.request("GET", "/a", None)).read() == b"all of it"
    assert await (await pool.request("GET", "/a", None)).read() == b"all of it"
    assert connections[0] == 2  # "Connection: close": never reused


async def test_interim_answers_are_skipped_for_the_final_one(raw_server) -> None:
    """103 Early Hints (and 100 Continue) are not the answer: status, headers and body are the final
    answer's, whole or chunked, and the connection stays reusable."""
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    final = [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\n{\"a\":1\r\n1\r\n}\r\n0\r\n\r\n",
    ]
    url, connections = await raw_server(lambda number, raw: ([hints, final[number - 1]], False))
    pool = _pool(url)
    resp = await pool.request("POST", "/whole", b"{}")
    assert (resp.status, resp.headers) == (200, {"content-type": "application/json", "content-length": "11"})
    assert await resp.read() == b'{"ok":true}'
    resp = await pool.request("POST", "/chunked", b"{}")
    assert (resp.status, resp.headers) == (200, {"transfer-encoding": "chunked"})
    assert await resp.read() == b'{"a":1}'
    assert connections[0] == 1
    assert pool.in_use == 0


async def test_an_upgrade_the_gateway_never_asked_for_is_an_invalid_answer(raw_server) -> None:
    """101 Switching Protocols is neither interim nor an answer to a plain request."""
    upgrade = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    url, _ = await raw_server(lambda number, raw: (upgrade, False))
    pool = _pool(url)
    with pytest.raises(InvalidAnswer):
        await pool.request("GET", "/", None)
    assert pool.in_use == 0


async def test_garbage_is_an_invalid_answer(raw_server) -> None:
    url, _ = await raw_server(lambda number, raw: (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", True))
    with pytest.raises(InvalidAnswer):
        await _pool(url).request("GET", "/", None)


async def test_the_limit_makes_callers_wait_in_turn_and_a_cancelled_waiter_leaves_no_trace(serve_app) -> None:
    active, peak = [0], [0]
    app = web.Application()

    async def slow(request: web.Request) -> web.Response:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.05)
        active[0] -= 1
        return web.Response(text="done")

    app.router.add_get("/slow", slow)
    url = await serve_app(app)
    pool = _pool(url, limit=2)

    async def call() -> bytes:
        return await (await pool.request("GET", "/slow", None)).read()

    waiting = asyncio.ensure_future(call())
    results = await asyncio.gather(*(call() for _ in range(6)))
    assert results == [b"done"] * 6
    assert await waiting == b"done"
    assert peak[0] == 2
    cancelled = [asyncio.ensure_future(call()) for _ in range(4)]
    await asyncio.sleep(0.01)
    for task in cancelled[2:]:
        task.cancel()  # two hold connections, two wait and are cancelled while waiting
    await asyncio.gather(*cancelled, return_exceptions=True)
    assert pool.in_use == 0
    assert await call() == b"done"


async def test_reading_pauses_while_a_slow_consumer_leaves_data_unread(serve_app) -> None:
    total = 16 * 1024 * 1024
    app = web.Application()

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        block = b"x" * 65536
        for _ in range(total // len(block)):
            await resp.write(block)
        return resp

    app.router.add_get("/big", big)
    url = await serve_app(app)
    resp = await _pool(url).request("GET", "/big", None)
    got = len(await resp.chunk())
    await asyncio.sleep(0.3)  # the server keeps writing; the client's buffer must stay bounded
    conn = resp._conn
    assert conn.paused
    assert conn.buffered < _HIGH_WATER + 1024 * 1024
    while chunk := await resp.chunk():
        got += len(chunk)
    assert got == total


async def test_an_idle_connection_past_keepalive_is_not_reused(serve_app) -> None:
    url = await serve_app(_ports_app())
    pool = _pool(url, keepalive=0.05)
    first = json.loads(await (await pool.request("GET", "/port", None)).read())["port"]
    await asyncio.sleep(0.1)
    second = json.loads(await (await pool.request("GET", "/port", None)).read())["port"]
    assert first != second
    assert pool.in_use == 0


async def test_an_answer_larger_than_the_read_buffer_is_read_whole(serve_app) -> None:
    """``read`` takes what arrived as it goes, so reading pauses and resumes instead of stalling."""
    big = b"y" * (4 * _HIGH_WATER + 123)
    app = web.Application()

    async def whole(request: web.Request) -> web.Response:
        return web.Response(body=big)

    app.router.add_get("/whole", whole)
    url = await serve_app(app)
    pool = _pool(url)
    resp = await pool.request("GET", "/whole", None)
    assert await asyncio.wait_for(resp.read(), 5) == big
    assert pool.in_use == 0


def _slow_app() -> web.Application:
    """``/sleep/{ms}`` answers after a while; ``/partial`` sends half its body and then nothing."""
    app = web.Application()

    async def sleep(request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        return web.Response(text="done")

    async def partial(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "10"})
        await resp.prepare(request)
        await resp.write(b"12345")
        await asyncio.sleep(30)
        return resp

    app.router.add_get("/sleep/{ms}", sleep)
    app.router.add_get("/partial", partial)
    return app


async def test_a_deadline_fails_the_call_even_when_the_connection_timer_was_set_later(serve_app) -> None:
    """The connection's timer is armed for a far deadline by a first call; a second call on the
    same connection with a near deadline still fails at it, and the connection is dropped."""
    pool = _pool(await serve_app(_slow_app()))
    loop = asyncio.get_running_loop()
    assert await (await pool.request("GET", "/sleep/0", None, deadline=loop.time() + 60)).read() == b"done"
    async with asyncio.timeout(10):  # a bound for the test, far beyond the deadline under test
        with pytest.raises(TimeoutError):
            await pool.request("GET", "/sleep/30000", None, deadline=loop.time() + 0.2)
    assert pool.in_use == 0
    assert await (await pool.request("GET", "/sleep/0", None, deadline=loop.time() + 60)).read() == b"done"


async def test_watch_moves_the_deadline_for_the_body(serve_app) -> None:
    pool = _pool(await serve_app(_slow_app()))
    loop = asyncio.get_running_loop()
    resp = await pool.request("GET", "/partial", None, deadline=loop.time() + 60)
    resp.watch(loop.time() + 0.2)
    async with asyncio.timeout(10):
        with pytest.raises(TimeoutError):
            await resp.read()
    resp.close()  # what the caller (Upstream.fetch) does with a failed answer
    assert pool.in_use == 0


async def test_a_deadline_passing_after_the_answer_leaves_the_connection_reusable(serve_app) -> None:
    """The timer fires on an idle connection: nothing is in flight, nothing is dropped."""
    pool = _pool(await serve_app(_ports_app()))
    loop = asyncio.get_running_loop()
    first = json.loads(await (await pool.request("GET", "/port", None, deadline=loop.time() + 0.05)).read())
    await asyncio.sleep(0.3)  # past the deadline: the connection's timer has fired meanwhile
    second = json.loads(await (await pool.request("GET", "/port", None, deadline=loop.time() + 5)).read())
    assert first["port"] == second["port"]
