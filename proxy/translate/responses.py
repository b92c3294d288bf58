"""OpenAI Responses API (``POST /v1/responses``) <-> Ollama ``/api/chat``: the request and the answer.

Pure: plain values in and out; ids, times and the stored conversation are passed in. The stream
translator is ``proxy.translate.responses_stream.ResponsesStream``; it shares the builders below.

Public API:

- ``responses_request_to_ollama(body, *, model, default_options={}, default_keep_alive=None,
  prior_items=(), hosted_tools="ignore") -> ResponsesRequest``. ``body`` is the client's JSON,
  ``model`` the Ollama model of this attempt. ``prior_items`` is the stored conversation a
  ``previous_response_id`` continues (``conversation_items`` of that response), prepended to
  ``input``; the previous ``instructions`` are *not* carried over, as at OpenAI. Hosted tools
  (``web_search``, ``file_search``, ``mcp``, ...) and input items of hosted-tool calls are left out of
  what Ollama sees and listed in ``ResponsesRequest.left_out`` (``hosted_tools="ignore"``), or refused
  with a 400 naming them (``hosted_tools="refuse"``). Every other field that cannot be honoured is a
  400 naming it; ``null`` counts as not sent.
- ``ResponsesRequest``: ``native`` (the ``/api/chat`` body), ``left_out`` (tool and item types, for
  a response header and the log), ``forced`` (a ``ForcedTool`` when ``tool_choice`` forces a call),
  ``input_items`` (this request's input as items) and ``prior_items``, plus what the answer needs.
- ``ollama_chat_to_response(native, *, request, response_id, created_at, model, new_id,
  completed_at=None) -> dict``: a non-streamed ``/api/chat`` answer as a ``response`` object.
  ``new_id(prefix)`` makes item ids (``msg_``, ``fc_``, ``rs_``, ``call_``); the shell passes
  ``proxy.ids.new_id``. ``model`` is the client's model name.
- ``conversation_items(request, response) -> list``: what to store under the response's id so a
  later ``previous_response_id`` can continue it (prior items, this input, this output).
- Streaming: ``proxy.translate.responses_stream.ResponsesStream(request=, response_id=, created_at=, model=,
  new_id=, now=None)`` with ``feed(obj) -> bytes``, ``fail(exc) -> bytes`` and ``response`` (the
  final response object, for the store); see its docstring.

Mapping decisions (where OpenAI and Ollama differ):

- ``input_image`` takes data URLs; ``http(s)`` URLs are a 400 here, so the shell fetches them
  beforehand (as for chat: rewrite ``image_url`` into a data URL in place) when image fetching is on.
  ``file_id`` images and ``input_file`` parts are 400s.
- ``reasoning.effort`` maps as for chat (``EFFORT_TO_THINK``): none -> false, minimal -> low, low,
  medium, high, and xhigh/max -> max. Ollama's thinking is the model's raw reasoning: it comes back
  as a reasoning item's ``content`` (``reasoning_text``), or as its ``summary`` (``summary_text``)
  when the client asked for one (``reasoning.summary``), since clients that ask display summaries.
  With ``include: ["reasoning.encrypted_content"]`` it is also put, unencrypted, in
  ``encrypted_content``, so stateless clients (``store: false``) hand it back on the next turn.
- ``tool_choice`` ``"required"``, ``{"type": "function", "name"}`` and ``allowed_tools`` in required
  mode are forced calls (``proxy.translate.tools``): one call, the format constrains the answer.
  ``"none"`` sends no tools. Namespace members are sent as ``namespace.member`` and come back as
  ``name`` + ``namespace``.
- ``truncation: "disabled"`` (sent explicitly) is Ollama's ``truncate: false``: an input longer than
  the context is then an error instead of being cut. Otherwise Ollama drops the oldest messages to
  fit, which is what ``"auto"`` means, so that is what the response echoes.
- ``text.verbosity``, ``metadata``, ``user``, ``store``, ``prompt_cache_key``, ``safety_identifier``,
  ``service_tier``, ``client_metadata``, ``stream_options`` and ``max_tool_calls`` (hosted tools only)
  are accepted and echoed; they change nothing Ollama does.
- ``usage``: Ollama counts no cached or reasoning tokens apart, so both details are 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from proxy.errors import InvalidRequestError
from proxy.jsonio import JSONDecodeError, dumps, loads
from proxy.translate.chat import EFFORT_TO_THINK, logprobs_to_openai
from proxy.translate.fields import (
    MAX_TOKENS_LIMIT,
    ollama_extras,
    opt_bool,
    opt_int,
    opt_number,
    opt_str,
    require_str,
    wrong_type,
)
from proxy.translate.images import data_url_to_base64
from proxy.translate.tools import ForcedTool, forced_tool, with_instruction

__all__ = [
    "HOSTED_TOOLS",
    "MAX_ITEMS",
    "ResponsesRequest",
    "conversation_items",
    "function_call_item",
    "message_item",
    "native_calls",
    "ollama_chat_to_response",
    "reasoning_item",
    "response_object",
    "response_usage",
    "responses_request_to_ollama",
]

MAX_ITEMS = 4096
# tools OpenAI runs itself (or whose calls have shapes of their own): Ollama cannot run them
HOSTED_TOOLS = frozenset({
    "web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11",
    "file_search", "code_interpreter", "computer", "computer_use_preview", "image_generation", "mcp",
    "local_shell", "shell", "apply_patch", "tool_search", "programmatic_tool_calling",
})
# input items recording calls of hosted tools: history Ollama cannot use
_HOSTED_ITEMS = frozenset({
    "web_search_call", "file_search_call", "code_interpreter_call", "computer_call", "computer_call_output",
    "image_generation_call", "mcp_call", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response",
    "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
    "apply_patch_call_output", "tool_search_call", "tool_search_output", "compaction",
})
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# fields the gateway's shell owns (store, routing, logs) or that change nothing Ollama does
_ACCEPTED = frozenset({
    "model", "stream", "store", "previous_response_id", "metadata", "user", "include", "prompt_cache_key",
    "prompt_cache_retention", "client_metadata", "service_tier", "safety_identifier", "stream_options",
    "max_tool_calls",
})
_TRANSLATED = frozenset({
    "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "reasoning",
    "max_output_tokens", "temperature", "top_p", "top_logprobs", "truncation", "background",
    "options", "keep_alive", "think",
})


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponsesRequest:
    """A translated Responses request: the Ollama body and what the answer's translation needs."""

    native: dict[str, object]
    left_out: tuple[str, ...] = ()
    forced: ForcedTool | None = None
    parallel_tool_calls: bool = True
    summary_reasoning: bool = False
    encrypted_reasoning: bool = False
    logprobs: bool = False
    namespaces: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    echo: Mapping[str, object] = field(default_factory=dict)
    input_items: tuple[Mapping[str, object], ...] = ()
    prior_items: tuple[Mapping[str, object], ...] = ()


