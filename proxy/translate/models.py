"""Ollama ``/api/tags`` entries -> OpenAI model objects.

Pure. ``created`` is the model's ``modified_at`` in Unix seconds; ``owned_by`` is the namespace
(``library`` for plain names), as Ollama's own /v1 does; an empty list is ``[]``, not ``null``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

__all__ = ["model_object", "tags_to_model_ids", "parse_timestamp"]


def parse_timestamp(value: object) -> int:
    """RFC 3339 (with Ollama's nanoseconds) to Unix seconds; 0 when missing or unreadable."""
    if not isinstance(value, str) or not value:
        return 0
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python parses at most microseconds: drop the extra fraction digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + "." + rest[:min(digits, 6)] + rest[digits:]
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return 0


def _owner(model_id: str) -> str:
    name = model_id.split(":", 1)[0]
    parts = name.split("/")
    return parts[-2] if len(parts) >= 2 else "library"


def model_object(model_id: str, *, created: int = 0, owned_by: str | None = None) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by or _owner(model_id)}


def tags_to_model_ids(tags: Mapping[str, object]) -> Iterable[tuple[str, int]]:
    """``(id, created)`` for every model in an ``/api/tags`` answer, newest first as Ollama lists them."""
    models = tags.get("models")
    if not isinstance(models, list):
        return
    for entry in models:
        if isinstance(entry, Mapping):
            model_id = entry.get("model") or entry.get("name")
            if isinstance(model_id, str) and model_id:
                yield model_id, parse_timestamp(entry.get("modified_at"))
