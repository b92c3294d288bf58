"""Ollama ``/api/chat`` answers -> OpenAI Responses API ``response`` objects, and what is stored of them.

Pure: ids and times are passed in. The output-item builders here are shared with the stream translator
(``proxy.translate.responses_stream.ResponsesStream``).

- ``ollama_chat_to_response(native, *, request, response_id, created_at, model, new_id,
  completed_at=None) -> dict``: a non-streamed ``/api/chat`` answer as a ``response`` object.
  ``new_id(prefix)`` makes item ids (``msg_``, ``fc_``, ``rs_``, ``call_``); the shell passes
  ``proxy.ids.new_id``. ``model`` is the client's model name.
- ``conversation_items(request, response) -> list``: what to store under the response's id so a
  later ``previous_response_id`` can continue it (prior items, this input, this output).
- ``response_object``, ``reasoning_item``, ``message_item``, ``function_call_item``, ``native_calls``,
  ``response_usage``: the pieces of a response.

Mapping decisions:

- Ollama's thinking is the model's raw reasoning: it comes back as a reasoning item's ``content``
  (``reasoning_text``), or as its ``summary`` (``summary_text``) when the client asked for one
  (``reasoning.summary``), since clients that ask display summaries. With ``include:
  ["reasoning.encrypted_content"]`` it is also put, unencrypted, in ``encrypted_content``, so
  stateless clients (``store: false``) hand it back on the next turn.
- A forced call (``tool_choice``) comes back as one ``function_call``; a namespace member's name is
  split back into ``name`` and ``namespace``. ``parallel_tool_calls: false`` keeps the first call.
- ``status`` is ``incomplete`` (reason ``max_output_tokens``) when Ollama says ``length``.
- ``usage``: Ollama counts no cached or reasoning tokens apart, so both details are 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from proxy.jsonio import dumps
from proxy.translate.chat_tokens import logprobs_to_openai
from proxy.translate.responses_request import ResponsesRequest

__all__ = [
    "conversation_items",
    "function_call_item",
    "message_item",
    "native_calls",
    "ollama_chat_to_response",
    "reasoning_item",
    "response_object",
    "response_usage",
]


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