def _unsupported(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="unsupported_parameter")


def _check_fields(body: Mapping[str, object]) -> None:
    for key, value in body.items():
        if value is not None and key not in _ACCEPTED and key not in _TRANSLATED:
            raise _unsupported(key, f"Unsupported parameter: '{key}' cannot be honoured by this gateway's "
                                    "Ollama backends.")
    require_str(body, "model")
    for key in ("previous_response_id", "user", "prompt_cache_key", "safety_identifier", "service_tier",
                "prompt_cache_retention"):
        opt_str(body, key)
    opt_bool(body, "store")
    opt_int(body, "max_tool_calls", 0)
    for key in ("client_metadata", "stream_options"):
        value = body.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise wrong_type(key, "an object", value)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise wrong_type("metadata", "an object", metadata)
        if len(metadata) > 16 or not all(isinstance(k, str) and len(k) <= 64 and isinstance(v, str)
                                         and len(v) <= 512 for k, v in metadata.items()):
            raise InvalidRequestError("Invalid 'metadata': at most 16 string pairs, keys up to 64 characters, "
                                      "values up to 512.", param="metadata")
    include = body.get("include")
    if include is not None and not (isinstance(include, list) and all(isinstance(i, str) for i in include)):
        raise wrong_type("include", "an array of strings", include)
    if opt_bool(body, "background"):
        raise _unsupported("background", "Background responses are not supported; send the request "
                                         "without 'background' (streaming works).")


