"""Model pulls single-flight across every process sharing the Redis: one ``/api/pull`` per backend and model.

The first process to need a pull ``claim``s it (a lock with a time to live, renewed while it pulls)
and publishes its progress as it goes; every other process follows that progress instead of
pulling, so its waiters and ``/status`` see the pull move. A success leaves a short-lived marker,
so a process whose "model not found" crossed the pull's end does not pull again. A process that
dies mid-pull stops renewing its lock; once it lapses, the next claim pulls again. If Redis cannot be
reached, a process pulls by itself (at worst one pull per process, as without ``state``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from proxy.jsonio import dumps, loads
from proxy.state.store import SharedState

__all__ = ["SharedPulls", "MINE", "FOLLOW", "DONE"]

MINE, FOLLOW, DONE = "mine", "follow", "done"
_POLL = 0.2  # seconds between two looks at another process's progress
_DONE_FOR = 10  # seconds a finished pull answers late claims without a new pull

# KEYS: lock, done marker, progress; ARGV: owner token, lock ttl (ms)
_CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 'done' end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[3])  -- an earlier pull's last word must not reach this one's followers
  return 'mine'
end
return 'follow'
"""

# KEYS: lock, progress, done marker; ARGV: owner token, progress json, succeeded (1/0), done ttl (s)
_FINISH = """
redis.call('SET', KEYS[2], ARGV[2], 'EX', 60)
if ARGV[3] == '1' then redis.call('SET', KEYS[3], '1', 'EX', ARGV[4]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: lock, progress; ARGV: owner token, progress json, lock ttl (ms)
_PUBLISH = """
redis.call('SET', KEYS[2], ARGV[2], 'EX', 600)
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""


class SharedPulls:
    """Claims, progress and results of pulls, in Redis via ``state``."""

    def __init__(self, state: SharedState, *, lock_ttl: float = 30.0) -> None:
        self.state = state
        self.lock_ttl_ms = int(lock_ttl * 1000)
        self.token = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._claim = state.redis.register_script(_CLAIM)
        self._finish = state.redis.register_script(_FINISH)
        self._publish = state.redis.register_script(_PUBLISH)

    def _keys(self, backend: str, model: str) -> tuple[str, str, str]:
        base = self.state.key("pulls", backend, model)
        return f"{base}:lock", f"{base}:progress", f"{base}:done"

    async def claim(self, backend: str, model: str) -> str:
        """``MINE`` (pull it), ``FOLLOW`` (another process pulls) or ``DONE`` (pulled a moment ago)."""
        lock, key, done = self._keys(backend, model)
        answer = await self.state.call(lambda _: self._claim(keys=[lock, done, key],
                                                             args=[self.token, self.lock_ttl_ms]))
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    async def publish(self, backend: str, model: str, progress: dict[str, Any]) -> None:
        """Share where this process's pull stands (and keep its claim alive)."""
        lock, key, _ = self._keys(backend, model)
        await self.state.call(lambda _: self._publish(keys=[lock, key], args=[self.token, dumps(progress),
                                                                             self.lock_ttl_ms]))

    async def finish(self, backend: str, model: str, progress: dict[str, Any]) -> None:
        """The pull ended (``progress["state"]`` is done or failed): share it and give the claim back."""
        lock, key, done = self._keys(backend, model)
        succeeded = "1" if progress.get("state") == "done" else "0"
        await self.state.call(lambda _: self._finish(keys=[lock, key, done],
                                                     args=[self.token, dumps(progress), succeeded, _DONE_FOR]))

    async def follow(self, backend: str, model: str) -> AsyncIterator[dict[str, Any]]:
        """Another process's progress as it changes, until it is done or failed.

        Ends without a final state when that process's claim lapsed (it died) and nothing was shared.
        """
        lock, key, _ = self._keys(backend, model)
        last = None
        while True:
            raw, held = await self.state.call(lambda r: asyncio.gather(r.get(key), r.exists(lock)))
            if raw is not None and raw != last:
                last = raw
                progress = loads(raw)
                yield progress
                if progress.get("state") in ("done", "failed"):
                    return
            elif not held:
                return
            await asyncio.sleep(_POLL)
