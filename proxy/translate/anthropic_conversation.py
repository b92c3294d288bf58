"""Anthropic Messages ``system`` and ``messages`` -> Ollama ``/api/chat`` messages.

Pure. ``ollama_messages(body)`` builds the conversation Ollama sees, with ``context_management``'s
thinking clearing applied; the request as a whole is translated by ``proxy.translate.anthropic_request``.

- ``system`` (a string or text blocks; ``cache_control`` ignored) -> a leading system message;
  text blocks are joined with newlines, as on chat completions. ``role: "system"`` messages too.
- Content blocks: ``text``; ``image`` with a base64 source -> ``images`` (a ``url`` source is a
  400: nothing is fetched here; a shell that fetches images may rewrite it to base64 first);
  ``document`` with a plain-text source -> text (PDFs: 400); ``tool_use`` -> ``tool_calls``, the
  ``input`` mapping as ``arguments``; ``tool_result`` -> a ``tool`` message at its place in the turn
  (``tool_call_id``, ``tool_name`` from the call, images kept; ``is_error`` prefixes ``"Error: "``,
  Ollama having no such flag); ``thinking`` -> the assistant message's ``thinking`` (the model's
  template decides what to render); ``redacted_thinking`` is dropped (only Claude can read it).
- ``context_management``: ``clear_thinking_*`` edits are applied (thinking kept on the last N
  assistant turns with thinking, or all); any other edit would change the prompt in a way not
  reproduced here: 400.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.errors import InvalidRequestError
from proxy.translate.fields import opt_bool, opt_int, opt_str, require_str, wrong_type
from proxy.translate.images import data_url_to_base64

__all__ = ["MAX_MESSAGES", "ollama_messages"]

MAX_MESSAGES = 100_000  # Anthropic's own limit


def _unsupported(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="unsupported_parameter")


def _blocks(content: object, param: str) -> list[Mapping[str, object]]:
    """A message's content as blocks: a string is one text block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise wrong_type(param, "a string or an array of content blocks", content)
    for j, block in enumerate(content):
        if not isinstance(block, Mapping):
            raise wrong_type(f"{param}[{j}]", "an object", block)
    return content


def _image(block: Mapping[str, object], where: str) -> str:
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise wrong_type(f"{where}.source", "an object", source)
    kind = source.get("type")
    if kind == "base64":
        media = require_str(source, "media_type", f"{where}.source.media_type")
        data = require_str(source, "data", f"{where}.source.data")
        return data_url_to_base64(f"data:{media};base64,{data}", f"{where}.source.data")
    if kind == "url":
        raise _unsupported("Image URLs are not fetched by this gateway; send the image as a base64 source "
                           '({"type": "base64", "media_type": "image/png", "data": ...}).', f"{where}.source")
    raise _unsupported(f"Unsupported image source type {kind!r}: use base64.", f"{where}.source.type")


def _document(block: Mapping[str, object], where: str) -> str:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, Mapping) else None
    if not isinstance(source, Mapping) or kind not in ("text", "content"):
        raise _unsupported("Only plain-text documents (a text source) can be read by Ollama models.",
                           f"{where}.source")
    text = source.get("data") if kind == "text" else source.get("content")
    if not isinstance(text, str):
        raise wrong_type(f"{where}.source.{'data' if kind == 'text' else 'content'}", "a string", text)
    title = opt_str(block, "title", f"{where}.title")
    return f"{title}\n{text}" if title else text


def _part(block: Mapping[str, object], where: str, texts: list[str], images: list[str]) -> bool:
    """Collect a text, image or document block into ``texts`` / ``images``; False for other kinds."""
    kind = block.get("type")
    if kind == "text":
        texts.append(require_str(block, "text", f"{where}.text"))
    elif kind == "image":
        images.append(_image(block, where))
    elif kind == "document":
        texts.append(_document(block, where))
    else:
        return False
    return True


def _tool_result(block: Mapping[str, object], where: str, names: Mapping[str, str]) -> dict[str, object]:
    call_id = require_str(block, "tool_use_id", f"{where}.tool_use_id")
    content = block.get("content")
    texts: list[str] = []
    images: list[str] = []
    for k, part in enumerate(_blocks(content, f"{where}.content") if content is not None else []):
        if not _part(part, f"{where}.content[{k}]", texts, images):
            raise _unsupported(f"Unsupported tool_result content block {part.get('type')!r}: use text or image.",
                               f"{where}.content[{k}].type")
    text = "\n".join(texts)
    if opt_bool(block, "is_error", f"{where}.is_error"):
        text = f"Error: {text}" if text else "Error"  # Ollama has no error flag: say it in the content
    out: dict[str, object] = {"role": "tool", "content": text}
    if images:
        out["images"] = images
    out["tool_call_id"] = call_id
    if call_id in names:
        out["tool_name"] = names[call_id]
    return out