# input


def _text_parts(content: object, *, param: str, images: list[str] | None) -> str:
    """Flatten Responses content (a string or parts) to Ollama's string; images go to ``images``."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise wrong_type(param, "a string or an array of content parts", content)
    texts: list[str] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, Mapping):
            raise wrong_type(where, "an object", part)
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


class _Conversation:
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


def _input_items(body: Mapping[str, object]) -> tuple[Mapping[str, object], ...]:
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


# tools


def _function_tool(tool: Mapping[str, object], where: str, prefix: str = "") -> dict[str, object]:
    name = require_str(tool, "name", f"{where}.name")
    description = opt_str(tool, "description", f"{where}.description")
    parameters = tool.get("parameters")
    if parameters is not None and not isinstance(parameters, Mapping):
        raise wrong_type(f"{where}.parameters", "a JSON schema object", parameters)
    opt_bool(tool, "strict", f"{where}.strict")  # Ollama cannot enforce it on free calls; accepted
    function: dict[str, object] = {"name": prefix + name}
    if description:
        function["description"] = description
    function["parameters"] = parameters if parameters else {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def _tools(body: Mapping[str, object], hosted_tools: str, left_out: list[str],
           namespaces: dict[str, tuple[str, str]]) -> list[dict[str, object]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise wrong_type("tools", "an array", tools)
    native: list[dict[str, object]] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise wrong_type(where, "an object", tool)
        kind = tool.get("type")
        if kind == "function":
            native.append(_function_tool(tool, where))
        elif kind == "namespace":
            space = require_str(tool, "name", f"{where}.name")
            members = tool.get("tools")
            if not isinstance(members, list):
                raise wrong_type(f"{where}.tools", "an array", members)
            for j, member in enumerate(members):
                if not isinstance(member, Mapping) or member.get("type") != "function":
                    raise _unsupported(f"{where}.tools[{j}].type", "Namespace members must be function tools here.")
                entry = _function_tool(member, f"{where}.tools[{j}]", f"{space}.")
                full = entry["function"]["name"]  # type: ignore[index]
                namespaces[full] = (space, full[len(space) + 1:])
                native.append(entry)
        elif isinstance(kind, str) and kind in HOSTED_TOOLS:
            if hosted_tools == "refuse":
                raise _unsupported(f"{where}.type", f"The hosted tool {kind!r} is not available with Ollama backends.")
            if kind not in left_out:
                left_out.append(kind)
        else:
            raise _unsupported(f"{where}.type", f"Unsupported tool type {kind!r}: use function or namespace tools.")
    return native


def _tool_choice(choice: object, tools: list[dict[str, object]]) -> tuple[list[dict[str, object]], ForcedTool | None]:
    """The tools Ollama sees and the forced call, if ``tool_choice`` forces one."""
    if choice in (None, "auto"):
        return tools, None
    if choice == "none":
        return [], None  # OpenAI: no tool calls; Ollama cannot be told, so it does not see the tools
    if choice == "required":
        return [], forced_tool(tools, param="tool_choice")
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind == "function":
        name = require_str(choice, "name", "tool_choice.name")  # type: ignore[arg-type]
        return [], forced_tool(tools, name, param="tool_choice.name")
    if kind == "allowed_tools":
        mode = choice.get("mode")  # type: ignore[union-attr]
        if mode not in ("auto", "required"):
            raise InvalidRequestError(f"Invalid value for 'tool_choice.mode': {mode!r}. Supported: auto, required.",
                                      param="tool_choice.mode")
        listed = choice.get("tools")  # type: ignore[union-attr]
        if not isinstance(listed, list):
            raise wrong_type("tool_choice.tools", "an array", listed)
        names = {ref.get("name") for ref in listed if isinstance(ref, Mapping)}
        kept = [t for t in tools if t["function"]["name"] in names]  # type: ignore[index]
        return ([], forced_tool(kept, param="tool_choice.tools")) if mode == "required" else (kept, None)
    raise _unsupported("tool_choice", f"Unsupported 'tool_choice': {choice!r}. Supported: none, auto, required, "
                                      '{"type": "function", "name": ...} and {"type": "allowed_tools", ...}.')


# text, reasoning, sampling


def _text(body: Mapping[str, object], native: dict[str, object]) -> dict[str, object]:
    """Apply ``text.format``; return the ``text`` object the response echoes."""
    text = body.get("text")
    if text is None:
        return {"format": {"type": "text"}, "verbosity": "medium"}
    if not isinstance(text, Mapping):
        raise wrong_type("text", "an object", text)
    for key, value in text.items():
        if key not in ("format", "verbosity") and value is not None:
            raise _unsupported(f"text.{key}", f"Unsupported parameter: 'text.{key}'.")
    verbosity = opt_str(text, "verbosity", "text.verbosity")
    if verbosity not in (None, "low", "medium", "high"):
        raise InvalidRequestError(f"Invalid value for 'text.verbosity': {verbosity!r}. Supported: low, medium, "
                                  "high.", param="text.verbosity")
    fmt = text.get("format")
    if fmt is None:
        fmt = {"type": "text"}
    if not isinstance(fmt, Mapping):
        raise wrong_type("text.format", "an object", fmt)
    kind = fmt.get("type")
    if kind == "json_object":
        native["format"] = "json"
    elif kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, Mapping):
            raise InvalidRequestError("Missing required parameter: 'text.format.schema'.",
                                      param="text.format.schema", code="missing_field")
        opt_str(fmt, "name", "text.format.name")
        opt_bool(fmt, "strict", "text.format.strict")
        native["format"] = schema
    elif kind != "text":
        raise InvalidRequestError(f"Invalid value for 'text.format.type': {kind!r}. Supported: text, "
                                  "json_object, json_schema.", param="text.format.type")
    return {"format": dict(fmt), "verbosity": verbosity or "medium"}


def _reasoning(body: Mapping[str, object], native: dict[str, object]) -> dict[str, object]:
    """Apply ``reasoning.effort`` as ``think``; return the ``reasoning`` object the response echoes."""
    reasoning = body.get("reasoning")
    if reasoning is None:
        return {"effort": None, "summary": None}
    if not isinstance(reasoning, Mapping):
        raise wrong_type("reasoning", "an object", reasoning)
    for key, value in reasoning.items():
        if key not in ("effort", "summary", "generate_summary") and value is not None:
            raise _unsupported(f"reasoning.{key}", f"Unsupported parameter: 'reasoning.{key}'.")
    effort = reasoning.get("effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in EFFORT_TO_THINK:
            raise InvalidRequestError(f"Invalid value for 'reasoning.effort': {effort!r}. Supported: none, minimal, "
                                      "low, medium, high, xhigh, max.", param="reasoning.effort")
        native["think"] = EFFORT_TO_THINK[effort]
    summary = None
    for key in ("summary", "generate_summary"):
        value = reasoning.get(key)
        if value not in (None, "auto", "concise", "detailed"):
            raise InvalidRequestError(f"Invalid value for 'reasoning.{key}': {value!r}. Supported: auto, concise, "
                                      "detailed.", param=f"reasoning.{key}")
        summary = summary or value
    return {"effort": effort, "summary": summary}


def _options(body: Mapping[str, object]) -> dict[str, object]:
    options: dict[str, object] = {}
    max_tokens = opt_int(body, "max_output_tokens", 1, MAX_TOKENS_LIMIT)
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    for key, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = opt_number(body, key, lo, hi)
        if value is not None:
            options[key] = value
    return options


def responses_request_to_ollama(
    body: Mapping[str, object],
    *,
    model: str,
    default_options: Mapping[str, object] = {},
    default_keep_alive: str | int | float | None = None,
    prior_items: Sequence[Mapping[str, object]] = (),
    hosted_tools: Literal["ignore", "refuse"] = "ignore",
) -> ResponsesRequest:
    """Translate a Responses request into an ``/api/chat`` body for ``model`` (see the module docstring)."""
    _check_fields(body)
    left_out: list[str] = []
    conversation = _Conversation(hosted_tools, left_out)
    instructions = opt_str(body, "instructions")
    if instructions:
        conversation.messages.append({"role": "system", "content": instructions})
    for i, item in enumerate(prior_items):
        conversation.add(item, f"previous_response_id[{i}]")
    items = _input_items(body)
    for i, item in enumerate(items):
        conversation.add(item, f"input[{i}]")
    if not any(m["role"] != "system" for m in conversation.messages):
        raise InvalidRequestError("Missing required parameter: 'input'.", param="input", code="missing_field")

    stream = opt_bool(body, "stream") or False
    native: dict[str, object] = {"model": model, "messages": conversation.messages, "stream": stream}
    namespaces: dict[str, tuple[str, str]] = {}
    tools = _tools(body, hosted_tools, left_out, namespaces)
    choice = body.get("tool_choice")
    sent_tools, forced = _tool_choice(choice, tools)
    if sent_tools:
        native["tools"] = sent_tools
    text = _text(body, native)
    reasoning = _reasoning(body, native)
    if forced is not None:
        # the tool's schema constrains the answer and replaces any text.format
        native["format"] = forced.format
        native["messages"] = with_instruction(conversation.messages, forced.instruction)
    include = body.get("include") or []
    top_logprobs = opt_int(body, "top_logprobs", 0, 20)
    logprobs = "message.output_text.logprobs" in include or bool(top_logprobs)  # type: ignore[operator]
    if logprobs:
        native["logprobs"] = True
        if top_logprobs:
            native["top_logprobs"] = top_logprobs
    truncation = body.get("truncation")
    if truncation not in (None, "auto", "disabled"):
        raise InvalidRequestError(f"Invalid value for 'truncation': {truncation!r}. Supported: auto, disabled.",
                                  param="truncation")
    if truncation == "disabled":
        native["truncate"] = False
    parallel = opt_bool(body, "parallel_tool_calls")
    ollama_extras(body, native, _options(body), default_options=default_options,
                  default_keep_alive=default_keep_alive)
    echo = {
        "background": False,
        "instructions": instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "parallel_tool_calls": parallel is not False,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": reasoning,
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": body.get("store") is not False,
        "temperature": body.get("temperature"),
        "text": text,
        "tool_choice": choice if choice is not None else "auto",
        "tools": list(body.get("tools") or []),  # type: ignore[call-overload]
        "top_logprobs": top_logprobs or 0,
        "top_p": body.get("top_p"),
        "truncation": truncation or "auto",
        "user": body.get("user"),
        "metadata": dict(body.get("metadata") or {}),  # type: ignore[call-overload]
    }
    return ResponsesRequest(
        native=native, left_out=tuple(left_out), forced=forced, parallel_tool_calls=parallel is not False,
        summary_reasoning=reasoning["summary"] is not None,
        encrypted_reasoning="reasoning.encrypted_content" in include,  # type: ignore[operator]
        logprobs=logprobs, namespaces=namespaces, echo=echo, input_items=items, prior_items=tuple(prior_items),
    )


# answer


def response_usage(native: Mapping[str, object]) -> dict[str, object]:
    """Ollama's counts as Responses ``usage`` (Ollama reports no cached or reasoning counts apart)."""
    prompt = native.get("prompt_eval_count") or 0
    completion = native.get("eval_count") or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion}  # type: ignore[operator]


