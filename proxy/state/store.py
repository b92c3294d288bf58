"""``SharedState``: the gateway's one Redis client, which never hangs a request and never raises a 500.

Every call is bounded by ``state.timeout`` (connect included) and has no retries of its own. A failed
call marks Redis down: a WARNING is logged once, ``on_change(False)`` is called (the
``proxy_state_backend_up`` gauge), and for ``state.retry_after`` seconds calls fail at once with
``StateUnavailable`` instead of waiting on a dead server. The next call after that tries again; when
it succeeds, a WARNING says so and ``on_change(True)`` is called. Callers decide what unavailability
means (``state.on_unavailable``).

redis-py is imported when the first ``SharedState`` is made, not with this module: a gateway without a
``state`` section never loads it (it adds about 9 MiB to the process's RSS).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from proxy.state.config import StateConfig

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["SharedState", "StateUnavailable"]

log = logging.getLogger("proxy.state")
_T = TypeVar("_T")
_CONNECTIONS = 32  # Redis connections per process at most


class StateUnavailable(Exception):
    """Redis could not be reached, or answered too slowly, or is being left alone after a failure."""


class SharedState:
    """The Redis client and its availability; ``call(fn)`` runs ``fn(redis)`` within the timeout."""

    def __init__(self, cfg: StateConfig, *, on_change: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.on_change = on_change
        self.clock = clock
        self.up = True  # until a call says otherwise
        self.error: str | None = None
        self._retry_at = 0.0
        self._down_at = 0.0
        import redis.asyncio as aioredis  # only a gateway with a state section pays for redis-py
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self._failures = (RedisError, OSError, TimeoutError)
        # a bounded pool: a burst of requests queues for a connection (within the timeout) instead of
        # opening hundreds of connections at once
        pool = aioredis.BlockingConnectionPool.from_url(
            cfg.redis_url, max_connections=_CONNECTIONS, timeout=cfg.timeout, socket_timeout=cfg.timeout,
            socket_connect_timeout=cfg.timeout, retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self.redis = aioredis.Redis(connection_pool=pool)

    def key(self, *parts: str) -> str:
        return ":".join((self.cfg.key_prefix, *parts))

    async def call(self, fn: Callable[[aioredis.Redis], Awaitable[_T]]) -> _T:
        """``fn(redis)``'s result, or ``StateUnavailable`` within ``timeout`` seconds, never another error."""
        started = self.clock()
        if not self.up and started < self._retry_at:
            raise StateUnavailable(self.error or "shared state unavailable")
        try:
            async with asyncio.timeout(self.cfg.timeout):
                result = await fn(self.redis)
        except self._failures as exc:
            self._down(type(exc).__name__)
            raise StateUnavailable(self.error or "shared state unavailable") from None
        if not self.up and started >= self._down_at:  # a call begun before the failure proves nothing
            self.up, self.error = True, None
            log.warning("shared state (Redis) is reachable again: limits are shared across processes again")
            if self.on_change is not None:
                self.on_change(True)
        return result

    def _down(self, reason: str) -> None:
        self._down_at = self.clock()
        self._retry_at = self._down_at + self.cfg.retry_after
        if self.up:
            self.up = False
            self.error = f"Redis unavailable ({reason})"
            policy = ("per-process limits apply" if self.cfg.on_unavailable == "allow"
                      else "limited credentials get 503")
            log.warning("shared state (Redis) is unavailable (%s): %s until it is back", reason, policy)
            if self.on_change is not None:
                self.on_change(False)

    def status(self) -> dict[str, Any]:
        """For ``/status`` and ``/readyz``: whether the shared state is reachable, and why not."""
        return {"backend": "redis", "up": self.up, "error": self.error, "on_unavailable": self.cfg.on_unavailable}

    async def close(self) -> None:
        await self.redis.aclose()
