"""Anthropic Messages answers: an Ollama ``/api/chat`` answer -> a ``message`` object, and what the stream shares.

Pure; ids come in as arguments. ``proxy.translate.anthropic_request`` documents the whole API; this
module owns the answer's shape, which ``proxy.translate.anthropic_stream`` sends as SSE events
(``proxy.translate.anthropic_errors`` has the error shape).

- ``ollama_chat_to_anthropic(native, *, message_id, model, plan)``: a non-streamed answer. Content
  is ``[thinking (signature ""), text, tool_use...]``; tool ids are ``toolu_<message id>_<n>``
  (``tool_use_id``).
- ``AnswerPlan``: what the answer translators must know about the request (``answer_plan_of`` in
  ``proxy.translate.anthropic_request`` makes it).
- ``stop_reason``, ``anthropic_usage``; shared with the stream: ``count_of`` (a count in a native
  answer), ``call_functions`` and ``call_arguments`` (its tool calls), ``anthropic_event`` (one SSE
  event with its ``event:`` line).

``stop_reason``: ``max_tokens`` when Ollama says ``length`` (it wins), ``tool_use`` with calls,
else ``end_turn``. ``stop_sequence`` is never reported: Ollama gives the same ``done_reason:
"stop"`` for an end of turn and a matched stop sequence, and cuts the sequence from the text, so
the two cannot be told apart. Usage: ``input_tokens`` = ``prompt_eval_count``, ``output_tokens`` =
``eval_count``, cache counts 0. A forced call whose JSON was cut short comes back as a text block
when whole; streamed, its input was already sent as a ``tool_use`` block, which it stays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.jsonio import JSONDecodeError, dumps, loads
from proxy.translate.tools import ForcedTool

__all__ = [
    "AnswerPlan",
    "ollama_chat_to_anthropic",
    "stop_reason",
    "anthropic_usage",
    "tool_use_id",
    "count_of",
    "call_arguments",
    "call_functions",
    "anthropic_event",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerPlan:
    """What the answer translators must know about the request."""

    forced: ForcedTool | None = None  # tool_choice any/tool: the content is that tool's input
    single_tool_use: bool = False  # tool_choice.disable_parallel_tool_use
    show_thinking: bool = True  # thinking.display != "omitted"


def tool_use_id(message_id: str, n: int) -> str:
    """The id of the ``n``-th tool_use block of a message: unique when message ids are."""
    return f"toolu_{message_id.removeprefix('msg_')}_{n}"


def stop_reason(done_reason: object, had_tool_use: bool) -> str:
    """Anthropic's stop_reason: ``max_tokens`` wins, tool calls give ``tool_use``, else ``end_turn``."""
    if done_reason == "length":
        return "max_tokens"
    return "tool_use" if had_tool_use else "end_turn"


def count_of(native: Mapping[str, object], key: str) -> int:
    """A count in a native answer (``prompt_eval_count``, ``eval_count``): the value if an int, else 0."""
    value = native.get(key)
    return value if isinstance(value, int) else 0


def anthropic_usage(native: Mapping[str, object]) -> dict[str, int]:
    """The answer's ``usage``: Ollama's counts, no cache counts."""
    return {"input_tokens": count_of(native, "prompt_eval_count"), "output_tokens": count_of(native, "eval_count"),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def call_arguments(function: Mapping[str, object]) -> Mapping[str, object]:
    """A native tool call's arguments as a mapping (``{}`` when they are not one)."""
    args = function.get("arguments", {})
    if isinstance(args, str):  # Ollama sends a mapping; tolerate an OpenAI-style JSON string
        try:
            args = loads(args) if args.strip() else {}
        except JSONDecodeError:
            args = {}
    return args if isinstance(args, Mapping) else {}


def call_functions(calls: object) -> list[Mapping[str, object]]:
    """The ``function`` of each native tool call (a call without one is left out)."""
    items = calls if isinstance(calls, list) else []
    return [c["function"] for c in items if isinstance(c, Mapping) and isinstance(c.get("function"), Mapping)]


def ollama_chat_to_anthropic(
    native: Mapping[str, object],
    *,
    message_id: str,
    model: str,
    plan: AnswerPlan = AnswerPlan(),
) -> dict[str, object]:
    """A non-streamed ``/api/chat`` answer as an Anthropic ``message`` for the client's ``model``."""
    message = native.get("message")
    if not isinstance(message, Mapping):
        message = {}
    content: list[dict[str, object]] = []
    thinking = message.get("thinking")
    if isinstance(thinking, str) and thinking:
        content.append({"type": "thinking", "thinking": thinking if plan.show_thinking else "", "signature": ""})
    text = message.get("content")
    text = text if isinstance(text, str) else ""
    uses: list[dict[str, object]] = []
    if plan.forced is not None:
        call = plan.forced.call_of(text) if text.strip() else None
        if call is not None and call.complete:
            uses.append({"type": "tool_use", "id": tool_use_id(message_id, 0), "name": call.name,
                         "input": loads(call.arguments)})
        elif text:
            content.append({"type": "text", "text": text})  # cut short: not a whole tool input
    else:
        if text:
            content.append({"type": "text", "text": text})
        for function in call_functions(message.get("tool_calls")):
            uses.append({"type": "tool_use", "id": tool_use_id(message_id, len(uses)),
                         "name": str(function.get("name", "")), "input": call_arguments(function)})
        if plan.single_tool_use:
            uses = uses[:1]
    content.extend(uses)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(native.get("done_reason"), bool(uses)),
        "stop_sequence": None,
        "usage": anthropic_usage(native),
    }


def anthropic_event(kind: str, payload: Mapping[str, object]) -> bytes:
    """One SSE event: its ``event:`` line, then the payload as ``data:``."""
    return b"event: " + kind.encode() + b"\ndata: " + dumps(payload) + b"\n\n"