def reasoning_item(item_id: str, text: str, request: ResponsesRequest) -> dict[str, object]:
    """A reasoning output item: the thinking as content, or as the summary when one was asked for."""
    item: dict[str, object] = {"id": item_id, "type": "reasoning"}
    if request.summary_reasoning:
        item["summary"] = [{"type": "summary_text", "text": text}]
    else:
        item["summary"] = []
        item["content"] = [{"type": "reasoning_text", "text": text}]
    if request.encrypted_reasoning:
        item["encrypted_content"] = text
    return item


def message_item(item_id: str, text: str, status: str, logprobs: list[object] | None = None) -> dict[str, object]:
    """An assistant message output item with one ``output_text`` part."""
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}]}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str,
                       request: ResponsesRequest) -> dict[str, object]:
    """A function_call output item; a namespace member's name is split back into name and namespace."""
    item: dict[str, object] = {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
                               "name": name, "arguments": arguments}
    if name in request.namespaces:
        item["namespace"], item["name"] = request.namespaces[name]
    return item


def native_calls(calls: object, new_id: Callable[[str], str]) -> list[tuple[str, str, str]]:
    """Ollama tool calls as (call_id, name, arguments JSON string); Ollama's own ``call_`` ids are kept."""
    out = []
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            continue
        call_id = call.get("id")  # type: ignore[union-attr]
        args = function.get("arguments", {})
        # Ollama gives arguments as a mapping; OpenAI serialises them to a JSON string
        out.append((call_id if isinstance(call_id, str) and call_id else new_id("call_"), str(function.get("name", "")),
                    args if isinstance(args, str) else dumps(args).decode()))
    return out


