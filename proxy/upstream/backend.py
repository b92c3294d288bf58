"""Backends as seen from the gateway: two connection pools per backend (``proxy.upstream.http1``).

The only translator of transport failures into the ``ProxyError`` tree. Every error raised here
carries ``.outcome`` and ``.backend`` (the backend's name; never its URL or credentials). Order
matters: ``TimeoutError`` first, then an invalid answer or a connection closed once the request
went out (a broken stream, even with no byte of the answer: the backend may have run the request,
so it must not pass for "unreachable", which routes retry on the same backend), then TLS failures
(``ssl.SSLError`` is an ``OSError``), then every other ``OSError`` as "unreachable". Cancellation
(the client went away) always propagates.

Timeouts: ``connect`` for the TCP/TLS connect, ``first_byte`` until the answer starts (a cold model
load takes seconds to minutes), ``idle`` for the longest silence between two stream lines, ``read``
for a whole non-streamed answer. Apart from ``connect`` they are one deadline kept by the backend
connection (``Pool.request(deadline=)``, moved by ``Response.watch``): ``first_byte`` from sending
until the status and headers are in and, for a stream, on until its first chunk; then ``idle``
after each chunk, or ``read`` (``idle`` for an error body) once for a body read whole. Past it the
connection is dropped, so the backend stops generating.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

from policies.outcome import Outcome
from proxy.config import BackendConfig
from proxy.upstream.http1_connection import ConnectionClosed, InvalidAnswer
from proxy.upstream.http1_pool import Pool
from proxy.upstream.http1_response import Response
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

__all__ = ["ANTHROPIC_VERSION", "TRACEPARENT", "Upstream", "UpstreamResponse", "open_upstreams", "close_upstreams"]

log = logging.getLogger("proxy.upstream.backend")
ANTHROPIC_VERSION = "2023-06-01"  # the anthropic-version header sent to an Anthropic backend
_ANTHROPIC_PATHS = ("/v1/messages", "/v1/models")
_MODELS_PATHS = {"openai": "/models", "anthropic": "/v1/models"}  # what an Anthropic backend is asked (models: health)
_ERROR_BODY_LIMIT = 64 * 1024

TRACEPARENT: contextvars.ContextVar[bytes | None] = contextvars.ContextVar("traceparent", default=None)
"""The ``traceparent: ...\\r\\n`` line sent with this task's backend requests: set by the tracer
around each traced attempt (``proxy.telemetry.tracing``); None (no header) when tracing is off."""


def _ssl_context(cfg: BackendConfig) -> ssl.SSLContext | None:
    """The backend's TLS settings (None for http://), made once and shared by its pools."""
    if not cfg.url.startswith("https://"):
        return None
    if not cfg.tls_verify:
        log.warning("TLS verification is OFF for backend %s (tls_verify: false)", cfg.name)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=cfg.ca_bundle or None)


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

    __slots__ = ("_resp", "_backend", "_idle", "_read", "_done")

    def __init__(self, resp: Response, backend: str, *, idle: float, read: float) -> None:
        self._resp = resp
        self._backend = backend
        self._idle, self._read = idle, read
        self._done = False

    @property
    def headers(self) -> Mapping[str, str]:
        """The answer's headers, by lower-case name."""
        return self._resp.headers

    @property
    def status(self) -> int:
        return self._resp.status

    async def read(self) -> bytes:
        """The whole body, within ``read`` from now."""
        self._resp.watch(asyncio.get_running_loop().time() + self._read)
        try:
            body = await self._resp.read()
        except BaseException as exc:
            self.close()
            raise _translate(exc, self._backend, in_body=True) from None
        self._done = True
        return body

    async def json(self) -> object:
        body = await self.read()
        try:
            return loads(body)
        except JSONDecodeError:
            raise UpstreamBrokenStreamError(f"backend {self._backend} sent a body that is not JSON",
                                            outcome=Outcome.BROKEN_STREAM, backend=self._backend) from None

    async def lines(self) -> AsyncIterator[bytes]:
        """Non-empty NDJSON lines as they arrive; the first by the ``first_byte`` deadline, the rest within ``idle``."""
        async for batch in self.line_batches():
            for line in batch:
                yield line

    def line_batches(self) -> AsyncIterator[list[bytes]]:
        """The complete non-empty NDJSON lines of each chunk as it arrives (deadlines as ``chunks``).

        One Ollama line usually is one chunk; lines that arrived together come together, so a relay
        can send what they translate to in one write.
        """
        return self._body(lines=True)

    def chunks(self) -> AsyncIterator[bytes]:
        """Raw body chunks as they arrive (an OpenAI-compatible SSE stream is relayed unchanged).

        The first by the ``first_byte`` deadline set by ``send``, each next within ``idle``.
        """
        return self._body(lines=False)

    async def _body(self, *, lines: bool) -> AsyncIterator[Any]:
        """Chunks, or the lines of each chunk: one loop, not a generator over another (one less per token)."""
        resp = self._resp
        clock = asyncio.get_running_loop().time
        idle = self._idle
        rest = b""
        try:
            while chunk := await resp.chunk():
                if not lines:
                    yield chunk
                else:
                    if rest:
                        chunk = rest + chunk
                    *complete, rest = chunk.split(b"\n")
                    batch = [line for line in complete if line]
                    if batch:
                        yield batch
                # While the consumer holds the chunk the deadline keeps running: a consumer too slow to
                # come back within `idle` seconds loses the backend connection (its next read raises).
                resp.watch(clock() + idle)
        except GeneratorExit:
            self.close()
            raise
        except BaseException as exc:
            raise self._failed(exc) from None
        self._done = True  # the last chunk() released the connection
        if rest.strip():
            yield [rest]

    def _failed(self, exc: BaseException) -> BaseException:
        """The ProxyError for a read that failed; the connection is dropped."""
        self.close()
        return _translate(exc, self._backend, in_body=True)

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._resp.close()


