"""The HTTP/1.1 client the gateway talks to backends with: pooled keep-alive connections, httptools.

Why not ``aiohttp.ClientSession``: on a fast backend its per-request machinery (request and
response objects, tracing hooks, cookie jar, multidict headers, a task per connection) cost about
as much CPU as everything else the gateway does. A backend call here is one prebuilt header block
and one ``transport.write``; the answer is parsed by httptools (llhttp, in C), which also undoes
chunked framing. Everything else stays with the caller (``proxy.upstream.backend``): which deadline
applies when, the translation of failures into the ``ProxyError`` tree, what a status means.

Semantics worth knowing:
- A connection is reused only after its answer was read to the end and the backend allowed
  keep-alive; ``Response.close()`` drops it, which is how a backend learns the client went away.
- ``limit`` connections at most per pool; beyond it callers wait in order for a free one.
- An idle connection older than ``keepalive`` seconds, or seen closed by the backend, is not
  reused; nothing was written to it, so the request just takes another connection.
- A request once written is sent again only when that is harmless (RFC 9110 9.2.2). If its
  connection closes before any byte of the answer, the backend may have read and run it, or may
  have closed the idle connection just as it went out: the two cannot be told apart. An idempotent
  method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) on a reused connection is then sent once more on
  a new connection; any other (a POST generation) fails with ``ConnectionClosed``.
- Interim answers (``1xx``, e.g. ``103 Early Hints``) are skipped: the answer is the final one.
  ``101 Switching Protocols`` is an ``InvalidAnswer``, the gateway never asks for an upgrade.
- Reading is paused while more than ``_HIGH_WATER`` bytes of an answer wait for a slow consumer.
- ``request(..., deadline=)`` bounds a call by a loop-clock deadline that ``Response.watch`` can move:
  past it the answer fails with ``TimeoutError`` and the connection is dropped. The timer belongs to
  the connection and is re-armed only when it fires early, not set and cancelled per request (a
  timer costs about as much as parsing the answer). Waiting for a free connection or connecting
  (also bounded by ``connect_timeout``) is bounded by the same deadline.

The client in three parts: ``http1_connection`` (the per-connection protocol, the parser's
callbacks, the deadline timer, ``ConnectionClosed`` and ``InvalidAnswer``), ``http1_response``
(``Response``: the body read whole or by chunks, release and close) and ``http1_pool`` (``Pool``:
keep-alive reuse, the limit, the one repeat of an idempotent request). This module names them.
"""

from __future__ import annotations

from proxy.upstream.http1_connection import ConnectionClosed, InvalidAnswer
from proxy.upstream.http1_pool import Pool
from proxy.upstream.http1_response import Response

__all__ = ["ConnectionClosed", "InvalidAnswer", "Pool", "Response"]
