"""Anthropic Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``): the request -> ``/api/chat``.

Pure: plain values in and out, ids passed in; no aiohttp, yaml or environment. This module owns
the request; ``proxy.translate.anthropic_conversation`` translates its ``system`` and ``messages``,
``proxy.translate.anthropic_tools`` its tools and ``tool_choice``. The whole answer lives in
``proxy.translate.anthropic_answer``, the streamed one in ``proxy.translate.anthropic_stream``, the
error shape in ``proxy.translate.anthropic_errors`` and the ``count_tokens`` estimate in
``proxy.translate.anthropic_token_count``. How the shell uses them::

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

- ``system``, ``messages`` (their content blocks) and ``context_management``: see
  ``proxy.translate.anthropic_conversation``; ``tools``, ``mcp_servers`` and ``tool_choice``: see
  ``proxy.translate.anthropic_tools``.
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
- Accepted and ignored, as they do not change the answer on Ollama: ``metadata`` (but its
  ``user_id`` is the sticky key), ``service_tier``, ``container``, ``cache_control``, ``speed``,
  ``inference_geo``, ``diagnostics``, ``user_profile_id``, ``workspace_id``, and the beta
  ``billing_policy``, ``fallbacks`` (retries after a policy refusal, which Ollama never gives) and
  ``fallback_credit_token``. Any other field is a 400 naming it, among them the beta ``compaction``
  (a summarising request) and ``thread`` (server-held conversation state).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.errors import InvalidRequestError
from proxy.translate.anthropic_answer import AnswerPlan
from proxy.translate.anthropic_conversation import ollama_messages
from proxy.translate.anthropic_tools import custom_tools, forced_choice, ollama_tool, tool_choice
from proxy.translate.chat_request import EFFORT_TO_THINK
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
from proxy.translate.tools import with_instruction

__all__ = ["MessagesRequest", "messages_request_to_ollama", "user_of", "answer_plan_of"]

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


def answer_plan_of(body: Mapping[str, object]) -> AnswerPlan:
    """The answer plan of a body, for a caller that kept only ``native`` (e.g. an endpoint table's
    ``options(body)``); the same as ``messages_request_to_ollama(body, ...).plan``."""
    kind, name, single = tool_choice(body)
    forced = forced_choice(kind, name, custom_tools(body, False)[0])
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
    messages = ollama_messages(body)
    custom, dropped = custom_tools(body, refuse_server_tools)
    kind, name, single = tool_choice(body)
    forced = forced_choice(kind, name, custom)
    native: dict[str, object] = {"model": model, "messages": messages, "stream": stream}
    effort = _output_config(body, native)
    if forced is not None:
        if "format" in native:
            raise InvalidRequestError("'output_config.format' cannot be combined with a forced tool_choice.",
                                      param="output_config.format")
        native["messages"] = with_instruction(messages, forced.instruction)
        native["format"] = forced.format
    elif kind == "auto" and custom:
        native["tools"] = [ollama_tool(t) for t in custom]
    think, show = _think(body, effort, thinking_capable)
    if think is not None:
        native["think"] = think
    extras = {key: body[key] for key in ("options", "keep_alive") if key in body}
    ollama_extras(extras, native, options, default_options=default_options, default_keep_alive=default_keep_alive)
    return MessagesRequest(native=native, stream=stream, sticky_key=sticky_key, dropped=tuple(dropped),
                           plan=AnswerPlan(forced=forced, single_tool_use=single, show_thinking=show))
