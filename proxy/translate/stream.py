"""Ollama NDJSON stream lines -> OpenAI SSE bytes, one line at a time: chat and legacy completion
chunks (the Responses API's typed events are ``proxy.translate.responses_stream``).

Pure and incremental: ``feed(obj)`` takes one decoded NDJSON object and returns the SSE bytes to
write for it now (possibly ``b""``), so content reaches the client as each line arrives. The constant
part of every chunk is rendered once per stream; only the delta is serialised per token.

An ``{"error": ...}`` line is not handled here: the relay checks for it *before* the ``done`` field
(Ollama's mid-stream error line has no ``done`` key) and ends the stream with an SSE error event.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.jsonio import dumps
from proxy.translate.chat_answer import finish_reason, forced_call_id, forced_call_to_openai, tool_calls_to_openai
from proxy.translate.chat_tokens import logprobs_to_openai, usage_from_ollama
from proxy.translate.tools import ForcedCall, ForcedTool

__all__ = ["SSE_DONE", "ChatStream", "CompletionStream", "sse_event"]

SSE_DONE = b"data: [DONE]\n\n"


def sse_event(payload: object) -> bytes:
    return b"data: " + dumps(payload) + b"\n\n"


class _Stream:
    """What both stream kinds share: the frame template, usage, and the final native object."""

    def __init__(self, *, obj: str, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.has_output = False  # True once a chunk with real output (or the end) was produced
        self.final: Mapping[str, object] | None = None  # the native done object: timings and counts
        head = {"id": completion_id, "object": obj, "created": created, "model": model,
                "system_fingerprint": "fp_ollama"}
        self._head = dumps(head)[:-1]  # without the closing brace
        self._usage_null = b',"usage":null' if include_usage else b""

    def _frame(self, choice: bytes) -> bytes:
        return b"data: " + self._head + b',"choices":[' + choice + b"]" + self._usage_null + b"}\n\n"

    def _usage_frame(self, native: Mapping[str, object]) -> bytes:
        return b"data: " + self._head + b',"choices":[],"usage":' + dumps(usage_from_ollama(native)) + b"}\n\n"

    @property
    def usage(self) -> dict[str, int]:
        return usage_from_ollama(self.final or {})


class ChatStream(_Stream):
    """Translates ``/api/chat`` stream objects into ``chat.completion.chunk`` events."""

    def __init__(self, *, completion_id: str, created: int, model: str, include_usage: bool = False,
                 parallel_tool_calls: bool = True, forced: ForcedTool | None = None) -> None:
        super().__init__(obj="chat.completion.chunk", completion_id=completion_id, created=created,
                         model=model, include_usage=include_usage)
        self.parallel_tool_calls = parallel_tool_calls
        # a forced tool call (``forced_tool_of(body)``): content is the constrained JSON, streamed as
        # the arguments of one tool call
        self._forced = forced.reader() if forced is not None else None
        self._forced_id = forced_call_id(completion_id)
        self._forced_started = False
        self._forced_sent = ""
        self._role_sent = False
        self._tool_calls = 0
        # the frame of a plain content token, around the JSON string: built once per stream
        self._content_head = b"data: " + self._head + b',"choices":[{"index":0,"delta":{"content":'
        self._content_tail = b'},"logprobs":null,"finish_reason":null}]' + self._usage_null + b"}\n\n"
        self.text_parts: list[str] = []  # kept only when the caller asks (debug prompt logging)
        self.keep_text = False

    def _delta(self, delta: dict[str, object], logprobs: object = None) -> bytes:
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", **delta}
        lp = logprobs_to_openai(logprobs)
        return self._frame(b'{"index":0,"delta":' + dumps(delta) + b',"logprobs":'
                           + (dumps(lp) if lp else b"null") + b',"finish_reason":null}')

    def _forced_delta(self, arguments: str) -> bytes:
        """The forced call's next arguments fragment; the first one carries its id and name."""
        reader = self._forced
        assert reader is not None
        self._forced_sent += arguments
        if not self._forced_started:
            self._forced_started = True
            self._tool_calls = 1
            call = forced_call_to_openai(ForcedCall(name=reader.name or "", arguments=arguments, complete=False),
                                         self._forced_id, 0)
            return self._delta({"tool_calls": [call]})
        return self._delta({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]})

    def _feed_forced(self, obj: Mapping[str, object]) -> bytes:
        reader = self._forced
        assert reader is not None
        out = b""
        message = obj.get("message")
        if isinstance(message, Mapping):
            thinking = message.get("thinking")
            if thinking:
                out += self._delta({"reasoning_content": thinking})
            content = message.get("content")
            if isinstance(content, str) and content:
                if self.keep_text:
                    self.text_parts.append(content)
                arguments = reader.feed(content)
                if arguments:
                    out += self._forced_delta(arguments)
        if out:
            self.has_output = True
        if obj.get("done"):
            call = reader.finish()
            rest = call.arguments[len(self._forced_sent):]
            if rest or not self._forced_started:
                reader.name = call.name
                out += self._forced_delta(rest)
            out += self._end(obj)
        return out

    def _end(self, obj: Mapping[str, object]) -> bytes:
        self.has_output = True
        self.final = obj
        out = b""
        if not self._role_sent:
            out += self._delta({"content": ""})
        reason = finish_reason(obj.get("done_reason"), self._tool_calls > 0)
        out += self._frame(b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"' + reason.encode() + b'"}')
        if self.include_usage:
            out += self._usage_frame(obj)
        return out + SSE_DONE

    def feed(self, obj: Mapping[str, object]) -> bytes:
        if self._forced is not None:
            return self._feed_forced(obj)
        message = obj.get("message")
        if (self._role_sent and len(obj) <= 4 and isinstance(message, dict) and len(message) == 2
                and not obj.get("done")):
            content = message.get("content")
            if content and isinstance(content, str):  # the common token line: {"role", "content"} only
                self.has_output = True
                if self.keep_text:
                    self.text_parts.append(content)
                return self._content_head + dumps(content) + self._content_tail
        out = b""
        if isinstance(message, Mapping):
            content = message.get("content")
            thinking = message.get("thinking")
            calls = message.get("tool_calls")
            logprobs = obj.get("logprobs")
            if thinking:
                out += self._delta({"reasoning_content": thinking}, logprobs)
                logprobs = None
            if isinstance(calls, list) and calls:
                if not self.parallel_tool_calls:
                    calls = calls[: max(0, 1 - self._tool_calls)]
                if calls:
                    converted = tool_calls_to_openai(calls, self._tool_calls)
                    self._tool_calls += len(converted)
                    delta: dict[str, object] = {"tool_calls": converted}
                    if content:
                        delta["content"] = content
                    out += self._delta(delta, logprobs)
                    logprobs = None
                    content = None
            if content or logprobs:
                if self.keep_text and content:
                    self.text_parts.append(str(content))
                out += self._delta({"content": content or ""}, logprobs)
        if out:
            self.has_output = True
        if obj.get("done"):
            out += self._end(obj)
        return out


