"""Ollama ``/api/chat`` answers -> OpenAI ``chat.completion`` objects.

Pure; ids and times come in as arguments, except tool call ids (``call_``, from ``proxy.ids.new_id``).
``ollama_chat_to_openai`` is the non-streamed answer; the tool calls (``tool_calls_to_openai``, a
forced call's ``forced_call_to_openai`` with ``forced_call_id``) and ``finish_reason`` are shared
with the stream translator (``proxy.translate.stream.ChatStream``); logprobs and usage are
``proxy.translate.chat_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.ids import new_id
from proxy.jsonio import dumps
from proxy.translate.chat_tokens import logprobs_to_openai, usage_from_ollama
from proxy.translate.tools import ForcedCall, ForcedTool

__all__ = [
    "ollama_chat_to_openai",
    "tool_calls_to_openai",
    "finish_reason",
    "forced_call_id",
    "forced_call_to_openai",
    "new_tool_call_id",
]


def new_tool_call_id() -> str:
    return new_id("call_")


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


def finish_reason(done_reason: object, had_tool_calls: bool) -> str:
    """OpenAI's finish_reason: ``length`` wins, tool calls give ``tool_calls``, else ``stop``."""
    if done_reason == "length":
        return "length"
    return "tool_calls" if had_tool_calls else "stop"


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
