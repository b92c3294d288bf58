"""OpenAI chat completions <-> Ollama ``/api/chat``: the request and the non-streamed answer.

Pure. Where Ollama's own /v1 layer differs from OpenAI we follow OpenAI, because our clients are
OpenAI SDKs (see ../shared/reference/ollama-openai-mapping.md section 9).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.errors import InvalidRequestError
from proxy.ids import new_id
from proxy.jsonio import JSONDecodeError, dumps, loads
from proxy.translate.fields import (
    check_n,
    check_openai_only_fields,
    ollama_extras,
    opt_bool,
    opt_int,
    opt_str,
    require_str,
    sampling_options,
    wrong_type,
)
from proxy.translate.images import data_url_to_base64
from proxy.translate.tools import ForcedCall, ForcedTool, forced_tool, with_instruction

__all__ = [
    "MAX_MESSAGES",
    "EFFORT_TO_THINK",
    "chat_request_to_ollama",
    "forced_tool_of",
    "ollama_chat_to_openai",
    "tool_calls_to_openai",
    "logprobs_to_openai",
    "finish_reason",
    "forced_call_id",
    "forced_call_to_openai",
    "usage_from_ollama",
    "new_tool_call_id",
]

MAX_MESSAGES = 2048
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
# OpenAI's reasoning efforts as Ollama ``think`` values (booleans or low, medium, high, max), as
# Ollama's own /v1 maps them: "none" turns thinking off; "minimal" has no level of its own, so it is
# the lowest that still thinks; "xhigh" and "max" are Ollama's "max" (gpt-oss treats it as "high").
EFFORT_TO_THINK: Mapping[str, bool | str] = {
    "none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
    "xhigh": "max", "max": "max",
}


def new_tool_call_id() -> str:
    return new_id("call_")


def _content(content: object, role: str, param: str, images: list[str]) -> str:
    """Flatten OpenAI content (a string or parts) to Ollama's string, collecting image payloads."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise wrong_type(param, "a string or an array of content parts", content)
    texts: list[str] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        if not isinstance(part, Mapping):
            raise wrong_type(where, "an object", part)
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
    for j, call in enumerate(calls):
        where = f"{param}[{j}]"
        if not isinstance(call, Mapping):
            raise wrong_type(where, "an object", call)
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


def _messages(messages: object) -> list[dict[str, object]]:
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
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise wrong_type(where, "an object", message)
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