class CompletionStream(_Stream):
    """Translates ``/api/generate`` stream objects into legacy ``text_completion`` events."""

    def __init__(self, *, completion_id: str, created: int, model: str, include_usage: bool = False,
                 echo_prompt: str | None = None) -> None:
        super().__init__(obj="text_completion", completion_id=completion_id, created=created,
                         model=model, include_usage=include_usage)
        self._pending_echo = echo_prompt
        self.text_parts: list[str] = []
        self.keep_text = False

    def _text(self, text: str, reason: str | None) -> bytes:
        return self._frame(b'{"text":' + dumps(text) + b',"index":0,"logprobs":null,"finish_reason":'
                           + (b'"' + reason.encode() + b'"' if reason else b"null") + b"}")

    def feed(self, obj: Mapping[str, object]) -> bytes:
        text = obj.get("response")
        out = b""
        if self._pending_echo:
            text = self._pending_echo + (text if isinstance(text, str) else "")
            self._pending_echo = None
        if isinstance(text, str) and text:
            if self.keep_text:
                self.text_parts.append(text)
            out += self._text(text, None)
            self.has_output = True
        if obj.get("done"):
            self.has_output = True
            self.final = obj
            out += self._text("", "length" if obj.get("done_reason") == "length" else "stop")
            if self.include_usage:
                out += self._usage_frame(obj)
            out += SSE_DONE
        return out
