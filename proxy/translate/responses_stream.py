"""Ollama NDJSON stream lines -> the Responses API's typed SSE events (``ResponsesStream``).

Pure and incremental like the chat translator (``proxy.translate.stream``): ``feed(obj)`` takes one
decoded NDJSON object and returns the events to write for it now, each with a strictly increasing
``sequence_number``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from proxy.errors import error_body
from proxy.jsonio import dumps
from proxy.translate.chat_tokens import logprobs_to_openai, usage_from_ollama
from proxy.translate.responses_answer import (
    function_call_item,
    message_item,
    native_calls,
    reasoning_item,
    response_object,
    response_usage,
)
from proxy.translate.responses_request import ResponsesRequest

__all__ = ["ResponsesStream"]


def _event(kind: str, fields: bytes, seq: int) -> bytes:
    """One Responses SSE event; ``fields`` is the JSON object's members after ``type``, without braces."""
    return (b"event: " + kind.encode() + b'\ndata: {"type":"' + kind.encode() + b'",' + fields
            + b',"sequence_number":' + str(seq).encode() + b"}\n\n")


class ResponsesStream:
    """Translates ``/api/chat`` stream objects into the Responses API's typed SSE events.

    ``feed(obj)`` returns the events for one NDJSON object: ``response.created`` and
    ``response.in_progress`` first, then per output item ``response.output_item.added``, its deltas
    (``response.output_text.delta``, ``response.reasoning_text.delta`` or
    ``response.reasoning_summary_text.delta``, ``response.function_call_arguments.delta``) as Ollama
    sends tokens, its ``.done`` events and ``response.output_item.done``; at the end
    ``response.completed`` (or ``response.incomplete`` when ``num_predict`` cut it short).
    ``sequence_number`` counts from 0. After the first event a failure ends the stream with
    ``fail(exc)``: an ``error`` event, then ``response.failed``.

    For the relay: ``has_output``, ``final`` (the native done object), ``usage`` (chat-shaped
    ``prompt_tokens``/``completion_tokens``), ``keep_text``/``text_parts``, like ``ChatStream``;
    ``response`` is the finished response object (for the store), None until the end.
    """

    def __init__(self, *, request: ResponsesRequest, response_id: str, created_at: int | float, model: str,
                 new_id: Callable[[str], str], now: Callable[[], float] | None = None) -> None:
        self.request = request
        self.has_output = False
        self.final: Mapping[str, object] | None = None
        self.response: dict[str, object] | None = None
        self.keep_text = False
        self.text_parts: list[str] = []
        self._args = {"request": request, "response_id": response_id, "created_at": created_at, "model": model}
        self._new_id = new_id
        self._now = now
        self._seq = 0
        self._started = False
        self._output: list[dict[str, object]] = []
        self._open: str | None = None  # "reasoning" | "message" | "call"
        self._item_id = ""
        self._parts: list[str] = []
        self._logprobs: list[object] = []
        self._text_head = b""
        self._delta_head = b""  # the frame of a text delta up to its "delta" value, once a message is open
        self._calls = 0
        self._forced = request.forced.reader() if request.forced is not None else None

    # framing

    def _emit(self, kind: str, **fields: object) -> bytes:
        seq = self._seq
        self._seq += 1
        return _event(kind, dumps(fields)[1:-1], seq)

    def _snapshot(self, status: str, **extra: object) -> dict[str, object]:
        fields = {**self._args, **extra}
        return response_object(status=status, output=list(self._output), **fields)  # type: ignore[arg-type]

    def _start(self) -> bytes:
        self._started = True
        snapshot = self._snapshot("in_progress")
        return self._emit("response.created", response=snapshot) + self._emit("response.in_progress",
                                                                                response=snapshot)

    # items

    def _add(self, kind: str, item: dict[str, object]) -> bytes:
        self._open = kind
        self._item_id = str(item["id"])
        self._parts = []
        self._logprobs = []
        self._output.append(item)
        return self._emit("response.output_item.added", output_index=len(self._output) - 1, item=item)

    def _open_reasoning(self) -> bytes:
        item_id = self._new_id("rs_")
        summary = self.request.summary_reasoning
        out = self._add("reasoning", {"id": item_id, "type": "reasoning", "summary": []} if summary
                        else {"id": item_id, "type": "reasoning", "summary": [], "content": []})
        index = len(self._output) - 1
        if summary:
            return out + self._emit("response.reasoning_summary_part.added", item_id=item_id, output_index=index,
                                    summary_index=0, part={"type": "summary_text", "text": ""})
        return out + self._emit("response.content_part.added", item_id=item_id, output_index=index,
                                content_index=0, part={"type": "reasoning_text", "text": ""})

    def _open_message(self) -> bytes:
        item_id = self._new_id("msg_")
        out = self._add("message", {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant",
                                    "content": []})
        index = len(self._output) - 1
        self._text_head = dumps({"type": "response.output_text.delta", "item_id": item_id, "output_index": index,
                                 "content_index": 0})[:-1]
        self._delta_head = b"event: response.output_text.delta\ndata: " + self._text_head + b',"delta":'
        return out + self._emit("response.content_part.added", item_id=item_id, output_index=index, content_index=0,
                                part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})

    def _open_call(self, name: str) -> bytes:
        item_id = self._new_id("fc_")  # fc_ before call_, as the non-streamed translation makes them
        return self._add("call", function_call_item(item_id, self._new_id("call_"), name, "", "in_progress",
                                                    self.request))

    def _close(self, status: str = "completed") -> bytes:
        """End the open item: its ``.done`` events and ``response.output_item.done``."""
        kind, item_id, index, text = self._open, self._item_id, len(self._output) - 1, "".join(self._parts)
        self._open = None
        if kind == "reasoning":
            item = reasoning_item(item_id, text, self.request)
            if self.request.summary_reasoning:
                out = (self._emit("response.reasoning_summary_text.done", item_id=item_id, output_index=index,
                                  summary_index=0, text=text)
                       + self._emit("response.reasoning_summary_part.done", item_id=item_id, output_index=index,
                                    summary_index=0, part={"type": "summary_text", "text": text}))
            else:
                out = (self._emit("response.reasoning_text.done", item_id=item_id, output_index=index,
                                  content_index=0, text=text)
                       + self._emit("response.content_part.done", item_id=item_id, output_index=index,
                                    content_index=0, part={"type": "reasoning_text", "text": text}))
        elif kind == "message":
            item = message_item(item_id, text, status, self._logprobs)
            out = (self._emit("response.output_text.done", item_id=item_id, output_index=index, content_index=0,
                              text=text, logprobs=self._logprobs)
                   + self._emit("response.content_part.done", item_id=item_id, output_index=index,
                                content_index=0, part=item["content"][0]))  # type: ignore[index]
        elif kind == "call":
            item = {**self._output[index], "arguments": text, "status": status}
            out = self._emit("response.function_call_arguments.done", item_id=item_id, output_index=index,
                             arguments=text)
        else:
            return b""
        self._output[index] = item
        return out + self._emit("response.output_item.done", output_index=index, item=item)

    # deltas

    def _thinking(self, text: str) -> bytes:
        out = b""
        if self._open != "reasoning":
            out = self._close() + self._open_reasoning()
        self._parts.append(text)
        index = len(self._output) - 1
        if self.request.summary_reasoning:
            return out + self._emit("response.reasoning_summary_text.delta", item_id=self._item_id,
                                    output_index=index, summary_index=0, delta=text)
        return out + self._emit("response.reasoning_text.delta", item_id=self._item_id, output_index=index,
                                content_index=0, delta=text)

    def _text(self, text: str, logprobs: object) -> bytes:
        out = b""
        if self._open != "message":
            out = self._close() + self._open_message()
        self._parts.append(text)
        if self.keep_text:
            self.text_parts.append(text)
        rows: list[object] = []
        if self.request.logprobs:
            converted = logprobs_to_openai(logprobs)
            rows = converted["content"] if converted else []  # type: ignore[assignment]
            self._logprobs.extend(rows)
        seq = self._seq
        self._seq += 1
        return out + (b"event: response.output_text.delta\ndata: " + self._text_head + b',"delta":' + dumps(text)
                      + b',"logprobs":' + (dumps(rows) if rows else b"[]") + b',"sequence_number":'
                      + str(seq).encode() + b"}\n\n")

    def _arguments(self, name: str, delta: str) -> bytes:
        out = b""
        if self._open != "call":
            out = self._close() + self._open_call(name)
        self._parts.append(delta)
        return out + self._emit("response.function_call_arguments.delta", item_id=self._item_id,
                                output_index=len(self._output) - 1, delta=delta)

    def _native_calls(self, calls: object) -> bytes:
        out = b""
        for call_id, name, arguments in native_calls(calls, self._new_id):
            if self._calls and not self.request.parallel_tool_calls:
                break  # the client asked for at most one call per turn
            self._calls += 1
            out += self._close()
            out += self._add("call", function_call_item(self._new_id("fc_"), call_id, name, "", "in_progress",
                                                        self.request))
            out += self._arguments(name, arguments) + self._close()
        return out

    def _forced_content(self, text: str, done: bool) -> bytes:
        reader = self._forced
        assert reader is not None
        if self.keep_text and text:
            self.text_parts.append(text)
        out = b""
        delta = reader.feed(text) if text else ""
        if delta:
            out += self._arguments(reader.name or "", delta)
        if done:
            call = reader.finish()
            sent = "".join(self._parts) if self._open == "call" else ""
            rest = call.arguments[len(sent):]
            if rest or self._open != "call":
                out += self._arguments(call.name, rest) if rest else self._close() + self._open_call(call.name)
            out += self._close("completed" if call.complete else "incomplete")
        return out

    def feed(self, obj: Mapping[str, object]) -> bytes:
        message = obj.get("message")
        if (self._open == "message" and len(obj) <= 4 and isinstance(message, dict) and len(message) == 2
                and self._forced is None and not self.request.logprobs and not obj.get("done")):
            content = message.get("content")
            if content and isinstance(content, str):  # the common token line: {"role", "content"} only
                self._parts.append(content)
                if self.keep_text:
                    self.text_parts.append(content)
                seq = self._seq
                self._seq = seq + 1
                return (self._delta_head + dumps(content) + b',"logprobs":[],"sequence_number":' + str(seq).encode()
                        + b"}\n\n")
        out = b"" if self._started else self._start()
        done = bool(obj.get("done"))
        if isinstance(message, Mapping):
            thinking = message.get("thinking")
            # thinking after a forced call has begun would split the call in two: it is left out
            if isinstance(thinking, str) and thinking and not (self._forced is not None and self._open == "call"):
                out += self._thinking(thinking)
            content = message.get("content")
            content = content if isinstance(content, str) else ""
            if self._forced is not None:
                out += self._forced_content(content, done)
            elif content:
                out += self._text(content, obj.get("logprobs"))
            calls = message.get("tool_calls")
            if calls and self._forced is None:
                out += self._native_calls(calls)
        elif done and self._forced is not None:
            out += self._forced_content("", True)
        if self._output:
            self.has_output = True
        if done:
            out += self._finish(obj)
        return out

    def _finish(self, obj: Mapping[str, object]) -> bytes:
        self.has_output = True
        self.final = obj
        status = "incomplete" if obj.get("done_reason") == "length" else "completed"
        out = b""
        if not any(item["type"] != "reasoning" for item in self._output):
            out += self._close() + self._open_message()  # no answer at all: an empty message, as when not streamed
        out += self._close(status)
        self.response = self._snapshot(status, usage=response_usage(obj),
                                       completed_at=self._now() if self._now else None)
        return out + self._emit("response.incomplete" if status == "incomplete" else "response.completed",
                                response=self.response)

    def fail(self, exc: BaseException) -> bytes:
        """The end of a stream that failed after its first event: ``error``, then ``response.failed``."""
        error = error_body(exc)["error"]
        assert isinstance(error, dict)
        out = b"" if self._started else self._start()
        if self._open is not None:
            out += self._close("incomplete")
        code = "rate_limit_exceeded" if error.get("code") == "rate_limit_exceeded" else "server_error"
        self.response = self._snapshot("failed", error={"code": code, "message": error["message"]})
        return (out + self._emit("error", code=error.get("code"), message=error["message"], param=error.get("param"))
                + self._emit("response.failed", response=self.response))

    @property
    def usage(self) -> dict[str, int]:
        return usage_from_ollama(self.final or {})