def _function_tools(body: Mapping[str, object]) -> list[Mapping[str, object]] | None:
    """The validated ``tools`` list (None when absent)."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise wrong_type("tools", "an array", tools)
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            raise InvalidRequestError("Only tools of type 'function' are supported.", param=f"tools[{i}].type",
                                      code="unsupported_parameter")
        function = tool.get("function")
        if not isinstance(function, Mapping):
            raise wrong_type(f"tools[{i}].function", "an object", function)
        require_str(function, "name", f"tools[{i}].function.name")
    return tools


def _allowed(tools: list[Mapping[str, object]], allowed: object) -> tuple[list[Mapping[str, object]], str]:
    """``{"mode", "tools"}`` of an ``allowed_tools`` choice: the tools it keeps and its mode."""
    param = "tool_choice.allowed_tools"
    if not isinstance(allowed, Mapping):
        raise wrong_type(param, "an object", allowed)
    mode = allowed.get("mode")
    if mode not in ("auto", "required"):
        raise InvalidRequestError(f"Invalid value for '{param}.mode': {mode!r}. Supported: auto, required.",
                                  param=f"{param}.mode")
    listed = allowed.get("tools")
    if not isinstance(listed, list):
        raise wrong_type(f"{param}.tools", "an array", listed)
    names = set()
    for j, ref in enumerate(listed):
        function = ref.get("function") if isinstance(ref, Mapping) else None
        if not isinstance(function, Mapping):
            raise wrong_type(f"{param}.tools[{j}].function", "an object", function)
        names.add(require_str(function, "name", f"{param}.tools[{j}].function.name"))
    kept = [t for t in tools if t["function"]["name"] in names]  # type: ignore[index]
    return kept, str(mode)


def _tool_choice(body: Mapping[str, object]) -> tuple[list[Mapping[str, object]] | None, ForcedTool | None]:
    """The tools Ollama sees (None: none) and the forced call, if ``tool_choice`` forces one."""
    tools = _function_tools(body)
    choice = body.get("tool_choice")
    if tools is None:
        if choice not in (None, "none", "auto"):
            raise InvalidRequestError("'tool_choice' is set but no 'tools' were given.", param="tool_choice")
        return None, None
    if choice == "none" or not tools:
        return None, None  # OpenAI: the model must not call tools; Ollama cannot be told, so it does not see them.
    if choice in (None, "auto"):
        return tools, None
    if choice == "required":
        return None, forced_tool(tools, param="tool_choice")
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind == "function":
        function = choice.get("function")  # type: ignore[union-attr]
        if not isinstance(function, Mapping):
            raise wrong_type("tool_choice.function", "an object", function)
        name = require_str(function, "name", "tool_choice.function.name")
        return None, forced_tool(tools, name, param="tool_choice.function.name")
    if kind == "allowed_tools":
        kept, mode = _allowed(tools, choice.get("allowed_tools"))  # type: ignore[union-attr]
        if not kept:
            raise InvalidRequestError("'tool_choice.allowed_tools.tools' names none of the given tools.",
                                      param="tool_choice.allowed_tools.tools")
        return (None, forced_tool(kept, param="tool_choice")) if mode == "required" else (kept, None)
    raise InvalidRequestError(
        f"Invalid value for 'tool_choice': {choice!r}. Supported: none, auto, required, "
        '{"type": "function", "function": {"name": ...}} and {"type": "allowed_tools", ...}.',
        param="tool_choice",
    )


def forced_tool_of(body: Mapping[str, object]) -> ForcedTool | None:
    """The forced tool call a chat request asks for (``tool_choice`` required, named or allowed_tools required).

    Ollama cannot be told to call a tool, so a forced call is sent as a ``format`` constraining the
    answer to the tool's schema (see ``proxy.translate.tools``). The shell passes the result to
    ``ollama_chat_to_openai(..., forced=...)`` and ``ChatStream(..., forced=...)``, which turn the
    constrained content back into that tool's call.
    """
    return _tool_choice(body)[1]


def _format(body: Mapping[str, object], native: dict[str, object]) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    if not isinstance(fmt, Mapping):
        raise wrong_type("response_format", "an object", fmt)
    kind = fmt.get("type")
    if kind == "json_object":
        native["format"] = "json"
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise InvalidRequestError("Missing required parameter: 'response_format.json_schema.schema'.",
                                      param="response_format.json_schema.schema", code="missing_field")
        native["format"] = schema
    elif kind != "text":
        raise InvalidRequestError(f"Invalid value for 'response_format.type': {kind!r}.",
                                  param="response_format.type")


def _think(body: Mapping[str, object], native: dict[str, object]) -> None:
    effort, param = body.get("reasoning_effort"), "reasoning_effort"
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and reasoning.get("effort") is not None:
        effort, param = reasoning.get("effort"), "reasoning.effort"
    if effort is None:
        return
    if not isinstance(effort, str) or effort not in EFFORT_TO_THINK:
        raise InvalidRequestError(
            f"Invalid value for '{param}': {effort!r}. Supported: none, minimal, low, medium, high, xhigh, max.",
            param=param,
        )
    native["think"] = EFFORT_TO_THINK[effort]


def chat_request_to_ollama(
    body: Mapping[str, object],
    *,
    model: str,
    default_options: Mapping[str, object] = {},
    default_keep_alive: str | int | float | None = None,
) -> dict[str, object]:
    """Translate a validated-as-we-go OpenAI chat request into an ``/api/chat`` body for ``model``."""
    check_n(body)
    check_openai_only_fields(body)  # the answer-neutral ones checked and ignored, the others a 400
    stream = opt_bool(body, "stream") or False
    native: dict[str, object] = {"model": model, "messages": _messages(body.get("messages")), "stream": stream}
    tools, forced = _tool_choice(body)
    if tools:
        native["tools"] = tools
    _format(body, native)
    if forced is not None:
        # the tool's schema constrains the answer and replaces any response_format
        native["format"] = forced.format
        native["messages"] = with_instruction(native["messages"], forced.instruction)  # type: ignore[arg-type]
    _think(body, native)
    if opt_bool(body, "logprobs"):
        native["logprobs"] = True
        top = opt_int(body, "top_logprobs", 0, 20)
        if top:
            native["top_logprobs"] = top
    elif body.get("top_logprobs") is not None:
        raise InvalidRequestError("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, Mapping):
        raise wrong_type("stream_options", "an object", opts)
    opt_bool(body, "parallel_tool_calls")
    ollama_extras(body, native, sampling_options(body), default_options=default_options,
                  default_keep_alive=default_keep_alive)
    return native


def tool_calls_to_openai(calls: Sequence[Mapping[str, object]], start: int = 0) -> list[dict[str, object]]:
    """Ollama tool calls to OpenAI's: unique ``call_`` ids, arguments as a JSON string, an ``index``."""
    out = []
    for i, call in enumerate(calls):
        function = call.get("function")
        if not isinstance(function, Mapping):
            continue
        args = function.get("arguments", {})
        call_id = call.get("id")
        out.append({
            "index": start + i,
            "id": call_id if isinstance(call_id, str) and call_id else new_tool_call_id(),
            "type": "function",
            "function": {"name": function.get("name", ""),
                         "arguments": args if isinstance(args, str) else dumps(args).decode()},
        })
    return out


