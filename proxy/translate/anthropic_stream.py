"""Anthropic Messages streams: Ollama NDJSON objects -> SSE events, and the tally of a relayed Anthropic stream.

Pure; ids come in as arguments. ``proxy.translate.anthropic_request`` documents the whole API; the
answer's shape (content blocks, ``stop_reason``, usage) is ``proxy.translate.anthropic_answer``'s.

- ``MessagesStream(message_id=, model=, plan=, input_tokens=0)``: fed parsed NDJSON objects one
  at a time, ``feed(obj)`` returns the SSE bytes to send now. Events, each with its ``event:``
  line: ``message_start`` (usage.input_tokens = the ``input_tokens`` given, an estimate or 0:
  Ollama reports the real count only at the end) and ``ping`` with the first object; per block
  ``content_block_start`` / ``content_block_delta`` / ``content_block_stop`` with indexes 0, 1, ...;
  ``message_delta`` (stop_reason, usage with the real ``input_tokens`` and ``output_tokens``, which
  anthropic-python writes over the start's) and ``message_stop`` on the done object. Text and
  thinking are sent token by token. Thinking blocks end with an empty ``signature_delta``. Ollama
  sends whole tool calls, so each becomes one ``input_json_delta``; a *forced* call's arguments
  are streamed as they are generated. Like ``ChatStream`` it exposes ``has_output`` (real output
  or the end was produced: the relay may commit), ``final`` (the done object), ``usage`` (with the
  relay's ``prompt_tokens`` / ``completion_tokens`` names), ``keep_text`` and ``text_parts``;
  ``fail(exc)`` is ``proxy.translate.anthropic_errors.anthropic_error_event``, which the relay calls.
- ``AnthropicStreamTally``: counts an Anthropic backend's stream usage as its bytes pass unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.jsonio import JSONDecodeError, dumps, loads
from proxy.translate.anthropic_answer import AnswerPlan, stop_reason, tool_use_id
# under private names: helpers of the methods below, not this module's surface
from proxy.translate.anthropic_answer import anthropic_event as _event
from proxy.translate.anthropic_answer import call_arguments as _arguments
from proxy.translate.anthropic_answer import call_functions as _functions
from proxy.translate.anthropic_answer import count_of as _count
from proxy.translate.anthropic_errors import anthropic_error_event
from proxy.translate.chat_tokens import usage_from_ollama

__all__ = ["AnthropicStreamTally", "MessagesStream"]

_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_TOKEN_KEYS = {"role", "content"}


class MessagesStream:
    """Translates ``/api/chat`` stream objects into Anthropic Messages SSE events."""

    def __init__(self, *, message_id: str, model: str, plan: AnswerPlan = AnswerPlan(), input_tokens: int = 0) -> None:
        self.has_output = False  # True once a block (or the end) was produced: the relay may commit
        self.final: Mapping[str, object] | None = None  # the native done object: timings and counts
        self.keep_text = False
        self.text_parts: list[str] = []  # kept only when the caller asks (debug prompt logging)
        self._message_id = message_id
        self._plan = plan
        self._start_event = _event("message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }}) + _PING
        self._started = False
        self._index = -1
        self._open: str | None = None  # type of the open block: text, thinking or tool_use
        self._uses = 0
        self._reader = plan.forced.reader() if plan.forced is not None else None
        self._sent = 0  # characters of forced-call arguments sent
        self._text_head = b""  # the frame of a text delta in the open text block, around the JSON string

    @property
    def usage(self) -> dict[str, int]:
        return usage_from_ollama(self.final or {})

    def _start(self, block: Mapping[str, object]) -> bytes:
        out = self._stop()
        self._index += 1
        self._open = str(block["type"])
        return out + _event("content_block_start", {"type": "content_block_start", "index": self._index,
                                                    "content_block": block})

    def _delta(self, delta: Mapping[str, object]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def _stop(self) -> bytes:
        if self._open is None:
            return b""
        # Anthropic closes a thinking block with its signature; there is none to give, but the event is expected
        out = self._delta({"type": "signature_delta", "signature": ""}) if self._open == "thinking" else b""
        self._open = None
        return out + _event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _thinking(self, text: str) -> bytes:
        if self._open == "tool_use" and self._reader is not None:
            return b""  # inside a forced call's arguments: a new block would cut the call in two
        out = b"" if self._open == "thinking" else self._start({"type": "thinking", "thinking": "", "signature": ""})
        if self._plan.show_thinking:
            out += self._delta({"type": "thinking_delta", "thinking": text})
        return out

    def _text(self, text: str) -> bytes:
        out = b""
        if self._open != "text":
            out = self._start({"type": "text", "text": ""})
            self._text_head = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                               + str(self._index).encode() + b',"delta":{"type":"text_delta","text":')
        return out + self._text_head + dumps(text) + b"}}\n\n"

    def _tool_use(self, name: str, arguments: str) -> bytes:
        out = self._start({"type": "tool_use", "id": tool_use_id(self._message_id, self._uses), "name": name,
                           "input": {}})
        self._uses += 1
        return out + self._delta({"type": "input_json_delta", "partial_json": arguments})

    def _tool_calls(self, calls: Sequence[Mapping[str, object]]) -> bytes:
        out = b""
        for function in calls:
            if self._plan.single_tool_use and self._uses:
                break
            out += self._tool_use(str(function.get("name", "")), dumps(_arguments(function)).decode())
            out += self._stop()
        return out

    def _forced(self, text: str) -> bytes:
        assert self._reader is not None
        delta = self._reader.feed(text)
        if not delta:
            return b""
        self._sent += len(delta)
        if self._open == "tool_use":
            return self._delta({"type": "input_json_delta", "partial_json": delta})
        return self._tool_use(self._reader.name or "", delta)

    def _forced_end(self) -> bytes:
        assert self._reader is not None
        call = self._reader.finish()
        rest = call.arguments[self._sent:]  # what was sent is always a prefix of the arguments
        if not rest:
            return b""
        if self._open == "tool_use":
            return self._delta({"type": "input_json_delta", "partial_json": rest})
        return self._tool_use(call.name, rest)

    def fail(self, exc: BaseException) -> bytes:
        """The events that end the stream after a failure once it started: Anthropic's ``error`` event."""
        return anthropic_error_event(exc)

    def feed(self, obj: Mapping[str, object]) -> bytes:
        """Take one native stream object; return the SSE bytes to send for it now (maybe ``b""``)."""
        message = obj.get("message")
        if self._open == "text" and isinstance(message, dict) and message.keys() == _TOKEN_KEYS and not obj.get("done"):
            content = message["content"]
            if content and isinstance(content, str):  # the common token line: {"role", "content"} only
                if self.keep_text:
                    self.text_parts.append(content)
                return self._text_head + dumps(content) + b"}}\n\n"
        out = b""
        if not self._started:
            self._started = True
            out = self._start_event
        if isinstance(message, Mapping):
            body = b""
            thinking = message.get("thinking")
            if isinstance(thinking, str) and thinking:
                body += self._thinking(thinking)
            content = message.get("content")
            if isinstance(content, str) and content:
                if self.keep_text:
                    self.text_parts.append(content)
                body += self._forced(content) if self._reader is not None else self._text(content)
            calls = _functions(message.get("tool_calls"))
            if calls and self._reader is None:
                body += self._tool_calls(calls)
            if body:
                self.has_output = True
                out += body
        if obj.get("done"):
            self.has_output = True
            self.final = obj
            if self._reader is not None:
                out += self._forced_end()
            out += self._stop()
            out += _event("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(obj.get("done_reason"), self._uses > 0), "stop_sequence": None},
                "usage": {"input_tokens": _count(obj, "prompt_eval_count"), "output_tokens": _count(obj, "eval_count")},
            })
            out += _event("message_stop", {"type": "message_stop"})
        return out


