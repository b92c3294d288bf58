"""Stored Responses in Redis: the ``ResponseStore`` seam (``proxy.responses_store``) shared by replicas.

With a ``state`` section a response stored through one process is continued (``previous_response_id``),
retrieved and deleted through any other. The bounds are the in-memory store's: each entry lives
``ttl`` seconds (a Redis expiry), at most ``max_entries`` are kept (an index sorted by store time;
the oldest go first), and an entry larger than ``max_entries_bytes`` is not kept. Owners are part of
the key, so a caller never reads another caller's responses.

When Redis cannot be reached: reading a stored response is a 503 (never a 500, and never a 404 that
would tell the client its conversation is gone); storing one is skipped with a WARNING, and the
answer still goes to the client.
"""

from __future__ import annotations

import hashlib
import logging

from proxy.errors import ServiceUnavailableError
from proxy.jsonio import dumps, loads
from proxy.responses_store import StoredResponse
from proxy.state.store import SharedState, StateUnavailable

__all__ = ["RedisResponseStore"]

log = logging.getLogger("proxy.state")

# KEYS: entry, index; ARGV: blob, ttl seconds, max entries, index member (the entry's key)
_PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]) * 1000)
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  for i, value in ipairs(redis.call('ZPOPMIN', KEYS[2], over)) do
    if i % 2 == 1 then redis.call('DEL', value) end
  end
end
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) * 1000)
return 1
"""


class RedisResponseStore:
    """``get``/``put``/``delete`` of stored responses in Redis, with the in-memory store's bounds."""

    def __init__(self, state: SharedState, *, max_entries: int = 10_000, ttl: float = 24 * 3600.0,
                 max_entry_bytes: int = 16 * 1024 * 1024) -> None:
        self.state, self.max_entries, self.ttl, self.max_entry_bytes = state, max_entries, ttl, max_entry_bytes
        self._index = state.key("responses", "index")
        self._put = state.redis.register_script(_PUT)

    def _key(self, owner: str, response_id: str) -> str:
        tag = hashlib.sha256(owner.encode()).hexdigest()[:16]  # the caller's name stays out of Redis keys
        return self.state.key("responses", tag, response_id)

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        try:
            blob = await self.state.call(lambda r: r.get(self._key(owner, response_id)))
        except StateUnavailable:
            raise ServiceUnavailableError("Stored responses are unavailable right now (shared state down); retry "
                                          "shortly.", code="state_unavailable", headers={"Retry-After": "1"}) from None
        if blob is None:
            return None
        raw = loads(blob)
        return StoredResponse(response=raw["response"], input_items=raw["input_items"])

    async def put(self, owner: str, response_id: str, entry: StoredResponse) -> None:
        blob = dumps({"response": entry.response, "input_items": entry.input_items})
        if len(blob) > self.max_entry_bytes:
            return  # too large to keep: a later previous_response_id gets a 404, as with the memory store
        key = self._key(owner, response_id)
        args = [blob, max(1, int(self.ttl)), self.max_entries, key]
        try:
            await self.state.call(lambda _: self._put(keys=[key, self._index], args=args))
        except StateUnavailable:
            log.warning("response %s was not stored: the shared state is unavailable", response_id)

    async def delete(self, owner: str, response_id: str) -> bool:
        key = self._key(owner, response_id)
        try:
            removed = await self.state.call(lambda r: r.delete(key))
        except StateUnavailable:
            raise ServiceUnavailableError("Stored responses are unavailable right now (shared state down); retry "
                                          "shortly.", code="state_unavailable", headers={"Retry-After": "1"}) from None
        if removed:
            await self._forget(key)
        return bool(removed)

    async def _forget(self, key: str) -> None:
        try:
            await self.state.call(lambda r: r.zrem(self._index, key))
        except StateUnavailable:
            pass  # the index entry ages out with the ttl
