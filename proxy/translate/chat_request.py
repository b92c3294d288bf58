"""OpenAI chat completions -> Ollama ``/api/chat``: the request.

Pure. Where Ollama's own /v1 layer differs from OpenAI we follow OpenAI, because our clients are
OpenAI SDKs (see ../shared/reference/ollama-openai-mapping.md section 9). This module owns the
request as a whole (``response_format``, ``reasoning_effort``, logprobs, sampling options);
``proxy.translate.chat_conversation`` translates its ``messages``, ``proxy.translate.chat_tools`` its
``tools`` and ``tool_choice``. The answer is ``proxy.translate.chat_answer`` (streamed:
``proxy.translate.stream``).
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.errors import InvalidRequestError
from proxy.translate.chat_conversation import ollama_messages
from proxy.translate.chat_tools import tool_choice
from proxy.translate.fields import (
    check_n,
    check_openai_only_fields,
    ollama_extras,
    opt_bool,
    opt_int,
    sampling_options,
    wrong_type,
)
from proxy.translate.tools import with_instruction

__all__ = ["EFFORT_TO_THINK", "chat_request_to_ollama"]

# OpenAI's reasoning efforts as Ollama ``think`` values (booleans or low, medium, high, max), as
# Ollama's own /v1 maps them: "none" turns thinking off; "minimal" has no level of its own, so it is
# the lowest that still thinks; "xhigh" and "max" are Ollama's "max" (gpt-oss treats it as "high").
EFFORT_TO_THINK: Mapping[str, bool | str] = {
    "none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
    "xhigh": "max", "max": "max",
}


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
    native: dict[str, object] = {"model": model, "messages": ollama_messages(body.get("messages")), "stream": stream}
    tools, forced = tool_choice(body)
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
