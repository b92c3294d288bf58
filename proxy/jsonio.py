"""JSON in and out via orjson: the one place that knows the JSON library.

Pure: no aiohttp. Handlers wrap ``dumps`` output in a response themselves (``web.json_response``
cannot take orjson's bytes-returning ``dumps``).
"""

from __future__ import annotations

import orjson

__all__ = ["dumps", "loads", "JSONDecodeError"]

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: object) -> bytes:
    """Serialise compactly; non-str dict keys are allowed (Ollama options may carry them)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


loads = orjson.loads
