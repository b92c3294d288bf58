"""Per-credential limits held in Redis, exact across every process that shares it.

The same rules as ``proxy.ratelimit`` (continuously refilled buckets of a minute's allowance;
tokens charged after the answer and paid back as a debt; the checks in the same side-effect-free
order), but each check runs as one Lua script, atomically in Redis, on Redis's own clock: no
read-modify-write race between processes, and Retry-After comes from the shared state.

Concurrency slots are leases: a sorted set of lease ids scored by their expiry. A process renews the
leases it holds every ``lease_ttl / 3`` seconds; a lease of a process that crashed expires after
``lease_ttl`` and its slot is free again. Keys are per credential and per settings (a credential
whose limits change in a reload starts afresh, as in-process), and expire once they would be full.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from itertools import count

from proxy.auth import Credential
from proxy.ratelimit import Refusal
from proxy.state.store import SharedState, StateUnavailable

__all__ = ["SharedLimits", "Lease"]

log = logging.getLogger("proxy.state")

_LEVEL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function level(key, cap)
  local v = redis.call('HMGET', key, 'level', 'updated')
  local lvl, upd = tonumber(v[1]), tonumber(v[2])
  if lvl == nil then return cap end
  if now > upd then lvl = math.min(cap, lvl + (now - upd) * cap / 60) end
  return lvl
end
local function store(key, cap, lvl)
  redis.call('HSET', key, 'level', string.format('%.17g', lvl), 'updated', string.format('%.17g', now))
  redis.call('EXPIRE', key, math.ceil((cap - lvl) * 60 / cap) + 1)
end
"""

# KEYS: requests bucket, tokens bucket, leases; ARGV: rpm, tpm, max_concurrent (0: none), lease id, lease ttl
_ADMIT = _LEVEL + """
local rpm, tpm, maxc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm > 0 then
  local lvl = level(KEYS[2], tpm)
  if lvl + 1e-9 < 0 then return {'tokens', string.format('%.6f', -lvl * 60 / tpm)} end
end
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= maxc then return {'concurrency', ''} end
end
if rpm > 0 then
  local lvl = level(KEYS[1], rpm)
  if lvl + 1e-9 < 1 then return {'requests', string.format('%.6f', (1 - lvl) * 60 / rpm)} end
  store(KEYS[1], rpm, lvl - 1)
end
if maxc > 0 then
  local ttl = tonumber(ARGV[5])
  redis.call('ZADD', KEYS[3], now + ttl, ARGV[4])
  redis.call('EXPIRE', KEYS[3], math.ceil(ttl) + 1)
end
return {'ok', ''}
"""

# KEYS: tokens bucket, leases; ARGV: tpm (0: none), lease id ('' : none), tokens used
_RELEASE = _LEVEL + """
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[2], ARGV[2]) end
local tpm, used = tonumber(ARGV[1]), tonumber(ARGV[3])
if tpm > 0 and used > 0 then store(KEYS[1], tpm, level(KEYS[1], tpm) - used) end
return 1
"""

# KEYS: leases; ARGV: lease ttl, lease ids...
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 1)
return 1
"""


@dataclass(frozen=True, slots=True)
class _Keys:
    requests: str
    tokens: str
    leases: str


@dataclass(slots=True)
class Lease:
    """What a shared admission hands back to ``SharedLimits.release``."""

    credential: Credential
    keys: _Keys
    lease_id: str  # "" without max_concurrent


class SharedLimits:
    """The limits of every credential, in Redis via ``state``."""

    def __init__(self, state: SharedState) -> None:
        self.state = state
        self._admit = state.redis.register_script(_ADMIT)
        self._release = state.redis.register_script(_RELEASE)
        self._renew = state.redis.register_script(_RENEW)
        self._ids = count()
        self._prefix = f"{os.getpid()}-{os.urandom(4).hex()}-"
        self.held: dict[str, Lease] = {}  # lease id -> lease, renewed while held
        self._renewer: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()

    def _keys(self, credential: Credential) -> _Keys:
        settings = f"{credential.max_concurrent}/{credential.requests_per_minute}/{credential.tokens_per_minute}"
        tag = hashlib.sha256(f"{credential.name}\0{settings}".encode()).hexdigest()[:16]
        base = self.state.key("limits", tag)
        return _Keys(f"{base}:requests", f"{base}:tokens", f"{base}:leases")

    async def admit(self, credential: Credential) -> Lease | Refusal:
        """Admit one request (a ``Lease`` to release) or say why not; ``StateUnavailable`` when Redis is."""
        keys = self._keys(credential)
        lease_id = f"{self._prefix}{next(self._ids)}" if credential.max_concurrent else ""
        args = [credential.requests_per_minute or 0, credential.tokens_per_minute or 0,
                credential.max_concurrent or 0, lease_id, self.state.cfg.lease_ttl]
        answer = await self.state.call(
            lambda _: self._admit(keys=[keys.requests, keys.tokens, keys.leases], args=args))
        verdict, wait = (part.decode() if isinstance(part, bytes) else str(part) for part in answer)
        if verdict != "ok":
            return Refusal(reason=verdict, retry_after=float(wait) if wait else None)  # type: ignore[arg-type]
        lease = Lease(credential, keys, lease_id)
        if lease_id:
            self.held[lease_id] = lease
            if self._renewer is None or self._renewer.done():
                self._renewer = asyncio.get_running_loop().create_task(self._renew_held(), name="lease-renewal")
        return lease

    def release(self, lease: Lease, tokens: int) -> asyncio.Task[None] | None:
        """Give the slot back and charge ``tokens``, in a task of its own (a client that left cannot stop it).

        Await it (shielded) before answering: a caller's next request must find the slot free.
        """
        self.held.pop(lease.lease_id, None)
        if not lease.lease_id and not (tokens and lease.credential.tokens_per_minute):
            return None  # requests per minute only: nothing to give back
        task = asyncio.get_running_loop().create_task(self._give_back(lease, tokens), name="lease-release")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        return task

    async def _give_back(self, lease: Lease, tokens: int) -> None:
        args = [lease.credential.tokens_per_minute or 0, lease.lease_id, tokens]
        try:
            await self.state.call(lambda _: self._release(keys=[lease.keys.tokens, lease.keys.leases], args=args))
        except StateUnavailable:
            log.debug("could not release a shared slot (it expires by itself after lease_ttl)")

    async def _renew_held(self) -> None:
        """Keep this process's leases alive while it holds them; they lapse if it dies."""
        period = self.state.cfg.lease_ttl / 3
        while self.held:
            await asyncio.sleep(period)
            by_key: dict[str, list[str]] = {}
            for lease_id, lease in list(self.held.items()):
                by_key.setdefault(lease.keys.leases, []).append(lease_id)
            for key, ids in by_key.items():
                with contextlib.suppress(StateUnavailable):
                    await self.state.call(lambda _, k=key, i=ids: self._renew(keys=[k], args=[self.state.cfg.lease_ttl, *i]))

    async def close(self) -> None:
        """Stop renewing and wait (briefly) for releases in flight."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._releases:
            await asyncio.wait(self._releases, timeout=self.state.cfg.timeout * 2)
