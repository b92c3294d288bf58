"""Backends as seen from the gateway: one pooled ``aiohttp.ClientSession`` per backend.

The only module that imports aiohttp's client and the only translator of its exceptions into the
``ProxyError`` tree. Every error raised here carries ``.outcome`` and ``.backend`` (the backend's
name; never its URL or credentials). Order matters (aiohttp 3.14): the builtin ``TimeoutError``
first (``ServerTimeoutError`` is both a ``TimeoutError`` and a ``ClientConnectionError``), then
payload errors (a truncated body), then every other ``ClientError`` as "unreachable".

Timeouts: ``connect`` for the TCP/TLS connect, ``first_byte`` until the answer starts (a cold model
load takes seconds to minutes), ``idle`` for the longest silence between two stream lines, ``read``
for a whole non-streamed answer.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Mapping

import aiohttp
from aiohttp import ClientSession

from policies.outcome import Outcome
from proxy.config import BackendConfig
from proxy.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    PassthroughError,
    ProxyError,
    RateLimitedError,
    UpstreamBrokenStreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from proxy.jsonio import JSONDecodeError, loads

__all__ = ["Upstream", "UpstreamResponse", "open_upstreams", "close_upstreams"]

log = logging.getLogger("proxy.upstream")
_ERROR_BODY_LIMIT = 64 * 1024
_LARGE_BODY = 1024 * 1024  # aiohttp wants bigger bodies (images) as a stream, not raw bytes


def _ssl_context(cfg: BackendConfig) -> ssl.SSLContext | bool:
    if not cfg.url.startswith("https://"):
        return True
    if not cfg.tls_verify:
        log.warning("TLS verification is OFF for backend %s (tls_verify: false)", cfg.name)
        return False
    if cfg.ca_bundle:
        return ssl.create_default_context(cafile=cfg.ca_bundle)
    return True


def _status_outcome(status: int) -> Outcome:
    if status == 404:
        return Outcome.MODEL_NOT_FOUND
    if status == 429:
        return Outcome.RATE_LIMITED
    if status == 503:
        return Outcome.QUEUE_FULL
    if status in (401, 403):
        return Outcome.UPSTREAM_AUTH
    if status >= 500:
        return Outcome.SERVER_ERROR
    return Outcome.BAD_REQUEST


class UpstreamResponse:
    """An answer whose status was 2xx; read it whole, by lines or by chunks, then it is released.

    ``close()`` drops the connection instead of returning it to the pool: that is how Ollama learns
    that the client went away and stops generating.
    """

    __slots__ = ("_resp", "_backend", "_first", "_idle", "_read", "_done")

    def __init__(self, resp: aiohttp.ClientResponse, backend: str, timeouts: tuple[float, float, float]) -> None:
        self._resp = resp
        self._backend = backend
        self._first, self._idle, self._read = timeouts
        self._done = False

    @property
    def headers(self) -> Mapping[str, str]:
        return self._resp.headers

    @property
    def status(self) -> int:
        return self._resp.status

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout(self._read):
                body = await self._resp.read()
        except BaseException as exc:
            self.close()
            raise _translate(exc, self._backend, in_body=True) from None
        self._done = True
        self._resp.release()
        return body

    async def json(self) -> object:
        body = await self.read()
        try:
            return loads(body)
        except JSONDecodeError:
            raise UpstreamBrokenStreamError(f"backend {self._backend} sent a body that is not JSON",
                                            outcome=Outcome.BROKEN_STREAM, backend=self._backend) from None

    async def lines(self) -> AsyncIterator[bytes]:
        """Non-empty NDJSON lines as they arrive; the first within ``first_byte``, the rest within ``idle``.

        Split from ``readany()`` chunks (one Ollama line usually is one chunk) rather than aiohttp's
        ``readline()``, which walks its buffer in Python for every line.
        """
        rest = b""
        async for chunk in self.chunks():
            if rest:
                chunk = rest + chunk
            *complete, rest = chunk.split(b"\n")
            for line in complete:
                if line:
                    yield line
        if rest.strip():
            yield rest

    async def chunks(self) -> AsyncIterator[bytes]:
        """Raw body chunks as they arrive (an OpenAI-compatible SSE stream is relayed unchanged)."""
        read = self._resp.content.readany
        loop = asyncio.get_running_loop()
        idle = self._idle
        try:
            async with asyncio.timeout_at(loop.time() + self._first) as deadline:
                while True:
                    chunk = await read()
                    if not chunk:
                        break
                    # While the consumer holds the chunk the idle timer keeps running: a client too slow
                    # to take a chunk within `idle` seconds is treated as gone. One re-arm per chunk.
                    yield chunk
                    deadline.reschedule(loop.time() + idle)
        except GeneratorExit:
            self.close()
            raise
        except BaseException as exc:
            self.close()
            raise _translate(exc, self._backend, in_body=True) from None
        self._done = True
        self._resp.release()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._resp.close()


def _translate(exc: BaseException, backend: str, *, in_body: bool) -> BaseException:
    """Turn an aiohttp/asyncio exception into the ProxyError tree (cancellation passes through)."""
    if isinstance(exc, (ProxyError, asyncio.CancelledError, GeneratorExit)):
        return exc
    if isinstance(exc, TimeoutError):
        what = "stopped sending" if in_body else "did not answer in time"
        return UpstreamTimeoutError(f"backend {backend} {what}", outcome=Outcome.TIMEOUT, backend=backend)
    if isinstance(exc, aiohttp.ClientPayloadError) or (in_body and isinstance(exc, aiohttp.ClientError)):
        return UpstreamBrokenStreamError(f"backend {backend} closed the answer before it was complete",
                                         outcome=Outcome.BROKEN_STREAM, backend=backend)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):  # before its base ClientConnectorError
        # a fixed text: the verifier's own message names the address the certificate did not match
        return UpstreamUnavailableError(f"backend {backend} failed TLS certificate verification "
                                        "(for a private CA, set the backend's ca_bundle)",
                                        outcome=Outcome.CONNECT, backend=backend)
    if isinstance(exc, aiohttp.ClientSSLError):
        return UpstreamUnavailableError(f"backend {backend} is unreachable (TLS handshake failed)",
                                        outcome=Outcome.CONNECT, backend=backend)
    if isinstance(exc, aiohttp.ClientConnectorError):
        # os.strerror: the errno's text only; the exception's own text names the address
        errno = exc.os_error.errno if exc.os_error else None
        reason = os.strerror(errno) if errno else "connection failed"
        return UpstreamUnavailableError(f"backend {backend} is unreachable ({reason.lower()})",
                                        outcome=Outcome.CONNECT, backend=backend)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return UpstreamUnavailableError(f"backend {backend} is unreachable (connection reset)",
                                        outcome=Outcome.CONNECT, backend=backend)
    return exc


class Upstream:
    """One configured backend: its pooled session, precomputed headers and in-flight count."""

    def __init__(self, cfg: BackendConfig, session: ClientSession, probe_session: ClientSession | None = None) -> None:
        self.cfg = cfg
        self.probe_session = probe_session or session
        self.name = cfg.name
        self.kind = cfg.kind
        self.session = session
        self.outstanding = 0
        self._ssl = _ssl_context(cfg)
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if cfg.api_key:  # an empty key (e.g. ${OPENAI_API_KEY:-} unset) sends no header
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        elif cfg.username is not None:
            token = base64.b64encode(f"{cfg.username}:{cfg.password or ''}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        self._headers = headers
        t = cfg.timeouts
        self._timeouts = (t.first_byte, t.idle, t.read)

    def _request(self, session: ClientSession, method: str, path: str,
                 body: bytes | None) -> Awaitable[aiohttp.ClientResponse]:
        """The one place a backend request is made (the caller wraps it in its timeout)."""
        data = io.BytesIO(body) if body is not None and len(body) > _LARGE_BODY else body
        return session.request(method, self.cfg.url + path, data=data, headers=self._headers, ssl=self._ssl,
                               allow_redirects=False)

    async def send(self, method: str, path: str, body: bytes | None = None, *,
                   first_byte: float | None = None, model: str | None = None) -> UpstreamResponse:
        """Send a request; return once a 2xx answer has started, or raise a ProxyError with an outcome."""
        wait = first_byte if first_byte is not None else self._timeouts[0]
        try:
            async with asyncio.timeout(wait):
                resp = await self._request(self.session, method, path, body)
        except BaseException as exc:
            raise _translate(exc, self.name, in_body=False) from None
        if resp.status < 300:
            return UpstreamResponse(resp, self.name, self._timeouts)
        raise await self._status_error(resp, model)

    async def fetch(self, method: str, path: str, body: bytes | None = None, *, model: str | None = None,
                    first_byte: float | None = None, session: ClientSession | None = None) -> bytes:
        """Send a request and read the whole 2xx answer (non-streamed calls).

        One timer serves both phases: ``first_byte`` until the answer starts, then re-armed for
        ``read``; a non-2xx answer raises the same ProxyError as ``send``.
        """
        loop = asyncio.get_running_loop()
        first, _, read = self._timeouts
        if first_byte is not None:
            first = read = first_byte
        resp: aiohttp.ClientResponse | None = None
        in_body = False
        try:
            async with asyncio.timeout_at(loop.time() + first) as deadline:
                resp = await self._request(session or self.session, method, path, body)
                if resp.status < 300:
                    in_body = True
                    deadline.reschedule(loop.time() + read)
                    raw = await resp.read()
        except BaseException as exc:
            if resp is not None:
                resp.close()
            raise _translate(exc, self.name, in_body=in_body) from None
        if resp.status >= 300:
            raise await self._status_error(resp, model)
        return raw

    async def _status_error(self, resp: aiohttp.ClientResponse, model: str | None) -> ProxyError:
        try:
            async with asyncio.timeout(self._timeouts[1]):
                raw = await resp.content.read(_ERROR_BODY_LIMIT)
        except BaseException:
            raw = b""
        finally:
            resp.close()
        status = resp.status
        outcome = _status_outcome(status)
        extra = {"Retry-After": resp.headers["Retry-After"]} if "Retry-After" in resp.headers else None
        if self.kind == "openai":
            return PassthroughError(status, raw or b'{"error":{"message":"backend error","type":"api_error",'
                                    b'"param":null,"code":null}}', outcome=outcome, backend=self.name, headers=extra)
        message = _ollama_message(raw) or f"HTTP {status}"
        common = {"outcome": outcome, "backend": self.name}
        if status == 404:
            return ModelNotFoundError(model or "", message=message, **common)
        if status == 429:
            return RateLimitedError(f"backend {self.name} is rate limiting: {message}", headers=extra, **common)
        if status == 503:
            return UpstreamStatusError(f"backend {self.name} is overloaded: {message}", status=503,
                                       code="queue_full", headers=extra, **common)
        if status in (401, 403):
            return UpstreamStatusError(f"backend {self.name} refused the gateway's credentials", **common)
        if status >= 500:
            return UpstreamStatusError(f"backend {self.name} failed: {message}", **common)
        return InvalidRequestError(message, code="upstream_rejected", **common)

    async def get_json(self, path: str, *, timeout: float) -> object:
        """A small GET (``/api/tags``, ``/api/ps``, ``/api/version``, ``/models``) read whole.

        It goes through a small session of its own, so a pool full of long streams can neither
        delay health checks nor make a busy backend look down.
        """
        raw = await self.fetch("GET", path, first_byte=timeout, session=self.probe_session)
        try:
            return loads(raw)
        except JSONDecodeError:
            raise UpstreamBrokenStreamError(f"backend {self.name} sent a body that is not JSON",
                                            outcome=Outcome.BROKEN_STREAM, backend=self.name) from None


def _ollama_message(raw: bytes) -> str:
    try:
        body = loads(raw)
    except JSONDecodeError:
        return raw.decode("utf-8", "replace").strip()[:500]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            err = err.get("message")
        if isinstance(err, str):
            return err
    return ""


def _connector(cfg: BackendConfig, limit: int) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=60,
                                keepalive_timeout=30.0)


def open_upstreams(backends: tuple[BackendConfig, ...]) -> dict[str, Upstream]:
    """One session per backend; the caller closes them with ``close_upstreams``."""
    out = {}
    for cfg in backends:
        _ssl_context(cfg)  # fail on an unreadable ca_bundle before any session exists
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.timeouts.connect)
        session = ClientSession(connector=_connector(cfg, cfg.max_connections), timeout=timeout,
                                auto_decompress=False, skip_auto_headers=("User-Agent",), raise_for_status=False)
        probes = ClientSession(connector=_connector(cfg, 4), timeout=timeout, auto_decompress=False,
                               skip_auto_headers=("User-Agent",), raise_for_status=False)
        out[cfg.name] = Upstream(cfg, session, probes)
    return out


async def close_upstreams(upstreams: Mapping[str, Upstream]) -> None:
    for upstream in upstreams.values():
        await upstream.session.close()
        if upstream.probe_session is not upstream.session:
            await upstream.probe_session.close()
