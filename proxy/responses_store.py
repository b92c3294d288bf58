"""Stored Responses: what ``previous_response_id``, ``GET``/``DELETE /v1/responses/{id}`` and
``/input_items`` read, kept per caller.

``ResponseStore`` is the seam: three coroutines (``get``, ``put``, ``delete``) keyed by the caller
(its credential's name, ``""`` when auth is off) and the response id, so a store shared by
replicas (e.g. Redis) can replace the in-memory one without the handlers changing. A caller never
sees another caller's responses: the owner is part of the key, and a miss is a miss.

``MemoryResponseStore`` keeps entries in process memory, bounded three ways: a number of entries,
a time to live, and a total of serialised bytes (an entry holds the whole conversation, images
included, so the count alone does not bound memory). The oldest entries go first; a ``get``
refreshes nothing (the time to live runs from ``put``, as OpenAI keeps a response for a fixed
time). Entries are kept serialised, as a shared store would keep them: what ``get`` returns is a
fresh copy that the caller may change. With several worker processes each has its own memory
store, so a conversation continues only on the worker that stored it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from proxy.jsonio import dumps_kept, loads

__all__ = ["StoredResponse", "ResponseStore", "MemoryResponseStore"]

_RawJSON = dict[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredResponse:
    """One stored response: the response object and every item that was its input, in order.

    ``input_items`` are the items the model saw (the continued conversation, then this request's
    input), each with an ``id``; the conversation a later ``previous_response_id`` continues is
    ``input_items`` followed by ``response["output"]``.
    """

    response: _RawJSON
    input_items: list[_RawJSON] = field(default_factory=list)

    def conversation(self) -> list[_RawJSON]:
        output = self.response.get("output")
        return [*self.input_items, *(output if isinstance(output, list) else ())]


class ResponseStore(Protocol):
    """Where stored responses live; ``owner`` is the caller (a credential's name, ``""`` without auth)."""

    async def get(self, owner: str, response_id: str) -> StoredResponse | None: ...

    async def put(self, owner: str, response_id: str, entry: StoredResponse) -> None: ...

    async def delete(self, owner: str, response_id: str) -> bool: ...


class MemoryResponseStore:
    """The in-memory store: at most ``max_entries`` entries and ``max_bytes`` serialised bytes, each
    kept ``ttl`` seconds. ``now`` is the clock (monotonic seconds), for tests."""

    def __init__(self, *, max_entries: int = 10_000, ttl: float = 24 * 3600.0, max_bytes: int = 256 * 1024 * 1024,
                 now: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1 or ttl <= 0 or max_bytes < 1:
            raise ValueError("max_entries, ttl and max_bytes must be positive")
        self.max_entries, self.ttl, self.max_bytes = max_entries, ttl, max_bytes
        self._now = now
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()  # oldest first
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        self._expire()
        found = self._entries.get((owner, response_id))
        if found is None:
            return None
        raw = loads(found[1])
        return StoredResponse(response=raw["response"], input_items=raw["input_items"])

    async def put(self, owner: str, response_id: str, entry: StoredResponse) -> None:
        blob = dumps_kept({"response": entry.response, "input_items": entry.input_items})
        key = (owner, response_id)
        self._drop(key)
        if len(blob) > self.max_bytes:
            return  # larger than the whole store: not kept (a later previous_response_id gets a 404)
        self._entries[key] = (self._now() + self.ttl, blob)
        self._bytes += len(blob)
        self._expire()
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def delete(self, owner: str, response_id: str) -> bool:
        self._expire()
        return self._drop((owner, response_id))

    def _drop(self, key: tuple[str, str]) -> bool:
        found = self._entries.pop(key, None)
        if found is None:
            return False
        self._bytes -= len(found[1])
        return True

    def _expire(self) -> None:
        """Drop expired entries: they are in expiry order, since every entry lives ``ttl`` from its put."""
        now = self._now()
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            self._drop(key)

