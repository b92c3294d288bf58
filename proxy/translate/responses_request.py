"""OpenAI Responses API (``POST /v1/responses``) request -> an Ollama ``/api/chat`` body.

Pure: plain values in and out; the stored conversation is passed in. The Responses translators:
this module (the request), ``proxy.translate.responses_conversation`` (input items -> messages),
``proxy.translate.responses_tools`` (tools, tool_choice), ``proxy.translate.responses_answer`` (the
answer as a ``response`` object, what to store) and ``proxy.translate.responses_stream`` (the answer
streamed: ``ResponsesStream(request=, response_id=, created_at=, model=, new_id=, now=None)`` with
``feed(obj) -> bytes``, ``fail(exc) -> bytes`` and ``response``, the final response object for the
store; see its docstring).

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

Mapping decisions (where OpenAI and Ollama differ):

- ``reasoning.effort`` maps as for chat (``EFFORT_TO_THINK``): none -> false, minimal -> low, low,
  medium, high, and xhigh/max -> max. ``reasoning.summary`` and ``include:
  ["reasoning.encrypted_content"]`` decide how the thinking comes back (``responses_answer``).
- ``tool_choice`` forces calls as described in ``proxy.translate.responses_tools``; a forced tool's
  schema constrains the answer and replaces any ``text.format``.
- ``truncation: "disabled"`` (sent explicitly) is Ollama's ``truncate: false``: an input longer than
  the context is then an error instead of being cut. Otherwise Ollama drops the oldest messages to
  fit, which is what ``"auto"`` means, so that is what the response echoes.
- ``text.verbosity``, ``metadata``, ``user``, ``store``, ``prompt_cache_key``, ``safety_identifier``,
  ``service_tier``, ``client_metadata``, ``stream_options`` and ``max_tool_calls`` (hosted tools only)
  are accepted and echoed; they change nothing Ollama does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from proxy.errors import InvalidRequestError
from proxy.translate.chat_request import EFFORT_TO_THINK
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
from proxy.translate.responses_conversation import Conversation, input_items
from proxy.translate.responses_tools import ollama_tools, tool_choice
from proxy.translate.tools import ForcedTool, with_instruction

__all__ = ["ResponsesRequest", "responses_request_to_ollama"]

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
    conversation = Conversation(hosted_tools, left_out)
    instructions = opt_str(body, "instructions")
    if instructions:
        conversation.messages.append({"role": "system", "content": instructions})
    for i, item in enumerate(prior_items):
        conversation.add(item, f"previous_response_id[{i}]")
    items = input_items(body)
    for i, item in enumerate(items):
        conversation.add(item, f"input[{i}]")
    if not any(m["role"] != "system" for m in conversation.messages):
        raise InvalidRequestError("Missing required parameter: 'input'.", param="input", code="missing_field")

    stream = opt_bool(body, "stream") or False
    native: dict[str, object] = {"model": model, "messages": conversation.messages, "stream": stream}
    namespaces: dict[str, tuple[str, str]] = {}
    tools = ollama_tools(body, hosted_tools, left_out, namespaces)
    choice = body.get("tool_choice")
    sent_tools, forced = tool_choice(choice, tools)
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
