"""OpenAI chat ``messages`` and their content parts -> Ollama ``/api/chat`` messages.

Pure. The request as a whole is translated by ``proxy.translate.chat_request``. Roles: ``developer``
is ``system``. Content is a string or parts: ``text``, ``image_url`` (user messages only; a data URL,
which becomes one of the message's ``images``) and, in assistant messages, ``refusal`` (as text).
An assistant's ``tool_calls`` take their arguments (a JSON string) as a mapping, its
``reasoning_content`` (or ``reasoning``) is Ollama's ``thinking``; a tool message's ``tool_name`` is
its ``name``, else the name of the call it answers.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.errors import InvalidRequestError
from proxy.jsonio import JSONDecodeError, loads
from proxy.translate.fields import objects, opt_str, require_str, wrong_type
from proxy.translate.images import data_url_to_base64

__all__ = ["MAX_MESSAGES", "ollama_messages"]

MAX_MESSAGES = 2048
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _content(content: object, role: str, param: str, images: list[str]) -> str:
    """Flatten OpenAI content (a string or parts) to Ollama's string, collecting image payloads."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise wrong_type(param, "a string or an array of content parts", content)
    texts: list[str] = []
    for where, part in objects(content, param):
        kind = part.get("type")
        if kind == "text":
            texts.append(require_str(part, "text", f"{where}.text"))
        elif kind == "image_url":
            if role != "user":
                raise InvalidRequestError("Image parts are only allowed in user messages.", param=where)
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, Mapping) else ref
            if not isinstance(url, str):
                raise wrong_type(f"{where}.image_url.url", "a string", url)
            images.append(data_url_to_base64(url, f"{where}.image_url.url"))
        elif kind == "refusal" and role == "assistant":
            texts.append(require_str(part, "refusal", f"{where}.refusal"))
        else:
            raise InvalidRequestError(
                f"Unsupported content part type {kind!r}: use text or image_url.",
                param=f"{where}.type",
                code="unsupported_parameter",
            )
    return "\n".join(texts)


def _assistant_tool_calls(calls: object, param: str, names: dict[str, str]) -> list[dict[str, object]]:
    if not isinstance(calls, list):
        raise wrong_type(param, "an array", calls)
    native: list[dict[str, object]] = []
    for where, call in objects(calls, param):
        function = call.get("function")
        if not isinstance(function, Mapping):
            raise wrong_type(f"{where}.function", "an object", function)
        name = require_str(function, "name", f"{where}.function.name")
        raw_args = function.get("arguments", "{}")
        # OpenAI serialises arguments as a JSON string; Ollama takes them as a mapping.
        if isinstance(raw_args, str):
            try:
                arguments = loads(raw_args) if raw_args.strip() else {}
            except JSONDecodeError:
                raise InvalidRequestError(
                    "Invalid tool call arguments: not valid JSON.", param=f"{where}.function.arguments"
                ) from None
        else:
            arguments = raw_args
        if not isinstance(arguments, Mapping):
            raise wrong_type(f"{where}.function.arguments", "a JSON object", arguments)
        call_id = call.get("id")
        entry: dict[str, object] = {"function": {"name": name, "arguments": arguments}}
        if isinstance(call_id, str) and call_id:
            names[call_id] = name
            entry["id"] = call_id
        native.append(entry)
    return native


def ollama_messages(messages: object) -> list[dict[str, object]]:
    """The request's ``messages`` as Ollama's: roles mapped, content flattened, images in ``images``."""
    if messages is None:
        raise InvalidRequestError("Missing required parameter: 'messages'.", param="messages", code="missing_field")
    if not isinstance(messages, list):
        raise wrong_type("messages", "an array", messages)
    if not messages:
        raise InvalidRequestError("Invalid 'messages': empty array. Expected at least one message.",
                                  param="messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequestError(
            f"Invalid 'messages': array too long. Expected at most {MAX_MESSAGES} messages, got {len(messages)}.",
            param="messages",
        )
    names: dict[str, str] = {}
    native: list[dict[str, object]] = []
    for where, message in objects(messages, "messages"):
        role_in = message.get("role")
        role = _ROLES.get(role_in) if isinstance(role_in, str) else None
        if role is None:
            raise InvalidRequestError(
                f"Invalid value for '{where}.role': {role_in!r}. Supported: system, developer, user, "
                "assistant, tool.",
                param=f"{where}.role",
            )
        out: dict[str, object] = {"role": role}
        images: list[str] = []
        content = message.get("content")
        tool_calls = message.get("tool_calls") if role == "assistant" else None
        if content is None:
            if tool_calls is None and role != "assistant":
                raise InvalidRequestError(f"Missing required parameter: '{where}.content'.",
                                          param=f"{where}.content", code="missing_field")
            out["content"] = ""
        else:
            out["content"] = _content(content, role, f"{where}.content", images)
        if images:
            out["images"] = images
        if tool_calls is not None:
            out["tool_calls"] = _assistant_tool_calls(tool_calls, f"{where}.tool_calls", names)
        if role == "assistant":
            reasoning = message.get("reasoning_content", message.get("reasoning"))
            if isinstance(reasoning, str) and reasoning:
                out["thinking"] = reasoning
        elif role == "tool":
            call_id = opt_str(message, "tool_call_id", f"{where}.tool_call_id")
            name = opt_str(message, "name", f"{where}.name") or (names.get(call_id) if call_id else None)
            if call_id:
                out["tool_call_id"] = call_id
            if name:
                out["tool_name"] = name
        native.append(out)
    return native
