"""JSON in and out via orjson: the one place that knows the JSON library.

Pure: no aiohttp. Handlers wrap ``dumps`` output in a response themselves (``web.json_response``
cannot take orjson's bytes-returning ``dumps``).
"""

from __future__ import annotations

import orjson

__all__ = ["dumps", "dumps_kept", "loads", "JSONDecodeError"]

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: object) -> bytes:
    """Serialise compactly; non-str dict keys are allowed (Ollama options may carry them)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def dumps_kept(value: object) -> bytes:
    """``dumps`` for bytes that outlive the call (a request body kept for retries, a stored answer).

    orjson's result keeps its whole output buffer allocated (at least 4 KiB from orjson 3.12, 1 KiB
    before, and up to twice the size for large outputs): a copy takes only its length. Not for bytes
    used at once (joined into a frame, written out), where the copy would only cost time.
    """
    return memoryview(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)).tobytes()


loads = orjson.loads