def logprobs_to_openai(items: object) -> dict[str, object] | None:
    """Ollama's per-token logprobs to OpenAI's ``{"content": [...]}`` (None when there are none)."""
    if not isinstance(items, list) or not items:
        return None

    def entry(item: Mapping[str, object]) -> dict[str, object]:
        token = item.get("token", "")
        raw = item.get("bytes")
        return {"token": token, "logprob": item.get("logprob", 0.0),
                "bytes": raw if isinstance(raw, list) else list(str(token).encode())}

    content = []
    for item in items:
        if isinstance(item, Mapping):
            row = entry(item)
            tops = item.get("top_logprobs")
            row["top_logprobs"] = [entry(t) for t in tops if isinstance(t, Mapping)] if isinstance(tops, list) else []
            content.append(row)
    return {"content": content, "refusal": None}


def finish_reason(done_reason: object, had_tool_calls: bool) -> str:
    """OpenAI's finish_reason: ``length`` wins, tool calls give ``tool_calls``, else ``stop``."""
    if done_reason == "length":
        return "length"
    return "tool_calls" if had_tool_calls else "stop"


def usage_from_ollama(native: Mapping[str, object]) -> dict[str, int]:
    prompt = native.get("prompt_eval_count") or 0
    completion = native.get("eval_count") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,  # type: ignore[dict-item]
            "total_tokens": prompt + completion}  # type: ignore[operator]


def forced_call_id(completion_id: str) -> str:
    """The id of a forced call: one per completion, so derived from its id (deterministic, unique)."""
    return "call_" + completion_id.removeprefix("chatcmpl-")


def forced_call_to_openai(call: ForcedCall, call_id: str, index: int | None = None) -> dict[str, object]:
    """A call read back from constrained content, as an OpenAI tool call."""
    out: dict[str, object] = {"id": call_id, "type": "function",
                              "function": {"name": call.name, "arguments": call.arguments}}
    return out if index is None else {"index": index, **out}


def ollama_chat_to_openai(
    native: Mapping[str, object],
    *,
    completion_id: str,
    created: int,
    model: str,
    parallel_tool_calls: bool = True,
    forced: ForcedTool | None = None,
) -> dict[str, object]:
    """A non-streamed ``/api/chat`` answer as an OpenAI ``chat.completion`` for the client's ``model``.

    With ``forced`` (from ``forced_tool_of(body)``) the answer's content is the constrained JSON and
    becomes that tool's call; the message then has no content.
    """
    message = native.get("message")
    if not isinstance(message, Mapping):
        message = {}
    content = message.get("content") or ""
    calls = message.get("tool_calls")
    tool_calls = tool_calls_to_openai(calls) if isinstance(calls, list) and calls else []
    if forced is not None and not tool_calls:
        tool_calls = [forced_call_to_openai(forced.call_of(str(content)), forced_call_id(completion_id), 0)]
        content = ""
    if tool_calls and not parallel_tool_calls:
        tool_calls = tool_calls[:1]  # the client asked for at most one call per turn
    out_message: dict[str, object] = {"role": "assistant", "content": content or (None if tool_calls else ""),
                                      "refusal": None}
    thinking = message.get("thinking")
    if thinking:
        out_message["reasoning_content"] = thinking
    if tool_calls:
        for call in tool_calls:
            del call["index"]
        out_message["tool_calls"] = tool_calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_ollama",
        "choices": [{
            "index": 0,
            "message": out_message,
            "logprobs": logprobs_to_openai(native.get("logprobs")),
            "finish_reason": finish_reason(native.get("done_reason"), bool(tool_calls)),
        }],
        "usage": usage_from_ollama(native),
    }
