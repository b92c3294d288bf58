"""Anthropic ``/v1/messages/count_tokens``: an estimate of a Messages request's input tokens.

Pure. ``count_tokens_estimate(body) -> {"input_tokens": N}`` is the route's answer; the streamed
answer's ``message_start`` may carry it too (Ollama reports the real count only at the end).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from proxy.errors import InvalidRequestError
from proxy.jsonio import dumps

__all__ = ["IMAGE_TOKENS", "count_tokens_estimate"]

IMAGE_TOKENS = 1600  # count_tokens: Anthropic's cost of a full-size image (about w*h/750, capped)


def _chars(content: object, images: list[int]) -> int:
    """Characters of text in a content value; images are counted in ``images``."""
    if isinstance(content, str):
        return len(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for block in content:
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text":
            total += _chars(block.get("text"), images)
        elif kind == "thinking":
            total += _chars(block.get("thinking"), images)
        elif kind in ("image", "document"):
            images[0] += 1
        elif kind == "tool_use":
            total += _chars(block.get("name"), images) + len(dumps(block.get("input")))
        elif kind == "tool_result":
            total += _chars(block.get("content"), images)
        elif kind != "redacted_thinking":
            total += len(dumps(block))
    return total


def count_tokens_estimate(body: Mapping[str, object]) -> dict[str, int]:
    """``/v1/messages/count_tokens``: an *estimate*, ``ceil(characters / 4)`` plus 1600 per image.

    Characters of the system prompt, message texts, thinking, tool calls and results (their JSON)
    and tool definitions (their JSON). Lenient: nothing is refused for being unsupported, since a
    client asking for a count should get one; only a missing ``messages`` array is a 400.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequestError("Missing required parameter: 'messages'.", param="messages", code="missing_field")
    images = [0]
    chars = _chars(body.get("system"), images)
    for message in messages:
        if isinstance(message, Mapping):
            chars += _chars(message.get("role"), images) + _chars(message.get("content"), images)
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        chars += len(dumps(tool))
    return {"input_tokens": math.ceil(chars / 4) + images[0] * IMAGE_TOKENS}
