"""Anthropic Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``) -> Ollama ``/api/chat``.

Pure: plain values in and out, ids passed in; no aiohttp, yaml or environment. This module owns
the request side and is the public surface of both; the answers (whole and streamed) and the error
shape live in ``proxy.translate.anthropic_stream`` and are re-exported here. How the shell uses it::

    req = messages_request_to_ollama(body, model=target_model, max_tokens_cap=route_cap,
                                     default_options=..., default_keep_alive=...,
                                     thinking_capable=caps)      # raises InvalidRequestError
    req.native, req.stream
    req.sticky_key    # metadata.user_id, for sticky routing (None when absent); user_of(body) gives it
                      # before translation, answer_plan_of(body) the plan, for an endpoint table
    req.dropped       # tools / MCP servers left out, e.g. ("web_search (web_search_20250305)",): log them
    message_id = new_id("msg_")
    ollama_chat_to_anthropic(answer, message_id=message_id, model=body["model"], plan=req.plan)
    MessagesStream(message_id=message_id, model=body["model"], plan=req.plan,
                   input_tokens=count_tokens_estimate(body)["input_tokens"])   # or 0; relay as ChatStream
    anthropic_error_event(exc)                 # instead of the OpenAI error event, once committed
    render_anthropic_error(exc) -> (status, body, headers)   # every error on these two routes
    count_tokens_estimate(body) -> {"input_tokens": N}      # the count_tokens answer

The shell also accepts ``x-api-key`` (the SDK's auth header) besides ``Authorization: Bearer``
(Claude Code with ``ANTHROPIC_AUTH_TOKEN``), and ignores ``anthropic-version``, ``anthropic-beta``
and the ``?beta=true`` query Claude Code adds.

Request decisions (Anthropic -> Ollama):

- ``system`` (a string or text blocks; ``cache_control`` ignored) -> a leading system message;
  text blocks are joined with newlines, as on chat completions. ``role: "system"`` messages too.
- Content blocks: ``text``; ``image`` with a base64 source -> ``images`` (a ``url`` source is a
  400: nothing is fetched here; a shell that fetches images may rewrite it to base64 first);
  ``document`` with a plain-text source -> text (PDFs: 400); ``tool_use`` -> ``tool_calls``, the
  ``input`` mapping as ``arguments``; ``tool_result`` -> a ``tool`` message at its place in the turn
  (``tool_call_id``, ``tool_name`` from the call, images kept; ``is_error`` prefixes ``"Error: "``,
  Ollama having no such flag); ``thinking`` -> the assistant message's ``thinking`` (the model's
  template decides what to render); ``redacted_thinking`` is dropped (only Claude can read it).
- ``tools``: custom tools -> Ollama functions (``input_schema`` as ``parameters``; ``cache_control``,
  ``strict``, ``input_examples``, ``eager_input_streaming`` ignored; ``defer_loading`` tools are
  shown at once, tool search being an Anthropic-side tool). Anthropic-defined
  tools (any other ``type``: ``web_search_*``, ``bash_*``, ``text_editor_*``, ``computer_*``, ...)
  and ``mcp_servers`` cannot run on Ollama: left out and listed in ``dropped``, or a 400 with
  ``refuse_server_tools``.
- ``tool_choice``: ``auto`` -> tools as given; ``none`` -> no tools sent; ``any`` / ``tool`` ->
  forced with ``proxy.translate.tools`` (no tools, a schema ``format``, an instruction; the content
  comes back as a ``tool_use`` block). ``disable_parallel_tool_use`` keeps the first call only.
- ``thinking``: ``disabled`` -> ``think: false``; ``enabled`` -> a level from ``budget_tokens``
  (<= 4096 low, <= 16384 medium, else high: Ollama has no budget, only levels); ``adaptive`` ->
  unset (the model's default); ``between_tools`` -> true. ``output_config.effort`` gives the level
  (xhigh and max are Ollama's max, as on chat completions) unless thinking is disabled.
  ``display: "omitted"`` returns empty thinking blocks. With ``thinking_capable=False`` any
  enabling is dropped (as Ollama's own Anthropic layer does) rather than have Ollama answer 400
  "does not support thinking".
- ``output_config.format`` (json_schema) -> ``format``.
- ``max_tokens`` (required) -> ``options.num_predict``, lowered to ``max_tokens_cap`` (and to 2**20
  without one), never refused for being large. ``stop_sequences`` -> ``options.stop``;
  ``temperature``, ``top_p``, ``top_k`` -> options. Only what the client sent is set; route
  ``default_options`` fill the rest. The Ollama extensions ``options`` and ``keep_alive`` are
  accepted, as on chat completions.
- ``context_management``: ``clear_thinking_*`` edits are applied (thinking kept on the last N
  assistant turns with thinking, or all); any other edit would change the prompt in a way not
  reproduced here: 400.
- Accepted and ignored, as they do not change the answer on Ollama: ``metadata`` (but its
  ``user_id`` is the sticky key), ``service_tier``, ``container``, ``cache_control``, ``speed``,
  ``inference_geo``, ``diagnostics``, ``user_profile_id``, ``workspace_id``, and the beta
  ``billing_policy``, ``fallbacks`` (retries after a policy refusal, which Ollama never gives) and
  ``fallback_credit_token``. Any other field is a 400 naming it, among them the beta ``compaction``
  (a summarising request) and ``thread`` (server-held conversation state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from proxy.errors import InvalidRequestError
from proxy.jsonio import dumps
from proxy.translate.anthropic_stream import (
    AnswerPlan,
    AnthropicStreamTally,
    MessagesStream,
    anthropic_error_body,
    anthropic_error_event,
    anthropic_error_type,
    ollama_chat_to_anthropic,
    render_anthropic_error,
)
from proxy.translate.chat import EFFORT_TO_THINK
from proxy.translate.fields import (
    MAX_TOKENS_LIMIT,
    SEED_MAX,
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
    "MAX_MESSAGES",
    "IMAGE_TOKENS",
    "AnswerPlan",
    "AnthropicStreamTally",
    "MessagesRequest",
    "MessagesStream",
    "messages_request_to_ollama",
    "user_of",
    "answer_plan_of",
    "ollama_chat_to_anthropic",
    "count_tokens_estimate",
    "anthropic_error_type",
    "anthropic_error_body",
    "anthropic_error_event",
    "render_anthropic_error",
]

MAX_MESSAGES = 100_000  # Anthropic's own limit
IMAGE_TOKENS = 1600  # count_tokens: Anthropic's cost of a full-size image (about w*h/750, capped)

_FIELDS = frozenset({
    "model", "max_tokens", "messages", "system", "stream", "temperature", "top_p", "top_k",
    "stop_sequences", "tools", "tool_choice", "thinking", "metadata", "output_config",
    "context_management", "mcp_servers", "options", "keep_alive",
})
_IGNORED = frozenset({
    "service_tier", "container", "cache_control", "speed", "inference_geo", "diagnostics",
    "user_profile_id", "workspace_id", "billing_policy", "fallbacks", "fallback_credit_token",
})
_EFFORTS = ("low", "medium", "high", "xhigh", "max")  # Anthropic's; Ollama levels as on chat completions
_THINKING_TYPES = frozenset({"enabled", "disabled", "adaptive", "between_tools"})
_CHOICES = frozenset({"auto", "any", "tool", "none"})


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagesRequest:
    """A translated Messages request: the ``/api/chat`` body and what the shell needs besides."""

    native: dict[str, object]
    stream: bool
    sticky_key: str | None
    dropped: tuple[str, ...]
    plan: AnswerPlan = field(default_factory=AnswerPlan)


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


def _tools(body: Mapping[str, object], refuse: bool) -> tuple[list[Mapping[str, object]], list[str]]:
    """The custom tools (Anthropic shape, checked) and the names of those that cannot run here."""
    tools = body.get("tools")
    custom: list[Mapping[str, object]] = []
    dropped: list[str] = []
    seen: set[str] = set()
    if tools is not None and not isinstance(tools, list):
        raise wrong_type("tools", "an array", tools)
    for i, tool in enumerate(tools or []):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise wrong_type(where, "an object", tool)
        kind = tool.get("type")
        name = require_str(tool, "name", f"{where}.name")
        if name in seen:
            raise InvalidRequestError(f"Tool names must be unique: {name!r} is given twice.", param=f"{where}.name")
        seen.add(name)
        if kind not in (None, "custom"):
            if refuse:
                raise _unsupported(f"Tool {name!r} of type {kind!r} runs on Anthropic's servers; this gateway's "
                                   "Ollama backends cannot run it.", f"{where}.type")
            dropped.append(f"{name} ({kind})")
            continue
        schema = tool.get("input_schema")
        if not isinstance(schema, Mapping):
            raise wrong_type(f"{where}.input_schema", "an object", schema)
        opt_str(tool, "description", f"{where}.description")
        custom.append(tool)
    servers = body.get("mcp_servers")
    if servers is not None and not isinstance(servers, list):
        raise wrong_type("mcp_servers", "an array", servers)
    for i, server in enumerate(servers or []):
        label = server.get("name") if isinstance(server, Mapping) else None
        if refuse:
            raise _unsupported("MCP servers are called by Anthropic's servers; this gateway's Ollama backends "
                               "cannot call them.", f"mcp_servers[{i}]")
        dropped.append(f"{label or i} (mcp_server)")
    return custom, dropped


def _ollama_tool(tool: Mapping[str, object]) -> dict[str, object]:
    function: dict[str, object] = {"name": tool["name"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool["input_schema"]
    return {"type": "function", "function": function}


def _tool_choice(body: Mapping[str, object]) -> tuple[str, str | None, bool]:
    choice = body.get("tool_choice")
    if choice is None:
        return "auto", None, False
    if not isinstance(choice, Mapping):
        raise wrong_type("tool_choice", "an object", choice)
    kind = choice.get("type")
    if kind not in _CHOICES:
        raise InvalidRequestError(f"Invalid value for 'tool_choice.type': {kind!r}. Supported: auto, any, tool, none.",
                                  param="tool_choice.type")
    single = opt_bool(choice, "disable_parallel_tool_use", "tool_choice.disable_parallel_tool_use") or False
    name = require_str(choice, "name", "tool_choice.name") if kind == "tool" else None
    return str(kind), name, single


def _think(body: Mapping[str, object], effort: str | None,
           thinking_capable: bool | None) -> tuple[bool | str | None, bool]:
    """Ollama ``think`` and whether thinking text is shown."""
    config = body.get("thinking")
    mode: object = None
    show = True
    budget = None
    if config is not None:
        if not isinstance(config, Mapping):
            raise wrong_type("thinking", "an object", config)
        mode = config.get("type")
        if mode not in _THINKING_TYPES:
            raise InvalidRequestError(f"Invalid value for 'thinking.type': {mode!r}. Supported: enabled, disabled, "
                                      "adaptive.", param="thinking.type")
        if mode == "enabled":
            budget = opt_int(config, "budget_tokens", 0, param="thinking.budget_tokens")
            if budget is None:
                raise InvalidRequestError("Missing required parameter: 'thinking.budget_tokens'.",
                                          param="thinking.budget_tokens", code="missing_field")
        display = opt_str(config, "display", "thinking.display")
        if display not in (None, "summarized", "omitted"):
            raise InvalidRequestError(f"Invalid value for 'thinking.display': {display!r}.", param="thinking.display")
        show = display != "omitted"
    think: bool | str | None
    if mode == "disabled":
        think = False
    elif effort is not None:
        think = EFFORT_TO_THINK[effort]
    elif budget is not None:
        think = "low" if budget <= 4096 else "medium" if budget <= 16384 else "high"
    elif mode == "between_tools":
        think = True
    else:
        think = None  # adaptive, or not asked: the model's default
    if thinking_capable is False and think:
        think = None
    return think, show


def _output_config(body: Mapping[str, object], native: dict[str, object]) -> str | None:
    """Apply ``output_config.format``; return ``output_config.effort``."""
    config = body.get("output_config")
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise wrong_type("output_config", "an object", config)
    for key in config:
        if key not in ("effort", "format"):
            raise _unsupported(f"output_config.{key}: Extra inputs are not permitted.", f"output_config.{key}")
    effort = opt_str(config, "effort", "output_config.effort")
    if effort is not None and effort not in _EFFORTS:
        raise InvalidRequestError(f"Invalid value for 'output_config.effort': {effort!r}. Supported: low, medium, "
                                  "high, xhigh, max.", param="output_config.effort")
    fmt = config.get("format")
    if fmt is not None:
        if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
            raise InvalidRequestError("Invalid 'output_config.format': expected {\"type\": \"json_schema\", "
                                      "\"schema\": {...}}.", param="output_config.format")
        schema = fmt.get("schema")
        if not isinstance(schema, Mapping):
            raise wrong_type("output_config.format.schema", "an object", schema)
        native["format"] = schema
    return effort


def _options(body: Mapping[str, object], max_tokens_cap: int | None) -> dict[str, object]:
    max_tokens = opt_int(body, "max_tokens", 1)
    if max_tokens is None:
        raise InvalidRequestError("Missing required parameter: 'max_tokens'.", param="max_tokens",
                                  code="missing_field")
    # Anthropic requires max_tokens and clients send big ones (Claude Code: 32000): lowered, never refused
    cap = MAX_TOKENS_LIMIT if max_tokens_cap is None else min(max_tokens_cap, MAX_TOKENS_LIMIT)
    options: dict[str, object] = {"num_predict": min(max_tokens, cap)}
    for key in ("temperature", "top_p"):
        value = opt_number(body, key, 0.0, 1.0)
        if value is not None:
            options[key] = value
    top_k = opt_int(body, "top_k", 0, SEED_MAX)  # a Go int on Ollama's side
    if top_k is not None:
        options["top_k"] = top_k
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise wrong_type("stop_sequences", "an array of strings", stop)
        for i, sequence in enumerate(stop):
            if not sequence:
                raise InvalidRequestError("Stop sequences must not be empty.", param=f"stop_sequences[{i}]")
        if stop:
            options["stop"] = list(stop)
    return options


def user_of(body: Mapping[str, object]) -> str | None:
    """``metadata.user_id``, Anthropic's counterpart of OpenAI's ``user``: the sticky key, readable
    before the body is translated (routing is planned first). A wrong type is a 400."""
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise wrong_type("metadata", "an object", metadata)
    return opt_str(metadata, "user_id", "metadata.user_id") or None


def _forced(kind: str, name: str | None, custom: Sequence[Mapping[str, object]]) -> ForcedTool | None:
    if kind not in ("any", "tool"):
        return None
    return forced_tool(custom, name, param="tool_choice.name" if name else "tool_choice")


def answer_plan_of(body: Mapping[str, object]) -> AnswerPlan:
    """The answer plan of a body, for a caller that kept only ``native`` (e.g. an endpoint table's
    ``options(body)``); the same as ``messages_request_to_ollama(body, ...).plan``."""
    kind, name, single = _tool_choice(body)
    forced = _forced(kind, name, _tools(body, False)[0])
    return AnswerPlan(forced=forced, single_tool_use=single, show_thinking=_think(body, None, None)[1])


def messages_request_to_ollama(
    body: Mapping[str, object],
    *,
    model: str,
    max_tokens_cap: int | None = None,
    default_options: Mapping[str, object] = {},
    default_keep_alive: str | int | float | None = None,
    thinking_capable: bool | None = None,
    refuse_server_tools: bool = False,
) -> MessagesRequest:
    """Translate an Anthropic Messages request into an ``/api/chat`` body for ``model``.

    Raises ``InvalidRequestError`` naming the field for anything malformed or not honourable.
    ``thinking_capable`` is the model's thinking capability when the shell knows it (None: unknown).
    """
    for key in body:
        if key not in _FIELDS and key not in _IGNORED:
            raise _unsupported(f"{key}: Extra inputs are not permitted.", str(key))
    require_str(body, "model")
    stream = opt_bool(body, "stream") or False
    sticky_key = user_of(body)
    options = _options(body, max_tokens_cap)
    messages = _messages(body)
    kept = _thinking_turns_kept(body)
    if kept is not None:
        _clear_thinking(messages, kept)
    custom, dropped = _tools(body, refuse_server_tools)
    kind, name, single = _tool_choice(body)
    forced = _forced(kind, name, custom)
    native: dict[str, object] = {"model": model, "messages": messages, "stream": stream}
    effort = _output_config(body, native)
    if forced is not None:
        if "format" in native:
            raise InvalidRequestError("'output_config.format' cannot be combined with a forced tool_choice.",
                                      param="output_config.format")
        native["messages"] = with_instruction(messages, forced.instruction)
        native["format"] = forced.format
    elif kind == "auto" and custom:
        native["tools"] = [_ollama_tool(t) for t in custom]
    think, show = _think(body, effort, thinking_capable)
    if think is not None:
        native["think"] = think
    extras = {key: body[key] for key in ("options", "keep_alive") if key in body}
    ollama_extras(extras, native, options, default_options=default_options, default_keep_alive=default_keep_alive)
    return MessagesRequest(native=native, stream=stream, sticky_key=sticky_key, dropped=tuple(dropped),
                           plan=AnswerPlan(forced=forced, single_tool_use=single, show_thinking=show))


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
