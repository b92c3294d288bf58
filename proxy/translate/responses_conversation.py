"""Responses API input -> Ollama ``/api/chat`` messages: the items of a conversation, in order.

Pure. ``Conversation`` takes the stored items a ``previous_response_id`` continues and this request's
``input`` items one at a time (``add(item, where)``) and builds Ollama's ``messages``; ``input_items(body)``
gives ``input`` as items (a string is one user message). The request as a whole is translated by
``proxy.translate.responses_request``.

- Messages: roles ``user``, ``assistant``, ``system`` and ``developer`` (a system message); content a
  string or parts (``input_text``, ``output_text``, ``refusal``; ``input_image`` on user turns, a data
  URL: ``http(s)`` URLs are a 400 here, the shell fetches them beforehand when image fetching is on;
  ``file_id`` images and ``input_file`` parts are 400s). Text parts are joined with newlines.
- ``function_call`` items become the assistant turn's ``tool_calls`` (arguments parsed from their JSON
  string; a namespace member's name is sent as ``namespace.member``); ``function_call_output`` items
  become ``tool`` messages, with the function's name when its call is known.
- A ``reasoning`` item's text (its content, else its summary, else ``encrypted_content``, which ours
  carries in plain) becomes the ``thinking`` of the assistant turn that follows it.
- Items of hosted-tool calls are left out and listed in ``left_out`` (or refused with
  ``hosted_tools="refuse"``); ``item_reference`` items are a 400.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.errors import InvalidRequestError
from proxy.jsonio import JSONDecodeError, loads
from proxy.translate.fields import objects, opt_str, require_str, wrong_type
from proxy.translate.images import data_url_to_base64

__all__ = ["MAX_ITEMS", "Conversation", "input_items"]

MAX_ITEMS = 4096
# input items recording calls of hosted tools: history Ollama cannot use
_HOSTED_ITEMS = frozenset({
    "web_search_call", "file_search_call", "code_interpreter_call", "computer_call", "computer_call_output",
    "image_generation_call", "mcp_call", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response",
    "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
    "apply_patch_call_output", "tool_search_call", "tool_search_output", "compaction",
})
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _unsupported(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="unsupported_parameter")


def _text_parts(content: object, *, param: str, images: list[str] | None) -> str:
    """Flatten Responses content (a string or parts) to Ollama's string; images go to ``images``."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise wrong_type(param, "a string or an array of content parts", content)
    texts: list[str] = []
    for where, part in objects(content, param):
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            texts.append(require_str(part, "text", f"{where}.text"))
        elif kind == "refusal":
            texts.append(require_str(part, "refusal", f"{where}.refusal"))
        elif kind == "input_image" and images is not None:
            if part.get("file_id") is not None:
                raise _unsupported(f"{where}.file_id", "Images by 'file_id' are not supported; send a data URL.")
            images.append(data_url_to_base64(require_str(part, "image_url", f"{where}.image_url"),
                                             f"{where}.image_url"))
        elif kind == "input_file":
            raise _unsupported(f"{where}.type", "File inputs are not supported by this gateway's Ollama backends.")
        else:
            raise _unsupported(f"{where}.type", f"Unsupported content part type {kind!r} here.")
    return "\n".join(texts)


def _reasoning_text(item: Mapping[str, object]) -> str:
    """The text of a reasoning item handed back: its content, else its summary, else encrypted_content
    (ours carries the plain reasoning)."""
    for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key)
        if isinstance(parts, list):
            texts = [p["text"] for p in parts if isinstance(p, Mapping) and p.get("type") == kind
                     and isinstance(p.get("text"), str)]
            if texts:
                return "\n".join(texts)  # type: ignore[arg-type]
    encrypted = item.get("encrypted_content")
    return encrypted if isinstance(encrypted, str) else ""