def _translate(exc: BaseException, backend: str, *, in_body: bool) -> BaseException:
    """Turn a transport or asyncio exception into the ProxyError tree (cancellation passes through)."""
    if isinstance(exc, (ProxyError, asyncio.CancelledError, GeneratorExit)):
        return exc
    if isinstance(exc, TimeoutError):
        what = "stopped sending" if in_body else "did not answer in time"
        return UpstreamTimeoutError(f"backend {backend} {what}", outcome=Outcome.TIMEOUT, backend=backend)
    if isinstance(exc, InvalidAnswer) or (in_body and isinstance(exc, OSError)):
        return UpstreamBrokenStreamError(f"backend {backend} closed the answer before it was complete"
                                         if in_body else f"backend {backend} sent an invalid HTTP answer",
                                         outcome=Outcome.BROKEN_STREAM, backend=backend)
    if isinstance(exc, ConnectionClosed):  # the request went out: the backend may have run it
        what = "closed the answer before it was complete" if exc.started else "closed the connection without answering"
        return UpstreamBrokenStreamError(f"backend {backend} {what}", outcome=Outcome.BROKEN_STREAM, backend=backend)
    if isinstance(exc, ssl.SSLCertVerificationError):  # before its base SSLError
        # a fixed text: the verifier's own message names the address the certificate did not match
        return UpstreamUnavailableError(f"backend {backend} failed TLS certificate verification "
                                        "(for a private CA, set the backend's ca_bundle)",
                                        outcome=Outcome.CONNECT, backend=backend)
    if isinstance(exc, ssl.SSLError):
        return UpstreamUnavailableError(f"backend {backend} is unreachable (TLS handshake failed)",
                                        outcome=Outcome.CONNECT, backend=backend)
    if isinstance(exc, socket.gaierror):
        return UpstreamUnavailableError(f"backend {backend} is unreachable (name resolution failed)",
                                        outcome=Outcome.CONNECT, backend=backend)
    if isinstance(exc, OSError):
        # os.strerror: the errno's text only; the exception's own text names the address
        reason = os.strerror(exc.errno) if exc.errno else "connection failed"
        return UpstreamUnavailableError(f"backend {backend} is unreachable ({reason.lower()})",
                                        outcome=Outcome.CONNECT, backend=backend)
    return exc