def response_object(
    *,
    request: ResponsesRequest,
    response_id: str,
    created_at: int | float,
    model: str,
    status: str,
    output: list[dict[str, object]],
    usage: Mapping[str, object] | None = None,
    error: Mapping[str, object] | None = None,
    completed_at: int | float | None = None,
) -> dict[str, object]:
    """The ``response`` object in OpenAI's field order, with the request's settings echoed."""
    echo = request.echo
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": echo.get("background", False),
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "max_tool_calls": echo.get("max_tool_calls"),
        "model": model,
        "output": output,
        "parallel_tool_calls": echo.get("parallel_tool_calls", True),
        "previous_response_id": echo.get("previous_response_id"),
        "prompt_cache_key": echo.get("prompt_cache_key"),
        "reasoning": echo.get("reasoning", {"effort": None, "summary": None}),
        "safety_identifier": echo.get("safety_identifier"),
        "service_tier": echo.get("service_tier", "default"),
        "store": echo.get("store", True),
        "temperature": echo.get("temperature"),
        "text": echo.get("text", {"format": {"type": "text"}, "verbosity": "medium"}),
        "tool_choice": echo.get("tool_choice", "auto"),
        "tools": echo.get("tools", []),
        "top_logprobs": echo.get("top_logprobs", 0),
        "top_p": echo.get("top_p"),
        "truncation": echo.get("truncation", "auto"),
        "usage": usage,
        "user": echo.get("user"),
        "metadata": echo.get("metadata", {}),
    }