class Conversation:
    """Builds Ollama messages from Responses items, in order."""

    def __init__(self, hosted_tools: str, left_out: list[str]) -> None:
        self.messages: list[dict[str, object]] = []
        self.names: dict[str, str] = {}  # call_id -> function name, for tool results
        self.hosted_tools = hosted_tools
        self.left_out = left_out
        self._thinking = ""  # a reasoning item's text, waiting for the assistant turn it belongs to

    def _assistant(self, merge: bool) -> dict[str, object]:
        last = self.messages[-1] if self.messages else None
        if merge and last is not None and last["role"] == "assistant":
            message = last
        else:
            message = {"role": "assistant", "content": ""}
            self.messages.append(message)
        if self._thinking and not message.get("thinking"):
            message["thinking"] = self._thinking
        self._thinking = ""
        return message

    def add(self, item: object, where: str) -> None:
        if isinstance(item, str):  # not in the spec, but a bare string in the list is plainly a user turn
            self.messages.append({"role": "user", "content": item})
            return
        if not isinstance(item, Mapping):
            raise wrong_type(where, "an object", item)
        kind = item.get("type") or ("message" if "role" in item else None)  # EasyInputMessage has no type
        if kind == "message":
            self._message(item, where)
        elif kind == "function_call":
            self._function_call(item, where)
        elif kind == "function_call_output":
            call_id = require_str(item, "call_id", f"{where}.call_id")
            images: list[str] = []
            output = _text_parts(item.get("output"), param=f"{where}.output", images=images)
            out: dict[str, object] = {"role": "tool", "content": output, "tool_call_id": call_id}
            if call_id in self.names:
                out["tool_name"] = self.names[call_id]
            if images:
                out["images"] = images
            self.messages.append(out)
        elif kind == "reasoning":
            self._thinking = _reasoning_text(item)
        elif kind in _HOSTED_ITEMS:
            if self.hosted_tools == "refuse":
                raise _unsupported(f"{where}.type", f"Input items of type {kind!r} (hosted tools) are not supported.")
            if kind not in self.left_out:
                self.left_out.append(str(kind))
        elif kind == "item_reference":
            raise _unsupported(f"{where}.type", "Item references are not supported; send the items themselves "
                                                "or use 'previous_response_id'.")
        else:
            raise _unsupported(f"{where}.type", f"Unsupported input item type {kind!r}.")

    def _message(self, item: Mapping[str, object], where: str) -> None:
        role_in = item.get("role")
        role = _ROLES.get(role_in) if isinstance(role_in, str) else None
        if role is None:
            raise InvalidRequestError(f"Invalid value for '{where}.role': {role_in!r}. Supported: user, assistant, "
                                      "system, developer.", param=f"{where}.role")
        if "content" not in item or item["content"] is None:
            raise InvalidRequestError(f"Missing required parameter: '{where}.content'.", param=f"{where}.content",
                                      code="missing_field")
        images: list[str] = []
        text = _text_parts(item["content"], param=f"{where}.content", images=images if role == "user" else None)
        if role == "assistant":
            self._assistant(merge=False)["content"] = text
            return
        self._thinking = ""  # reasoning not followed by its assistant turn has nowhere to go
        out: dict[str, object] = {"role": role, "content": text}
        if images:
            out["images"] = images
        self.messages.append(out)

    def _function_call(self, item: Mapping[str, object], where: str) -> None:
        call_id = require_str(item, "call_id", f"{where}.call_id")
        name = require_str(item, "name", f"{where}.name")
        namespace = opt_str(item, "namespace", f"{where}.namespace")
        if namespace and not name.startswith(namespace + "."):
            name = f"{namespace}.{name}"
        raw = require_str(item, "arguments", f"{where}.arguments")
        # OpenAI serialises arguments as a JSON string; Ollama takes them as a mapping
        try:
            arguments = loads(raw) if raw.strip() else {}
        except JSONDecodeError:
            raise InvalidRequestError("Invalid function call arguments: not valid JSON.",
                                      param=f"{where}.arguments") from None
        if not isinstance(arguments, Mapping):
            raise wrong_type(f"{where}.arguments", "a JSON object", arguments)
        self.names[call_id] = name
        message = self._assistant(merge=True)
        calls = message.setdefault("tool_calls", [])
        calls.append({"id": call_id, "function": {"name": name, "arguments": arguments}})  # type: ignore[union-attr]


def input_items(body: Mapping[str, object]) -> tuple[Mapping[str, object], ...]:
    """The request's ``input`` as items: a string is one user message; at most ``MAX_ITEMS``."""
    value = body.get("input")
    if isinstance(value, str):
        return ({"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]},)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise wrong_type("input", "a string or an array of input items", value)
    if len(value) > MAX_ITEMS:
        raise InvalidRequestError(f"Invalid 'input': array too long. Expected at most {MAX_ITEMS} items, "
                                  f"got {len(value)}.", param="input")
    return tuple(value)