def _user(blocks: Sequence[Mapping[str, object]], where: str, role: str, names: Mapping[str, str],
          out: list[dict[str, object]]) -> None:
    """User (or system) turns: runs of text and images become messages, each tool_result a tool message."""
    texts: list[str] = []
    images: list[str] = []

    def flush() -> None:
        if texts or images:
            message: dict[str, object] = {"role": role, "content": "\n".join(texts)}
            if images:
                message["images"] = list(images)
            out.append(message)
            texts.clear()
            images.clear()

    for j, block in enumerate(blocks):
        bwhere = f"{where}[{j}]"
        kind = block.get("type")
        if kind == "tool_result" and role == "user":
            flush()
            out.append(_tool_result(block, bwhere, names))
        elif (kind != "text" and role != "user") or not _part(block, bwhere, texts, images):
            raise _unsupported(f"Unsupported content block {kind!r} in a {role} message.", f"{bwhere}.type")
    flush()


def _assistant(blocks: Sequence[Mapping[str, object]], where: str, names: dict[str, str]) -> dict[str, object]:
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, object]] = []
    for j, block in enumerate(blocks):
        bwhere = f"{where}[{j}]"
        kind = block.get("type")
        if kind == "text":
            texts.append(require_str(block, "text", f"{bwhere}.text"))
        elif kind == "thinking":
            thinking.append(require_str(block, "thinking", f"{bwhere}.thinking"))
        elif kind == "redacted_thinking":
            continue  # encrypted for Claude; no other model can read it
        elif kind == "tool_use":
            call_id = require_str(block, "id", f"{bwhere}.id")
            name = require_str(block, "name", f"{bwhere}.name")
            arguments = block.get("input")
            if not isinstance(arguments, Mapping):
                raise wrong_type(f"{bwhere}.input", "an object", arguments)
            names[call_id] = name
            # Anthropic's ``input`` is already a mapping, which is what Ollama takes as ``arguments``
            calls.append({"id": call_id, "function": {"name": name, "arguments": arguments}})
        else:
            raise _unsupported(f"Unsupported content block {kind!r} in an assistant message.", f"{bwhere}.type")
    message: dict[str, object] = {"role": "assistant", "content": "\n".join(texts)}
    if any(thinking):
        message["thinking"] = "\n".join(t for t in thinking if t)
    if calls:
        message["tool_calls"] = calls
    return message


def _system(body: Mapping[str, object]) -> list[dict[str, object]]:
    system = body.get("system")
    if system is None:
        return []
    out: list[dict[str, object]] = []
    _user(_blocks(system, "system"), "system", "system", {}, out)
    return [m for m in out if m["content"]]


def _messages(body: Mapping[str, object]) -> list[dict[str, object]]:
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequestError("Missing required parameter: 'messages'.", param="messages", code="missing_field")
    if not isinstance(messages, list):
        raise wrong_type("messages", "an array", messages)
    if not messages:
        raise InvalidRequestError("Invalid 'messages': at least one message is required.", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequestError(f"Invalid 'messages': at most {MAX_MESSAGES} messages.", param="messages")
    names: dict[str, str] = {}
    native = _system(body)
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise wrong_type(where, "an object", message)
        role = message.get("role")
        if message.get("content") is None:
            raise InvalidRequestError(f"Missing required parameter: '{where}.content'.",
                                      param=f"{where}.content", code="missing_field")
        blocks = _blocks(message.get("content"), f"{where}.content")
        if role == "assistant":
            native.append(_assistant(blocks, f"{where}.content", names))
        elif role in ("user", "system"):
            _user(blocks, f"{where}.content", str(role), names, native)
        else:
            raise InvalidRequestError(f"Invalid value for '{where}.role': {role!r}. Supported: user, assistant.",
                                      param=f"{where}.role")
    return native


def _thinking_turns_kept(body: Mapping[str, object]) -> int | None:
    """``context_management``: the number of assistant turns whose thinking is kept (None: all)."""
    config = body.get("context_management")
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise wrong_type("context_management", "an object", config)
    edits = config.get("edits") or []
    if not isinstance(edits, list):
        raise wrong_type("context_management.edits", "an array", edits)
    kept: int | None = None
    for i, edit in enumerate(edits):
        where = f"context_management.edits[{i}]"
        kind = edit.get("type") if isinstance(edit, Mapping) else None
        if not isinstance(edit, Mapping) or not isinstance(kind, str) or not kind.startswith("clear_thinking_"):
            raise _unsupported(f"Context editing {kind!r} cannot be applied on this gateway's Ollama backends "
                               "(only clear_thinking is); turn it off in the client.", f"{where}.type")
        keep = edit.get("keep", {"type": "thinking_turns", "value": 1})  # Anthropic's default
        if keep == "all":
            kept = None
        elif isinstance(keep, Mapping) and keep.get("type") == "thinking_turns":
            kept = opt_int(keep, "value", 0, param=f"{where}.keep.value") or 0
        else:
            raise InvalidRequestError(f"Invalid '{where}.keep': use \"all\" or a thinking_turns object.",
                                      param=f"{where}.keep")
    return kept


def _clear_thinking(messages: list[dict[str, object]], kept: int) -> None:
    turns = [m for m in messages if m.get("role") == "assistant" and m.get("thinking")]
    for message in turns[: max(0, len(turns) - kept)]:
        del message["thinking"]


def ollama_messages(body: Mapping[str, object]) -> list[dict[str, object]]:
    """``system`` and ``messages`` as Ollama messages, thinking cleared as ``context_management`` asks."""
    messages = _messages(body)
    kept = _thinking_turns_kept(body)
    if kept is not None:
        _clear_thinking(messages, kept)
    return messages