def ollama_chat_to_response(
    native: Mapping[str, object],
    *,
    request: ResponsesRequest,
    response_id: str,
    created_at: int | float,
    model: str,
    new_id: Callable[[str], str],
    completed_at: int | float | None = None,
) -> dict[str, object]:
    """A non-streamed ``/api/chat`` answer as a Responses ``response`` for the client's ``model``."""
    message = native.get("message")
    if not isinstance(message, Mapping):
        message = {}
    status = "incomplete" if native.get("done_reason") == "length" else "completed"
    output: list[dict[str, object]] = []
    thinking = message.get("thinking")
    if isinstance(thinking, str) and thinking:
        output.append(reasoning_item(new_id("rs_"), thinking, request))
    content = message.get("content")
    content = content if isinstance(content, str) else ""
    converted = native_calls(message.get("tool_calls"), new_id)
    if request.forced is not None and not converted:
        call = request.forced.call_of(content)
        output.append(function_call_item(new_id("fc_"), new_id("call_"), call.name, call.arguments,
                                         "completed" if call.complete else "incomplete", request))
    else:
        if content or not converted:
            lp = logprobs_to_openai(native.get("logprobs")) if request.logprobs else None
            rows = lp["content"] if lp else None
            output.append(message_item(new_id("msg_"), content, status, rows))  # type: ignore[arg-type]
        if converted and not request.parallel_tool_calls:
            converted = converted[:1]  # the client asked for at most one call per turn
        for call_id, name, arguments in converted:
            output.append(function_call_item(new_id("fc_"), call_id, name, arguments, "completed", request))
    return response_object(request=request, response_id=response_id, created_at=created_at, model=model,
                           status=status, output=output, usage=response_usage(native),
                           completed_at=completed_at)


def conversation_items(request: ResponsesRequest, response: Mapping[str, object]) -> list[Mapping[str, object]]:
    """What a later ``previous_response_id`` continues from: prior items, this input, this output."""
    output = response.get("output")
    return [*request.prior_items, *request.input_items, *(output if isinstance(output, list) else ())]
