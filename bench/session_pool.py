"""The gateway with a tuned ``aiohttp.ClientSession`` as its backend client, for comparison only.

``proxy/upstream/http1.py`` is the gateway's own HTTP/1.1 client (pooled keep-alive connections,
httptools). To see whether it still earns its place, this module provides the same interface
(``Pool.request`` -> a response with ``status``, ``headers``, ``complete``, ``watch``, ``chunk``,
``read``, ``release``, ``close``) over one ``ClientSession`` per backend, tuned the way a careful user
would: a ``TCPConnector`` with the same connection limit and DNS cache, no cookie jar, no automatic
decompression, no auto headers beyond what the gateway sends. Run as a module it starts the gateway's
CLI with this pool in place of ``http1.Pool`` (the one seam the backend client sits behind):

    .venv/bin/python -m bench.session_pool --config FILE --port PORT

Used by ``python -m bench.features N full session`` (CPU per request, interleaved with the real
client). Never imported by the gateway itself.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from typing import Any

import aiohttp


class SessionResponse:
    """One answer read through aiohttp's client, with a deadline the caller can move."""

    def __init__(self, resp: aiohttp.ClientResponse, deadline: float | None) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.headers.items()}
        self._deadline = deadline
        self._released = False

    @property
    def complete(self) -> bool:
        return self._resp.content.at_eof()

    def watch(self, deadline: float) -> None:
        self._deadline = deadline

    async def chunk(self) -> bytes:
        async with asyncio.timeout_at(self._deadline):
            data = await self._resp.content.readany()
        if not data:
            self.release()
        return data

    async def read(self) -> bytes:
        async with asyncio.timeout_at(self._deadline):
            data = await self._resp.read()
        self.release()
        return data

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._resp.release()

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._resp.close()


class SessionPool:
    """``http1.Pool``'s interface over one tuned ClientSession (created on first use)."""

    def __init__(self, url: str, *, headers: bytes, tls: ssl.SSLContext | None, limit: int,
                 connect_timeout: float, keepalive: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.headers = dict(line.split(": ", 1) for line in headers.decode("latin-1").split("\r\n") if line)
        self.tls, self.limit, self.keepalive = tls, limit, keepalive
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=self.limit, ttl_dns_cache=300, keepalive_timeout=self.keepalive,
                                             ssl=self.tls if self.tls is not None else False)
            self.session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                                 auto_decompress=False, timeout=self.timeout,
                                                 skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                                                 headers=self.headers)
        return self.session

    async def request(self, method: str, path: str, body: bytes | None, *, deadline: float | None = None,
                      extra_headers: bytes | None = None) -> SessionResponse:
        headers = None
        if extra_headers:  # prebuilt "Name: value\r\n" lines, as http1.Pool takes them (traceparent)
            headers = dict(line.split(": ", 1) for line in extra_headers.decode("latin-1").split("\r\n") if line)
        async with asyncio.timeout_at(deadline):
            resp = await self._session().request(method, self.url + path, data=body, headers=headers)
        return SessionResponse(resp, deadline)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def main() -> int:
    from proxy.__main__ import main as gateway_main
    from proxy.upstream import backend

    backend.Pool = SessionPool  # type: ignore[misc,assignment]  # the comparison: only the client differs
    return gateway_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())


__all__: list[Any] = ["SessionPool", "SessionResponse"]