class Upstream:
    """One configured backend: its connection pools, precomputed headers and in-flight count.

    ``pool`` carries generation traffic; ``probes`` is a small pool of its own for health checks and
    discovery, so a pool full of long streams can neither delay them nor make a busy backend look down.
    """

    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.kind = cfg.kind
        self.outstanding = 0
        tls = _ssl_context(cfg)
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if cfg.kind == "anthropic":  # Anthropic's own scheme; never an Authorization header
            if cfg.api_key:
                headers["x-api-key"] = cfg.api_key
            headers["anthropic-version"] = ANTHROPIC_VERSION
        elif cfg.api_key:  # an empty key (e.g. ${OPENAI_API_KEY:-} unset) sends no header
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        elif cfg.username is not None:
            token = base64.b64encode(f"{cfg.username}:{cfg.password or ''}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")
        t = cfg.timeouts
        self._timeouts = (t.first_byte, t.idle, t.read)
        self.pool = Pool(cfg.url, headers=lines, tls=tls, limit=cfg.max_connections,
                         connect_timeout=t.connect)
        self.probes = Pool(cfg.url, headers=lines, tls=tls, limit=4, connect_timeout=t.connect)

    @property
    def models_path(self) -> str | None:
        """Where a cloud-type backend lists its models (health checks, admin, pre-flight); None for Ollama."""
        return _MODELS_PATHS.get(self.kind)

    async def send(self, method: str, path: str, body: bytes | None = None, *,
                   first_byte: float | None = None, model: str | None = None) -> UpstreamResponse:
        """Send a request; return once a 2xx answer has started, or raise a ProxyError with an outcome.

        The ``first_byte`` deadline keeps running in the answer until its first chunk or ``read``.
        """
        first, idle, read = self._timeouts
        if first_byte is not None:
            first = first_byte
        self._check_path(path)
        try:
            resp = await self.pool.request(method, path, body, deadline=asyncio.get_running_loop().time() + first,
                                           extra_headers=TRACEPARENT.get())
        except BaseException as exc:
            raise _translate(exc, self.name, in_body=False) from None
        if resp.status < 300:
            return UpstreamResponse(resp, self.name, idle=idle, read=read)
        raise await self._status_error(resp, model)

    async def fetch(self, method: str, path: str, body: bytes | None = None, *, model: str | None = None,
                    first_byte: float | None = None, pool: Pool | None = None) -> bytes:
        """Send a request and read the whole 2xx answer (non-streamed calls).

        One deadline, kept by the backend connection, serves both phases: ``first_byte`` until the
        answer starts, then moved to ``read``; a non-2xx answer raises the same ProxyError as ``send``.
        """
        self._check_path(path)
        loop = asyncio.get_running_loop()
        first, _, read = self._timeouts
        if first_byte is not None:
            first = read = first_byte
        resp: Response | None = None
        in_body = False
        try:
            resp = await (pool or self.pool).request(method, path, body, deadline=loop.time() + first,
                                                     extra_headers=TRACEPARENT.get())
            if resp.status < 300:
                in_body = True
                resp.watch(loop.time() + read)  # free when the whole answer came with its headers
                raw = await resp.read()
        except BaseException as exc:
            if resp is not None:
                resp.close()
            raise _translate(exc, self.name, in_body=in_body) from None
        if resp.status >= 300:
            raise await self._status_error(resp, model)
        return raw

    def _check_path(self, path: str) -> None:
        """An Anthropic backend serves Messages requests only: anything else fails here, unsent.

        No translation exists from the other doors (chat completions, completions, embeddings,
        Ollama's native calls) to Anthropic's API, so the route's attempt fails at once with an
        error naming the backend type (no fallback: the route itself is misconfigured for the call).
        """
        if self.kind == "anthropic" and not path.startswith(_ANTHROPIC_PATHS):
            exc = UpstreamStatusError(
                f"backend {self.name} is of type anthropic: it serves only Anthropic Messages requests "
                "(POST /v1/messages); no translation exists for this endpoint", code="unsupported_backend",
                backend=self.name)
            exc.final = True  # a retry cannot help (x-should-retry: false)
            raise exc

    async def _status_error(self, resp: Response, model: str | None) -> ProxyError:
        """The error for a non-2xx answer, from its body read within ``idle`` (what arrived, if cut).

        Only the backend's failures to send the body are absorbed; cancellation (the client went
        away) propagates, so no fallback runs a generation for nobody.
        """
        raw = b""
        resp.watch(asyncio.get_running_loop().time() + self._timeouts[1])
        try:
            while len(raw) < _ERROR_BODY_LIMIT and (chunk := await resp.chunk()):
                raw += chunk
        except (OSError, InvalidAnswer):  # TimeoutError and ConnectionClosed are OSErrors
            pass
        finally:
            resp.close()
        raw = raw[:_ERROR_BODY_LIMIT]
        status = resp.status
        outcome = _status_outcome(status)
        extra = {"Retry-After": resp.headers["retry-after"]} if "retry-after" in resp.headers else None
        if self.kind == "openai":
            return PassthroughError(status, raw or b'{"error":{"message":"backend error","type":"api_error",'
                                    b'"param":null,"code":null}}', outcome=outcome, backend=self.name, headers=extra)
        if self.kind == "anthropic" and status not in (401, 403):  # relayed in Anthropic's own shape
            # (a refused gateway key falls through to the 502 below: the client's own key was fine, and a
            # relayed 401 would make Claude Code ask its user to log in again)
            return PassthroughError(status, raw or b'{"type":"error","error":{"type":"api_error",'
                                    b'"message":"backend error"}}', outcome=outcome, backend=self.name, headers=extra)
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

        It goes through the small ``probes`` pool, so a pool full of long streams can neither delay
        health checks nor make a busy backend look down.
        """
        raw = await self.fetch("GET", path, first_byte=timeout, pool=self.probes)
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


def open_upstreams(backends: tuple[BackendConfig, ...]) -> dict[str, Upstream]:
    """Pools for every backend (connections open on first use); close them with ``close_upstreams``."""
    return {cfg.name: Upstream(cfg) for cfg in backends}


async def close_upstreams(upstreams: Mapping[str, Upstream]) -> None:
    for upstream in upstreams.values():
        await upstream.pool.close()
        await upstream.probes.close()