class AnthropicStreamTally:
    """Counts the usage of an Anthropic backend's SSE stream while its bytes pass through unchanged.

    ``input_tokens`` from ``message_start`` (and ``message_delta`` when it has them), ``output_tokens``
    from ``message_delta``; the relay reads ``prompt_tokens`` / ``completion_tokens`` at the end.
    Only lines carrying ``"usage"`` are parsed; a line longer than ``_LINE_LIMIT`` is not counted.
    """

    _LINE_LIMIT = 1 << 20

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._rest = b""

    def feed(self, chunk: bytes) -> bytes:
        """``chunk`` itself, after counting the usage in its complete lines."""
        *complete, rest = (self._rest + chunk).split(b"\n") if self._rest else chunk.split(b"\n")
        self._rest = rest if len(rest) <= self._LINE_LIMIT else b""
        for line in complete:
            self._line(line)
        return chunk

    def fail(self, exc: BaseException) -> bytes:
        """The event that ends the relayed stream after a failure of the gateway's own (Anthropic's shape)."""
        return anthropic_error_event(exc)

    def close(self) -> bytes:
        """Count an unterminated last line; nothing more is sent."""
        rest, self._rest = self._rest, b""
        if rest:
            self._line(rest)
        return b""

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:") or b'"usage"' not in line:
            return
        try:
            obj = loads(line[5:])
        except JSONDecodeError:
            return
        if not isinstance(obj, Mapping):
            return
        message = obj.get("message")
        usage = message.get("usage") if obj.get("type") == "message_start" and isinstance(message, Mapping) \
            else obj.get("usage")
        if not isinstance(usage, Mapping):
            return
        for key, attr in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens")):
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, attr, value)
