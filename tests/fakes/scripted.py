"""What both fake servers share: a request log and per-path scripts of behaviours.

``script(path, *behaviours)``: behaviours are used in order and the last one repeats.
``requests`` records every ``(method, path, json body, headers)``.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class ScriptedFake:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any, dict[str, str]]] = []
        self._scripts: dict[str, list[Any]] = {}

    def script(self, path: str, *behaviours: Any) -> Any:
        self._scripts[path] = list(behaviours)
        return self

    def bodies(self, path: str) -> list[Any]:
        return [body for _, p, body, _ in self.requests if p == path]

    async def _record(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        body = orjson.loads(raw) if raw else {}
        self.requests.append((request.method, request.path, body, dict(request.headers)))
        return body

    def _seen(self, request: web.Request) -> None:
        """Record a request without a body (GETs)."""
        self.requests.append((request.method, request.path, None, dict(request.headers)))

    def _next(self, path: str) -> Any:
        script = self._scripts.get(path)
        if not script:
            return None
        return script.pop(0) if len(script) > 1 else script[0]
